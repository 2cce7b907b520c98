"""Harmonize a melody, rewrite chosen bars: a bidirectional LSTM over four-part chorales.

DeepBach (Hadjeres, Pachet & Nielsen 2017) predicts each note of a chorale from an LSTM that reads
the past, one that reads the future and a small network that reads the other voices at that step,
and samples by pseudo-Gibbs: notes are redrawn a few at a time, each given everything else.
musiclstm does the same with one network for all four voices:

* A chorale is a 16th-note grid of four cells per step (Soprano, Alto, Tenor, Bass), each a `grid`
  token: PITCH p (a note starts), HOLD (the voice's note goes on) or REST, or MASK (unknown).
* `Harmonizer` (here): the four cells' embeddings and the position in the beat (DeepBach's
  metadata) go into a bidirectional LSTM, whose forward half at step t has read steps <= t and
  backward half steps >= t; a "center" layer reads step t's own cells; four heads predict the cells.
* Training (`musiclstm.training.harmonizer`), as in Coconet (Huang et al. 2017): random cells are
  replaced by MASK and the loss is the NLL of the masked cells.
* Sampling (`musiclstm.generation.gibbs`): annealed pseudo-Gibbs within the voice ranges and the key, with
  voice-leading rules.

`harmonize(melody)` and `infill(piece, bars="5-8")` (here) return a `pretty_midi.PrettyMIDI`.
May import: errors, theory, io, encodings, models, generation.gibbs. Not: data, training, evaluation, app.
"""

from __future__ import annotations

import math
import re
import time
from dataclasses import dataclass

import numpy as np
import torch

from ..errors import ConfigError
from ..io.score import Score, Track, key_fit, tracks_by_height
from ..models.harmonizer import KIND, STEPS, VOICES, Cells, Harmonizer, fermata_channel
from ..theory import key_name, parse_key, scale
from .gibbs import allowed_cells, cadence_cells, gibbs

__all__ = ["Loaded", "harmonize", "harmonize_score", "infill", "load", "melody_key", "parse_bars", "parse_voices"]

PROGRAM = 52  # Choir Aahs

# ---- the network -----------------------------------------------------------------------------------




# ---- grids of cells --------------------------------------------------------------------------------


# ---- harmonize and infill --------------------------------------------------------------------------
@dataclass
class Loaded:
    """A harmonizer checkpoint ready to sample: the network, its cells, voice ranges and the `Model`."""

    net: Harmonizer
    cells: Cells
    ranges: list
    meta: dict
    model: object = None


MAX_QUARTERS = 1600  # the longest melody harmonize and the longest piece infill take (400 bars of 4/4)

def load(model=None) -> Loaded:
    """The bundled harmonizer (None), or a harmonizer checkpoint file / run folder; a `Loaded` passes through.

    Its `ranges` are where each voice may sing: the textbook SATB ranges (`music.SATB_RANGES`) within
    the ranges of the training chorales (those alone where the two do not meet)."""
    from ..models import checkpoint
    from ..theory import SATB_RANGES

    if isinstance(model, Loaded):
        return model
    m = checkpoint.load(model or "harmonizer", kind=KIND)
    ranges = [(max(lo, a), min(hi, b)) if max(lo, a) <= min(hi, b) else (lo, hi)
              for (lo, hi), (a, b) in zip(m.meta["ranges"], SATB_RANGES, strict=True)]
    return Loaded(m.net, Cells(m.tokenizer), ranges, m.meta, m)


