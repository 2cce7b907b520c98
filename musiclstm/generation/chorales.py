"""Chorales composed in two passes: a left-to-right model's top voice as the soprano, the bundled harmonizer's
alto, tenor and bass under it by its voice-leading rules (`compose` calls `harmonized_chorale` for a chorale model).
A bar the model repeated note for note keeps the harmony of its first appearance.
May import: errors, io, models, generation.finishing, generation.harmonize. Not: data, training, evaluation, app.
"""

from __future__ import annotations

import numpy as np

from ..errors import MusiclstmError
from ..io.score import Score, Track, first_copies, tracks_by_height
from ..models.checkpoint import Model
from .finishing import _gm, _voice_programs, learned, written_key


def is_chorale_model(model: Model) -> bool:
    """Whether a model learned four-part chorales, one program per voice (`corpus export bach`)."""
    programs = learned(model)[0]
    return programs is not None and set(_voice_programs().values()) <= set(programs)


def harmonized_chorale(score: Score, *, seed: int, voiced: dict[int, int] | None, key: str | None = None,
                       primer_notes: int = 0) -> Score:
    """A composed piece's top voice as the soprano of a chorale whose alto, tenor and bass the bundled
    harmonizer writes by its rules: the line on the 16th grid, one note at a time, moved by octaves into the
    soprano's range; in the piece's written key; voices on the chorale programs (or the instruments asked).
    A primer's notes (the first `primer_notes`) are kept as they are, its tracks as voices from the top; the
    new music is harmonized from the bar line where it begins. A bar the model repeated note for note (all
    voices) keeps the harmony of its first appearance (`harmonize_score`'s ties), so its form stays."""
    from ..io.score import bar_lines
    from .harmonize import harmonize_score, load

    h = load(None)
    new = np.arange(len(score)) >= primer_notes
    if not new.any():
        raise MusiclstmError("the composed piece has no new notes to harmonize")
    first = float(score.start[new].min())
    lines = bar_lines(score)
    origin = float(lines[lines <= first + 1e-9].max()) if primer_notes else 0.0
    part = score.select(new)
    top = part.select(part.track == tracks_by_height(part)[0])
    steps = 4  # the harmonizer's 16th grid
    start, end = np.round((top.start - origin) * steps) / steps, np.round((top.end - origin) * steps) / steps
    top.start, top.end = start, np.maximum(end, start + 1 / steps)
    top.time_signatures = top.time_signatures.copy()
    top.key_signatures = harmony_key = written_key(score, key, primer_notes)  # the key the model played (or asked)
    top.time_signatures[:, 0] = np.maximum(top.time_signatures[:, 0] - origin, 0)
    lo, hi = h.ranges[0]
    shift = 12 * round((lo + hi - top.pitch.min() - top.pitch.max()) / 24)  # centre the line in the range
    top.pitch = top.pitch + shift
    top.pitch = np.where(top.pitch < lo, top.pitch + 12 * np.ceil((lo - top.pitch) / 12),
                         np.where(top.pitch > hi, top.pitch - 12 * np.ceil((top.pitch - hi) / 12), top.pitch))
    out = harmonize_score(top, model=h, seed=seed, top_voice=True, ties=_repeated_spans(part, lines, origin))
    out = out.select(out.start >= first - origin - 1e-9)  # nothing under the primer
    out.start, out.end = out.start + origin, out.end + origin
    if primer_notes:  # the primer's own notes, each track a voice from the top
        old = score.select(~new)
        rank = {int(t): min(k, 3) for k, t in enumerate(tracks_by_height(old))}
        out = Score(np.r_[old.start, out.start], np.r_[old.end, out.end], np.r_[old.pitch, out.pitch],
                    np.r_[old.velocity, out.velocity], np.r_[[rank[int(t)] for t in old.track], out.track],
                    tracks=out.tracks, tempos=score.tempos, time_signatures=score.time_signatures)
    else:
        out.tempos, out.time_signatures = score.tempos, score.time_signatures
    names = list(_voice_programs())
    programs = [_voice_programs()[v] for v in names]
    if voiced:
        programs = [voiced[p] for p in programs]
    out.tracks = [Track(p, False, f"{v.title()} ({_gm(p)})") for v, p in zip(names, programs, strict=True)]
    out.key_signatures = harmony_key  # the key the harmonizer closed in: its last chord is that key's tonic triad
    return out


def _repeated_spans(part: Score, lines: np.ndarray, origin: float) -> list[tuple[float, float, float]]:
    """(start, end, first appearance) in quarters from `origin` of each bar of `part` that repeats an earlier
    bar note for note; the closing bar is left out (it closes on the tonic)."""
    first = first_copies(part, lines)
    last = int(np.searchsorted(lines, float(part.start.max()) + 1e-9, side="right")) - 1
    return [(lines[i] - origin, lines[i + 1] - origin, lines[f] - origin)  # i < last: bar i + 1 exists
            for i, f in enumerate(first) if 0 <= f < i < last and lines[f] >= origin]
