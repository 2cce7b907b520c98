"""`grid`: fixed voices per time step (SATB on a 16th grid by default), for chorales.

Every step emits one token per voice: PITCH p (a note starts), HOLD (the voice's note goes on) or
REST. When the score has exactly `voices` tracks, each track is a voice (highest mean pitch first);
otherwise the highest `voices` pitches sounding at each step are the voices: a note that goes on
keeps its voice, new notes take the free voices highest first (a chord struck together reads from
the top down), and a voice whose pitch changes starts a note, so a HOLD never continues another
note. With `hold=False` a sounding voice repeats its PITCH at every step (the JSB Chorales
benchmark convention). `encode_grid` takes a (steps, voices) array of MIDI pitches with NaN or -1
for silence, as in the JSB Chorales files; `load_jsb` reads those files.
May import: errors, io.score. Not: the tokenizer, data, models, training, generation, evaluation, app.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import MusiclstmError
from ..io.score import Score, Track, tracks_by_height

VOICE_NAMES = ("Soprano", "Alto", "Tenor", "Bass")


@dataclass(frozen=True)
class Config:
    """Grid settings."""

    voices: int = 4  #: tokens per step, highest voice first
    steps_per_quarter: int = 4  #: 4 = a 16th-note grid
    hold: bool = True  #: HOLD tokens for held notes (False: repeat the pitch)
    qpm: float = 100.0  #: tempo of decoded scores
    max_hold_steps: int = 64  #: a decoded note never lasts longer than this many steps


class Codec:
    def __init__(self, config: Config):
        self.c = config

    def table(self) -> list[tuple[str, int]]:
        return [("PITCH", 128), ("REST", 1), ("HOLD", 1)]

    def value_name(self, kind: str, v: int) -> str:
        return str(v)

    # ---- encode ---------------------------------------------------------------------------
    def to_grid(self, score: Score) -> tuple[np.ndarray, np.ndarray]:
        """Score -> (pitch grid (T, V) with -1 for silence, onset flags (T, V))."""
        keep = ~score.is_drum
        s = score.select(keep)
        V, q = self.c.voices, self.c.steps_per_quarter
        on = np.round(s.start * q).astype(np.int64)
        off = np.maximum(np.round(s.end * q).astype(np.int64), on + 1)
        T = int(off.max()) if len(on) else 0
        grid, onset = np.full((T, V), -1, np.int64), np.zeros((T, V), bool)
        used = tracks_by_height(s)
        if len(used) == V:  # one track per voice, ordered by mean pitch, highest first
            for v, k in enumerate(used):
                for i in np.flatnonzero(s.track == k)[np.argsort(on[s.track == k], kind="stable")]:
                    grid[on[i]:off[i], v] = s.pitch[i]
                    onset[on[i], v] = True
            return grid, onset
        # otherwise the highest V sounding pitches of each step fill the voices: a note that goes on
        # keeps its voice (so a HOLD always continues the note its voice holds), new notes take the
        # free voices from the top, highest first; a voice whose pitch changes starts a note
        sounding: list[dict[int, bool]] = [{} for _ in range(T)]  # per step: pitch -> struck here
        for i in range(len(on)):
            p = int(s.pitch[i])
            for t in range(on[i], off[i]):
                sounding[t][p] = sounding[t].get(p, False) or t == on[i]
        prev = [-1] * V
        for t, notes in enumerate(sounding):
            top = sorted(notes, reverse=True)[:V]
            slot = [p if p in top and not notes[p] else -1 for p in prev]  # held notes stay put
            new = iter(p for p in top if p not in slot)
            slot = [next(new, -1) if p < 0 else p for p in slot]
            for v, p in enumerate(slot):
                grid[t, v], onset[t, v] = p, p >= 0 and (p != prev[v] or notes[p])
            prev = slot
        return grid, onset

    def encode(self, score: Score, vocab) -> np.ndarray:
        return self._tokens(*self.to_grid(score), vocab)

    def encode_grid(self, pitches: np.ndarray, vocab) -> np.ndarray:
        """A (steps, voices) pitch array (NaN or -1 = silent; a repeated pitch is held) -> ids."""
        a = np.asarray(pitches, dtype=np.float64)
        a = np.where(np.isnan(a), -1, a).astype(np.int64).reshape(len(a), -1 if a.size else self.c.voices)
        a = a[:, : self.c.voices]
        a = np.pad(a, ((0, 0), (0, self.c.voices - a.shape[1])), constant_values=-1)
        onset = np.r_[np.ones((1, a.shape[1]), bool), a[1:] != a[:-1]] if len(a) else np.zeros_like(a, bool)
        return self._tokens(a, onset, vocab)

    def _tokens(self, grid: np.ndarray, onset: np.ndarray, vocab) -> np.ndarray:
        held = (grid >= 0) & ~onset if self.c.hold else np.zeros_like(onset)
        toks = np.where(grid < 0, vocab.id("REST"), vocab.id("PITCH", np.clip(grid, 0, 127)))
        return np.where(held, vocab.id("HOLD"), toks).ravel().astype(np.int64)

    # ---- decode ---------------------------------------------------------------------------
    def decode(self, ids: np.ndarray, vocab) -> Score:
        o_p, rest, hold = vocab.offset["PITCH"], vocab.id("REST"), vocab.id("HOLD")
        V, cap = self.c.voices, self.c.max_hold_steps
        ids = ids[((ids >= o_p) & (ids < o_p + 128)) | (ids == rest) | (ids == hold)]
        open_: list[tuple[int, int] | None] = [None] * V  # (start step, pitch) per voice
        notes = []

        def close(v: int, t: int) -> None:
            s, p = open_[v]
            notes.append((s, min(t, s + cap), p, v))
            open_[v] = None

        for k, i in enumerate(ids.tolist()):
            t, v = divmod(k, V)
            cur = open_[v]
            if cur is not None and (i != hold or t - cur[0] >= cap):
                if not (i == o_p + cur[1] and not self.c.hold and t - cur[0] < cap):
                    close(v, t)
            if o_p <= i < o_p + 128 and open_[v] is None:
                open_[v] = (t, i - o_p)
        T = -(-len(ids) // V)  # steps, counting a last partial step
        for v in range(V):
            if open_[v] is not None:
                close(v, T)
        a = np.array(notes, dtype=np.float64).reshape(-1, 4)
        q = self.c.steps_per_quarter
        names = VOICE_NAMES if V == 4 else [f"Voice {v + 1}" for v in range(V)]
        return Score(a[:, 0] / q, a[:, 1] / q, a[:, 2], np.full(len(a), 80), a[:, 3],
                     tracks=[Track(52, False, names[v]) for v in range(V)], tempos=[[0.0, self.c.qpm]])


def load_jsb(path) -> dict[str, list[np.ndarray]]:
    """The JSB Chorales arrays (`Jsb16thSeparated.json` or the piano-roll `jsb-chorales-*.json`).

    An `.npz` is read only when it holds plain numeric arrays; the published `Jsb16thSeparated.npz`
    pickles its chorales as Python objects and is refused with a `MusiclstmError` naming the JSON.

    Returns {"train"|"valid"|"test": [array, ...]}: for the separated files each array is
    (steps, 4) MIDI pitches with NaN for silence; for the piano-roll files each piece is a list of
    frames, each a list of sounding pitches.
    """
    path = Path(path)
    if path.suffix == ".npz":
        # never unpickled: the published .npz stores its chorales as pickled object arrays, which
        # could run any code; the .json beside it holds the same arrays
        try:
            with np.load(path, allow_pickle=False) as data:
                return {k: [np.asarray(x, dtype=np.float64) for x in data[k]] for k in ("train", "valid", "test")}
        except ValueError as e:
            if "allow_pickle" not in str(e):
                raise MusiclstmError(f"{path}: not a JSB Chorales .npz ({e})") from e
            raise MusiclstmError(f"{path} stores pickled Python objects, which musiclstm never loads; use "
                                 f"{path.with_suffix('.json').name} (the same chorales as JSON)") from None
        except (OSError, KeyError) as e:
            raise MusiclstmError(f"{path}: not a JSB Chorales .npz ({e})") from e
    raw = json.loads(path.read_text())
    if "separated" in path.name.lower():
        return {k: [np.where(np.asarray(x, float) < 0, np.nan, np.asarray(x, float)) for x in raw[k]]
                for k in ("train", "valid", "test")}
    return {k: raw[k] for k in ("train", "valid", "test")}