def _melody(score: Score, top_voice: bool) -> tuple[Score, str]:
    """The melody line of `score`: its only track, or the highest of several (said in the note)."""
    s = score.select(~score.is_drum)
    if len(s) == 0:
        raise ConfigError(f"{score.source} has no notes")
    used = tracks_by_height(s).tolist()
    note = ""
    if len(used) > 1:
        s = s.select(s.track == used[0])
        name = score.tracks[used[0]].name or f"track {used[0] + 1}"
        note = f"melody: {name!r}, the highest of {len(used)} tracks"
    s = s.select(np.lexsort((-s.pitch, s.start)))
    on, off = np.round(s.start * STEPS).astype(int), np.round(s.end * STEPS).astype(int)
    off = np.maximum(off, on + 1)
    starts_together = np.r_[False, on[1:] == on[:-1]]
    overlaps = np.r_[False, on[1:] < np.maximum.accumulate(off)[:-1]]
    if (starts_together | overlaps).any():
        if not top_voice:
            chord_at = float(s.start[np.flatnonzero(starts_together | overlaps)[0]])
            raise ConfigError(f"{score.source} is not one melody line (notes overlap at quarter {chord_at:g}); "
                              "--top-voice would harmonize its top voice (the highest note at each moment)")
        keep, last_off = [], -1
        for i in range(len(s)):
            if on[i] >= last_off or not keep:
                keep.append(i)
                last_off = off[i]
            elif on[i] == on[keep[-1]] and s.pitch[i] > s.pitch[keep[-1]]:
                keep[-1] = i
        s = s.select(np.array(keep))
        note = (note + "; " if note else "") + "its top voice"
    if not np.allclose(s.start * STEPS, np.round(s.start * STEPS), atol=0.05):
        raise ConfigError(f"{score.source}: notes start off the 16th-note grid (quantize the melody first)")
    return s, note


MAX_TRANSPOSE = 48  # semitones --transpose takes (four octaves: any melody that fits the soprano range)
FAR_KEY = 0.25  # a --key that leaves more of the melody's notes (by duration) outside its scale gets a warning


def _outside(line: Score, pcs: set[int]) -> float:
    """The share of the melody's duration on pitch classes outside `pcs`."""
    d = line.end - line.start
    out = np.array([int(p) % 12 not in pcs for p in line.pitch], bool)
    return float(d[out].sum() / max(d.sum(), 1e-9))


def melody_key(score: Score, line: Score) -> tuple[int, bool]:
    """The key a melody is written in: the file's first key signature, else Krumhansl-Schmuckler on the line."""
    if len(score.key_signatures):
        return int(score.key_signatures[0, 1]) % 12, bool(score.key_signatures[0, 2])
    return key_fit(np.bincount(line.pitch % 12, weights=line.end - line.start, minlength=12))[:2]


def harmonize(melody, *, model=None, seed: int = 0, temperature: float = 0.8, iterations: int = 64,
              key: str | None = None, transpose: int = 0, top_voice: bool = False, rules: bool = True,
              cadences=None, info: dict | None = None):
    """`harmonize_score`, written as a `pretty_midi.PrettyMIDI`."""
    from ..io.midi import to_pretty_midi

    return to_pretty_midi(harmonize_score(melody, model=model, seed=seed, temperature=temperature,
                                          iterations=iterations, key=key, transpose=transpose, top_voice=top_voice,
                                          rules=rules, cadences=cadences, info=info))


