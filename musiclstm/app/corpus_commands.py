"""`musiclstm corpus list | export | fetch`: the built-in collections and the public corpora (registered on `cli.cli`).

May import: app.cli, data (lazily, inside each command). Not: models, training, generation, evaluation;
imported by no room.
"""

from __future__ import annotations

from pathlib import Path

import click

from .cli import cli, wants_progress


@cli.group()
def corpus() -> None:
    """Corpora: music21's public-domain collections written out as MIDI; public MIDI corpora downloaded."""


@corpus.command("list")
def corpus_list() -> None:
    """List the built-in collections."""
    from ..data.collections import list_collections

    for c in list_collections():
        click.echo(f"{c.name:12} {c.description}")


@corpus.command("export")
@click.argument("name")
@click.argument("out_dir", type=click.Path(path_type=Path))
@click.option("--jobs", type=click.IntRange(1), help="Worker processes [all cores].")
@click.option("--limit", type=click.IntRange(1), help="Export at most this many pieces.")
@click.option("--force", is_flag=True, help="Overwrite files already exported.")
@click.option("--quiet", "-q", is_flag=True)
def corpus_export(name, out_dir, jobs, limit, force, quiet) -> None:
    """Write collection NAME as MIDI files into OUT_DIR (e.g. `musiclstm corpus export bach corpora/bach`)."""
    from ..data.collections import export

    r = export(name, out_dir, jobs=jobs, limit=limit, force=force, progress=wants_progress(quiet))
    click.echo(f"{len(r.written)} written, {r.existing} already there, {len(r.skipped)} skipped"
               f"{_reasons(r.skipped)} -> {out_dir}")


def _reasons(skipped, most: int = 4) -> str:
    """' (12 ×: reason; 3 ×: other; ...)': the skip reasons counted, the commonest first, in one line."""
    import collections
    import re

    if not skipped:
        return ""
    # a reason names its piece's details (bar numbers, offsets): counted by its words
    counts = collections.Counter(re.sub(r"\b\d+(\.\d+)?\b", "N", why).strip()[:80] for _, why in skipped)
    parts = [f"{n} × {why}" for why, n in counts.most_common(most)]
    if len(counts) > most:
        parts.append(f"{sum(n for _, n in counts.most_common()[most:])} × {len(counts) - most} other reasons")
    return f" ({'; '.join(parts)})"


@corpus.command("fetch")
@click.argument("name")
@click.argument("out_dir", type=click.Path(path_type=Path))
@click.option("--force", is_flag=True, help="Replace OUT_DIR if it exists (once the new corpus passed its checks).")
@click.option("--mirror", help="Base URL to download from instead of the public release: MIRROR/NAME/FILE "
              "[$MUSICLSTM_FETCH_MIRROR].")
@click.option("--quiet", "-q", is_flag=True)
def corpus_fetch(name, out_dir, force, mirror, quiet) -> None:
    """Download public corpus NAME, unpack it safely into OUT_DIR and check its layout.

    \b
    NAME: pop909, nottingham, jsb, lmd-clean, maestro
    musiclstm corpus fetch pop909 corpora/pop909     # then: musiclstm train corpora/pop909/POP909 ...
    musiclstm corpus fetch jsb corpora/jsb           # then: musiclstm benchmark jsb corpora/jsb
    """
    from ..data.fetch import fetch

    r = fetch(name, out_dir, force=force, mirror=mirror, progress=wants_progress(quiet))
    checked = f"; sha256 checked: {', '.join(r.verified)}" if r.verified else "; no published sha256 to check"
    click.echo(f"{name}: {r.summary}{checked} -> {out_dir} (train on {r.train_on})")

