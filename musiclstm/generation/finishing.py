"""What a drawn piece is written as, beyond its notes: the programs and pitch range the model learned (the
grammar keeps to them), chorale voices voiced on the instruments asked, the written key signature, and the
closing bar steered to the tonic.

May import: theory, errors, io, encodings, models, data.collections. Not: training, evaluation, app.
"""

from __future__ import annotations

import numpy as np
import torch

from ..encodings.grammar import Controls
from ..errors import ConfigError
from ..io.score import Score
from ..models.checkpoint import Model

SAFE_PITCH_RANGE = (21, 108)


def _voicing(programs, learned_programs) -> dict[int, int] | None:
    """A model that learned four-part chorales with a program per voice (soprano to bass: violin, viola,
    cello, contrabass, as `corpus export bach` writes them), asked for some of those instruments: the model
    writes its four voices, and voice k is then played by the instruments asked, the top voices by the first
    (`--instruments violin`: four violin tracks, never four voices on one). {voice program: program}; None
    for anything else."""
    voices = tuple(sorted(_voice_programs().values()))
    if not programs or learned_programs is None or not set(voices) <= set(learned_programs):
        return None
    if not set(programs) <= set(voices) or tuple(programs) == voices:
        return None
    return {v: programs[k * len(programs) // len(voices)] for k, v in enumerate(voices)}


def _voice_programs() -> dict[str, int]:
    from ..data.collections import VOICE_PROGRAMS

    return VOICE_PROGRAMS


def _gm(program: int) -> str:
    import pretty_midi

    return pretty_midi.program_to_instrument_name(program)


def _fifths(tonic: int, minor: bool) -> int:
    """A key's place on the circle of fifths (its signature; relative keys share it): 0..11."""
    return ((int(tonic) - 9 * int(minor)) * 7) % 12


def written_key(score: Score, key: str | None, primer_notes: int = 0) -> np.ndarray:
    """The key signatures to write: the key asked, else the KEY tokens' (as decoded) where the notes agree
    with them, else the key of the notes (Krumhansl-Schmuckler over the new music): a model that names one
    key and plays another (the bundled bach) is written in the key it plays."""
    from ..io.score import key_fit
    from ..theory import parse_key

    if key:
        tonic, minor = parse_key(key)
        return np.array([[0.0, tonic, float(minor)]])
    new = np.arange(len(score)) >= primer_notes
    pitched = new & ~np.array([score.tracks[t].is_drum for t in score.track], bool) if len(score) else new
    if not pitched.any():
        return score.key_signatures
    w = np.bincount(score.pitch[pitched] % 12, weights=(score.end - score.start)[pitched], minlength=12)
    tonic, minor, r = key_fit(w)
    if np.isnan(r):
        return score.key_signatures
    ks = score.key_signatures
    if len(ks) and _fifths(ks[0, 1], ks[0, 2] > 0) == _fifths(tonic, minor):
        return ks  # the token's key, as the notes have it (or its relative)
    return np.array([[0.0, float(tonic), float(minor)]])


def learned(model: Model) -> tuple[tuple[int, ...] | None, tuple[int, int] | None]:
    """The programs (128 = drums; remi only) and pitch range a model saw in training, as its checkpoint
    records them; the pitch range defaults to SAFE_PITCH_RANGE where the programs are recorded and it is not."""
    data = model.meta.get("data") or {}
    programs = data.get("programs") if model.tokenizer.encoding == "remi" else None
    pitches = data.get("pitch_range") or (SAFE_PITCH_RANGE if programs is not None else None)
    return (tuple(programs) if programs is not None else None), (tuple(pitches) if pitches else None)


def _within(asked, learned_range):
    """The pitch range asked, kept inside the one the model learned (an error when they do not meet)."""
    if learned_range is None:
        return tuple(asked) if asked else None
    if not asked:
        return tuple(learned_range)
    lo, hi = max(asked[0], learned_range[0]), min(asked[1], learned_range[1])
    if lo > hi:
        raise ConfigError(f"pitch range {asked[0]}-{asked[1]} is outside the pitches this model learned "
                          f"({learned_range[0]}-{learned_range[1]})")
    return lo, hi


def _cadence(tok, controls: Controls, grammar, ids: torch.Tensor, allowed: torch.Tensor, near: torch.Tensor,
             triads: dict[int, torch.Tensor]) -> None:
    """The last bar closes on the tonic: its pitched notes are drawn from the tonic triad of the piece's key
    (the key asked, else the key of the notes so far, Krumhansl-Schmuckler on their pitch classes), and the
    bass of each of its onsets is the tonic (remi writes an onset's notes by program, then upward: its first
    note is its lowest; a chorale's bass voice is its own program), so the piece ends on a tonic chord in
    root position, as real pieces do (evaluate's 'ends on tonic')."""
    if "PITCH" not in tok.vocab.offset or "POSITION" not in tok.vocab.offset or grammar.state is None:
        return
    lo, pos = tok.vocab.offset["PITCH"], grammar._rng["POSITION"]
    bass = max(_voice_programs().values())
    rows = near.nonzero().flatten().tolist() if near.numel() > 1 else (list(range(len(ids))) if bool(near) else [])
    if "REPEAT" in tok.vocab.offset and rows:  # remi 3: the closing bar is written out, not a copy of another
        allowed[rows, grammar.r("REPEAT")] = False
    for b in rows:
        if b not in triads:
            if controls.key:
                from ..theory import parse_key

                tonic, minor = parse_key(controls.key)
            else:
                from ..io.score import key_fit

                row = ids[b].cpu()
                p = row[(row >= lo) & (row < lo + 128)] - lo
                if len(p) == 0:
                    continue
                tonic, minor, r = key_fit(np.bincount(p.numpy() % 12, minlength=12).astype(float))
                if np.isnan(r):
                    continue
            pcs = {tonic % 12, (tonic + (3 if minor else 4)) % 12, (tonic + 7) % 12}
            triads[b] = torch.stack([torch.tensor([q % 12 in pcs for q in range(128)]),
                                     torch.tensor([q % 12 == tonic % 12 for q in range(128)])])
        row = ids[b].cpu()
        where_pos = ((row >= pos[0]) & (row < pos[1])).nonzero()
        where_pitch = ((row >= lo) & (row < lo + 128)).nonzero()
        first = len(where_pos) and (not len(where_pitch) or where_pitch[-1] < where_pos[-1])
        program = int(grammar.state["program"][b])
        root = (first and program not in _voice_programs().values()) or program == bass
        allowed[b, lo:lo + 128] &= triads[b][int(bool(root))].to(allowed.device)