def harmonize_score(melody, *, model=None, seed: int = 0, temperature: float = 0.8, iterations: int = 64,
                    key: str | None = None, transpose: int = 0, top_voice: bool = False, rules: bool = True,
                    cadences=None, ties=None, info: dict | None = None) -> Score:
    """Harmonize `melody` (a path to MIDI/MusicXML/ABC, MIDI bytes, a PrettyMIDI or a `Score`) in four parts.

    The soprano is the melody exactly (transposed by `transpose` semitones); alto, tenor and bass are
    sampled by `gibbs`, each voice in its range (`load`) and in `key` ('G major'; default: the file's
    key signature, else Krumhansl-Schmuckler on the melody) or the pitch classes the melody uses;
    with `rules`, no parallel fifths or octaves and no crossed voices where the model has another choice, and
    cadences: the last chord's bass on the tonic, and at the last melody note of each bar in `cadences` (bar
    numbers from 1, where phrases close: "4,8,12" or a list; by default a MusicXML melody's fermatas) the bass on
    the tonic or the dominant.
    `ties`: (start, end, source) quarters of the melody: the span start..end repeats the one from source, and
    its lower voices are tied to those there (the same harmony; `compose` passes the bars its model repeated).
    `info`, if a dict, receives what was done (key, melody track, seconds). Returns the four-part `Score`.
    """
    from ..io.midi import fermatas, read

    t0 = time.time()
    score = melody if isinstance(melody, Score) else read(melody)
    line, note = _melody(score, top_voice)
    if not -MAX_TRANSPOSE <= int(transpose) <= MAX_TRANSPOSE:
        raise ConfigError(f"transpose must be between -{MAX_TRANSPOSE} and {MAX_TRANSPOSE} semitones")
    line.pitch = line.pitch + int(transpose)
    h = load(model)
    _check_soprano_range(line, h.ranges[0], transpose)
    T = int(np.round(line.end.max() * STEPS))
    if T > MAX_QUARTERS * STEPS:
        raise ConfigError(f"the melody lasts {T / STEPS:g} quarters; harmonize takes at most {MAX_QUARTERS}")
    own = melody_key(score, line)
    if len(score.key_signatures):  # the file's key signature moves with the melody
        own = ((own[0] + int(transpose)) % 12, own[1])
    tonic, minor = parse_key(key) if key else own
    outside = _outside(line, scale(tonic, minor))
    warnings = []
    if key and outside > FAR_KEY:
        warnings.append(f"{outside:.0%} of the melody's notes are outside {key_name(tonic, minor)} (the melody "
                        f"reads as {key_name(*own)}); the harmony keeps to both")
    pcs = scale(tonic, minor) | {int(p) % 12 for p in line.pitch}
    grid = _soprano_grid(line, T, h.cells)
    free = np.zeros((T, 4), bool)
    free[:, 1:] = True
    gen = torch.Generator().manual_seed(int(seed))
    allowed = allowed_cells(h.cells, h.ranges, pcs)
    marks = fermatas(melody) if cadences is None else []  # a MusicXML melody's fermatas close its phrases
    ends = _phrase_ends(score, line, parse_cadences(cadences), marks)
    if rules:
        allowed = cadence_cells(allowed, h.cells, T, _closes(line, ends, tonic, minor))
    # the fermata channel: under the phrase ends and the last note, unknown when nothing marks the phrase ends
    marked = fermata_channel(grid, h.cells, [a / STEPS for a, _ in ends] + [float(line.start[-1])]) if ends else None
    out = gibbs(h.net, h.cells, grid, free, allowed, iterations=iterations, temperature=temperature,
                generator=gen, rules=rules, ties=_tie_steps(ties, T), fermata=marked)
    result = _assemble(line, out, h.cells, score)
    if info is not None:
        info.update(key=key_name(tonic, minor), key_given=bool(key), melody=note, seconds=time.time() - t0,
                    cadences=parse_cadences(cadences), fermatas=marks,
                    steps=T, notes=int(len(result)), warnings=warnings)
    return result


def _tie_steps(ties, T: int) -> np.ndarray | None:
    """(start, end, source) spans in quarters -> per grid step, the earlier step it is tied to (-1: none)."""
    if not ties:
        return None
    out = np.full(T, -1, np.int64)
    for start, end, source in ties:
        a, b, s = (int(round(q * STEPS)) for q in (start, end, source))
        n = max(0, min(b, T) - a)
        if 0 <= s < a and n > 0:
            out[a:a + n] = np.arange(s, s + n)
    for t in np.flatnonzero(out >= 0):  # a copy of a copy: to the first place (sources come first, resolved)
        if out[out[t]] >= 0:
            out[t] = out[out[t]]
    return out


def _check_soprano_range(line: Score, soprano: tuple[int, int], transpose: int) -> None:
    """Refuse a melody outside the soprano's range, suggesting the --transpose that fits it (where one does)."""
    lo, hi = soprano
    if line.pitch.min() < lo or line.pitch.max() > hi:
        shift = lo - int(line.pitch.min()) if line.pitch.min() < lo else hi - int(line.pitch.max())
        octave = int(math.copysign(12 * math.ceil(abs(shift) / 12), shift))
        fits = hi - lo >= np.ptp(line.pitch) and abs(int(transpose) + octave) <= MAX_TRANSPOSE
        hint = f"; try --transpose {int(transpose) + octave}" if fits else ""  # only advice the option takes
        raise ConfigError(f"the melody spans MIDI {line.pitch.min()}-{line.pitch.max()}, outside the soprano "
                          f"range {lo}-{hi}{hint}")


def _soprano_grid(line: Score, T: int, cells: Cells) -> np.ndarray:
    """The (T, 4) cells of a melody in the soprano, the other voices empty (to be drawn)."""
    pitches, onset = np.full((T, 4), -1), np.zeros((T, 4), bool)
    for st, en, p in zip(line.start, line.end, line.pitch, strict=True):
        a, b = int(round(st * STEPS)), max(int(round(en * STEPS)), int(round(st * STEPS)) + 1)
        pitches[a:b, 0], onset[a, 0] = p, True
    return cells.from_pitches(pitches, onset)


def parse_cadences(cadences) -> list[int]:
    """--cadences "4,8,12" (or a list of ints): bar numbers from 1, increasing."""
    if cadences is None or cadences == "":
        return []
    items = str(cadences).split(",") if isinstance(cadences, str) else list(cadences)
    try:
        bars = [int(str(b).strip()) for b in items]
    except ValueError:
        raise ConfigError(f"--cadences {cadences!r}: give bar numbers such as 4,8,12") from None
    if any(b < 1 for b in bars) or bars != sorted(set(bars)):
        raise ConfigError(f"--cadences {cadences!r}: bars count from 1, each once, in order")
    return bars


def _phrase_ends(score: Score, line: Score, bars: list[int], marks: list[float]) -> list[tuple[int, int]]:
    """(onset, end) grid steps of the melody notes where phrases close: the last note beginning in each cadence
    bar (numbers from 1) and each note under a fermata (`marks`, quarters)."""
    from ..io.score import bar_lines

    on = np.round(line.start * STEPS).astype(int)
    off = np.maximum(np.round(line.end * STEPS).astype(int), on + 1)
    ends = []
    if bars:
        lines = bar_lines(score, float(line.end.max()))
        if bars[-1] > len(lines):
            raise ConfigError(f"--cadences: bar {bars[-1]} is past the melody's last bar ({len(lines)})")
        edges = np.r_[lines, np.inf]
        for b in bars:
            inside = np.flatnonzero((line.start >= edges[b - 1] - 1e-9) & (line.start < edges[b] - 1e-9))
            if len(inside):
                ends.append((int(on[inside[-1]]), int(off[inside[-1]])))
    for q in marks:
        under = np.flatnonzero((line.start <= q + 1e-6) & (line.end > q + 1e-6))
        if len(under):
            ends.append((int(on[under[-1]]), int(off[under[-1]])))
    return ends


def _closes(line: Score, ends: list[tuple[int, int]], tonic: int, minor: bool) -> list[tuple]:
    """`gibbs.cadence_cells`' closes under the melody notes where phrases close (`ends`): under the last note,
    the tonic triad over the tonic, struck with it and held; under the others the bass on the tonic or the
    dominant."""
    on = int(np.round(line.start[-1] * STEPS))
    off = max(int(np.round(line.end[-1] * STEPS)), on + 1)
    closes = [(a, b, {3: {tonic % 12, (tonic + 7) % 12}}, True) for a, b in ends]
    triad = {tonic % 12, (tonic + 3 + (not minor)) % 12, (tonic + 7) % 12}
    closes.append((on, off, {1: triad, 2: triad, 3: {tonic % 12}}, False))
    return closes


def _assemble(soprano: Score, grid: np.ndarray, cells: Cells, like: Score) -> Score:
    """The soprano's own notes plus alto, tenor and bass decoded from `grid`, on four choir tracks."""
    from ..encodings.grid import Codec, Config

    lower = Codec(Config(voices=4, hold=True, max_hold_steps=10**6)).decode(grid.reshape(-1), cells.tokenizer.vocab)
    lower = lower.select(lower.track > 0)
    start = np.r_[soprano.start, lower.start]
    return Score(start, np.r_[soprano.end, lower.end], np.r_[soprano.pitch, lower.pitch],
                 np.r_[soprano.velocity, np.full(len(lower), 80)], np.r_[np.zeros(len(soprano)), lower.track],
                 tracks=[Track(PROGRAM, False, v) for v in VOICES], tempos=like.tempos,
                 time_signatures=like.time_signatures, key_signatures=like.key_signatures, source=like.source)


def parse_bars(text: str) -> tuple[int, int]:
    m = re.fullmatch(r"\s*(\d+)\s*(?:-\s*(\d+))?\s*", str(text))
    if not m:
        raise ConfigError(f"--bars {text!r}: give a bar or a range such as 5-8")
    a, b = int(m.group(1)), int(m.group(2) or m.group(1))
    if a < 1 or b < a:
        raise ConfigError(f"--bars {text!r}: bars count from 1 and the range must not run backwards")
    return a, b


def parse_voices(text: str) -> list[int]:
    letters = str(text).upper()
    if not letters or set(letters) - set("SATB"):
        raise ConfigError(f"--voices {text!r}: letters from S, A, T and B, such as ATB")
    return sorted({"SATB".index(c) for c in letters})


def infill(piece, bars: str = "1", *, voices: str = "SATB", model=None, seed: int = 0, temperature: float = 0.8,
           iterations: int = 64, rules: bool = True, info: dict | None = None):
    """Regenerate the notes of `voices` that start in `bars` ("5-8", counted from 1 at the piece's bar
    lines) of a four-part `piece` (four tracks, one voice each); every other note is kept as it is."""
    from ..io.midi import read, to_pretty_midi
    from ..io.score import bar_lines

    t0 = time.time()
    score = piece if isinstance(piece, Score) else read(piece)
    s = score.select(~score.is_drum)
    used = tracks_by_height(s).tolist()
    if len(used) != 4:
        raise ConfigError(f"{score.source} has {len(used)} pitched tracks; infill needs a four-part piece "
                          "(four tracks, one voice each, as harmonize writes)")
    a, b = parse_bars(bars)
    which = parse_voices(voices)
    lines = bar_lines(s)
    n_bars = len(lines)
    if b > n_bars:
        raise ConfigError(f"--bars {bars}: the piece has {n_bars} bars")
    lo_q = float(lines[a - 1])
    hi_q = float(lines[b]) if b < n_bars else float(s.end.max())
    voice_of = {k: v for v, k in enumerate(used)}
    v_of_note = np.array([voice_of[int(k)] for k in s.track])
    on = np.round(s.start * STEPS).astype(int)
    if not np.allclose(s.start * STEPS, on, atol=0.05):
        raise ConfigError(f"{score.source}: notes start off the 16th-note grid; infill works on a 16th grid")
    T = int(np.ceil(s.end.max() * STEPS))
    if T > MAX_QUARTERS * STEPS:  # the same cap as harmonize: the grid and each Gibbs sweep grow with T
        raise ConfigError(f"the piece lasts {T / STEPS:g} quarters; infill takes at most {MAX_QUARTERS}")
    h = load(model)
    grid = _voices_grid(s, on, v_of_note, T, h.cells)
    redo = np.isin(v_of_note, which) & (s.start >= lo_q - 1e-9) & (s.start < hi_q - 1e-9)
    free = _free_cells(s, on, v_of_note, which, redo, (lo_q, hi_q), T)
    ranges = [(min(lo, int(s.pitch[v_of_note == v].min())), max(hi, int(s.pitch[v_of_note == v].max())))
              for v, (lo, hi) in enumerate(h.ranges)]
    tonic, minor, _ = key_fit(np.bincount(s.pitch % 12, weights=s.end - s.start, minlength=12))
    pcs = scale(tonic, minor) | {int(p) % 12 for p in s.pitch}
    gen = torch.Generator().manual_seed(int(seed))
    new = gibbs(h.net, h.cells, grid, free, allowed_cells(h.cells, ranges, pcs), iterations=iterations,
                temperature=temperature, generator=gen, rules=rules)
    dec = _new_notes(new, free, T, h.cells)
    keep = s.select(~redo)
    out = Score(np.r_[keep.start, dec.start], np.r_[keep.end, dec.end], np.r_[keep.pitch, dec.pitch],
                np.r_[keep.velocity, np.full(len(dec), 80)],
                np.r_[keep.track, np.array([used[int(v)] for v in dec.track], np.int64)],
                tracks=list(score.tracks), tempos=score.tempos, time_signatures=score.time_signatures,
                key_signatures=score.key_signatures, source=score.source)
    if info is not None:
        info.update(bars=(a, b), voices="".join("SATB"[v] for v in which), removed=int(redo.sum()),
                    added=int(len(dec)), seconds=time.time() - t0, key=key_name(tonic, minor))
    return to_pretty_midi(out)


def _voices_grid(s: Score, on: np.ndarray, v_of_note: np.ndarray, T: int, cells: Cells) -> np.ndarray:
    """The (T, 4) cells of a four-part piece, each note in its voice (`v_of_note`) from its onset step `on`."""
    pitches, onset = np.full((T, 4), -1), np.zeros((T, 4), bool)
    for i in np.argsort(s.start, kind="stable"):
        e = max(int(round(s.end[i] * STEPS)), on[i] + 1)
        pitches[on[i]:e, v_of_note[i]], onset[on[i], v_of_note[i]] = s.pitch[i], True
    return cells.from_pitches(pitches, onset)


def _free_cells(s: Score, on: np.ndarray, v_of_note: np.ndarray, which: list[int], redo: np.ndarray,
                span: tuple[float, float], T: int) -> np.ndarray:
    """(T, 4) the cells to draw: the voices `which` within `span` (quarters), less the cells of the notes kept
    there, plus the whole of every note redrawn (`redo`), even past the span."""
    free = np.zeros((T, 4), bool)
    a_s, b_s = int(round(span[0] * STEPS)), int(round(span[1] * STEPS))
    free[a_s:b_s, which] = True
    for i in np.flatnonzero(~redo & np.isin(v_of_note, which)):  # notes kept: their cells stay
        free[on[i]:max(int(round(s.end[i] * STEPS)), on[i] + 1), v_of_note[i]] = False
    for i in np.flatnonzero(redo):  # the whole of a note redrawn is free, even past the last bar
        free[on[i]:max(int(round(s.end[i] * STEPS)), on[i] + 1), v_of_note[i]] = True
    return free


def _new_notes(new: np.ndarray, free: np.ndarray, T: int, cells: Cells) -> Score:
    """The notes of the drawn grid `new` that start in a free cell (a HOLD continuing a kept note is not a new
    note), decoded with voices as tracks 0-3."""
    from ..encodings.grid import Codec, Config

    dec = Codec(Config(voices=4, hold=True, max_hold_steps=10**6)).decode(new.reshape(-1), cells.tokenizer.vocab)
    d_on = np.round(dec.start * STEPS).astype(int)
    fresh = free[np.clip(d_on, 0, T - 1), dec.track.astype(int)]
    return dec.select(fresh)
