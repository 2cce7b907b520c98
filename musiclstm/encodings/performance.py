"""`performance`: the Performance RNN / Music Transformer event vocabulary.

NOTE_ON x128, NOTE_OFF x128, TIME_SHIFT x100 (10 ms .. 1 s), VELOCITY x32 = 388 events.
Drums are dropped, other instruments merge into one stream, the sustain pedal is folded into
note durations. Encoding is vectorized with numpy (no Python loop over notes).

One pitch is one key, so unisons between voices or tracks are what the stream cannot keep apart:
notes of one pitch struck in the same 10 ms step become one note (the longest, with its
velocity), and a note struck while its pitch still sounds ends the sounding note there and
itself lasts until the latest of their ends. Every other onset survives, and so does the sound:
what was sounding at each 10 ms step still sounds (up to `max_note_seconds` per note). A vocal
line doubled in the piano part is the common case: Dichterliebe no. 2 (music21's corpus) reads
as 238 notes and comes back as its 191 distinct (step, pitch) key presses, onset F1 0.89 against
the notes, 1.0 against the key presses (tests/test_performance_unisons.py).
May import: errors, io.score. Not: the tokenizer, data, models, training, generation, evaluation, app.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..io.score import Score, Track

QPM = 120.0  # decoded scores use a fixed tempo, so quarters = seconds * 2


@dataclass(frozen=True)
class Config:
    """Performance encoding settings (the defaults are Performance RNN's)."""

    shift_ms: int = 10  #: one TIME_SHIFT step, in milliseconds
    shift_steps: int = 100  #: number of TIME_SHIFT tokens (the longest shift = shift_ms * shift_steps)
    velocity_bins: int = 32  #: number of VELOCITY tokens
    max_note_seconds: float = 10.0  #: a decoded note never lasts longer than this


def velocity_bin(v: np.ndarray, bins: int) -> np.ndarray:
    """MIDI velocity 1-127 -> bin 0..bins-1."""
    return np.clip((np.asarray(v) - 1) * bins // 127, 0, bins - 1)


def bin_velocity(b, bins: int) -> int:
    """Bin -> the MIDI velocity at the middle of the bin."""
    return int(np.clip(round((b + 0.5) * 127 / bins) + 1, 1, 127))


class Codec:
    def __init__(self, config: Config):
        self.c = config

    def table(self) -> list[tuple[str, int]]:
        return [("NOTE_ON", 128), ("NOTE_OFF", 128), ("TIME_SHIFT", self.c.shift_steps),
                ("VELOCITY", self.c.velocity_bins)]

    def value_name(self, kind: str, v: int) -> str:
        return str((v + 1) * self.c.shift_ms) + "ms" if kind == "TIME_SHIFT" else str(v)

    # ---- encode ---------------------------------------------------------------------------
    def notes(self, score: Score) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """The notes this encoding keeps, in time steps: (on, off, pitch, velocity), sorted."""
        keep = ~score.is_drum
        start, end = score.start[keep], score.end[keep].copy()
        track = score.track[keep]
        for k in np.unique(score.pedals[:, 0]).astype(int) if len(score.pedals) else []:
            ped = score.pedals[score.pedals[:, 0] == k]
            ped = ped[np.argsort(ped[:, 1])]
            m = track == k
            i = np.searchsorted(ped[:, 1], end[m], side="right") - 1  # last pedal down at/before end
            held = (i >= 0) & (end[m] < ped[np.maximum(i, 0), 2])
            end[m] = np.where(held, ped[np.maximum(i, 0), 2], end[m])
        step = self.c.shift_ms / 1000.0
        on = np.round(score.seconds(start) / step).astype(np.int64)
        off = np.round(score.seconds(end) / step).astype(np.int64)
        pitch, vel = score.pitch[keep], score.velocity[keep]
        if len(on) == 0:
            return on, off, pitch, vel
        # one pitch is one key: unisons struck in the same step are one note (the longest), and a
        # note struck while its pitch sounds ends the earlier one there and lasts as long as any
        # of them (the key sounds while any of its notes does: the sound is kept, not the voices)
        order = np.lexsort((-off, on, pitch))
        on, off, pitch, vel = on[order], off[order], pitch[order], vel[order]
        same = np.r_[(pitch[1:] == pitch[:-1]) & (on[1:] == on[:-1]), False]
        dup = np.r_[False, same[:-1]]
        on, off, pitch, vel = on[~dup], off[~dup], pitch[~dup], vel[~dup]
        span = int(off.max()) + 1  # pitch-major keys make one running maximum serve every pitch
        latest = np.maximum.accumulate(pitch * span + off) - pitch * span  # latest end so far, per pitch
        nxt = np.r_[np.where(pitch[1:] == pitch[:-1], on[1:], np.iinfo(np.int64).max), np.iinfo(np.int64).max]
        off = np.maximum(np.minimum(latest, nxt), on + 1)
        return on, off, pitch, vel

    def encode(self, score: Score, vocab) -> np.ndarray:
        on, off, pitch, vel = self.notes(score)
        n = len(on)
        if n == 0:
            return np.zeros(0, np.int64)
        # events: offs sort before ons at the same step; ons/offs of one step ordered by pitch
        t = np.r_[off, on]
        is_on = np.r_[np.zeros(n, bool), np.ones(n, bool)]
        p = np.r_[pitch, pitch]
        order = np.lexsort((p, is_on, t))
        t, is_on, p = t[order], is_on[order], p[order]
        vb = velocity_bin(np.r_[vel, vel], self.c.velocity_bins)[order]
        # a VELOCITY token precedes a NOTE_ON whose bin differs from the previous NOTE_ON's
        on_ix = np.flatnonzero(is_on)
        change = np.zeros(len(t), bool)
        change[on_ix] = np.r_[True, vb[on_ix][1:] != vb[on_ix][:-1]]
        gap = np.diff(np.r_[0, t])
        full, rem = gap // self.c.shift_steps, gap % self.c.shift_steps
        count = full + (rem > 0) + change + 1
        # lay every event's tokens out flat: [full shifts][remainder shift][velocity][note]
        ev = np.repeat(np.arange(len(t)), count)
        k = np.arange(count.sum()) - np.repeat(np.cumsum(count) - count, count)
        f, r, c = full[ev], (rem > 0)[ev], change[ev]
        out = np.where(is_on[ev], vocab.id("NOTE_ON", p[ev]), vocab.id("NOTE_OFF", p[ev]))
        out = np.where(k < f, vocab.id("TIME_SHIFT", self.c.shift_steps - 1), out)
        out = np.where((k == f) & r, vocab.id("TIME_SHIFT", rem[ev] - 1), out)
        out = np.where((k == f + r) & c, vocab.id("VELOCITY", vb[ev]), out)
        return out.astype(np.int64)

    # ---- decode ---------------------------------------------------------------------------
    def decode(self, ids: np.ndarray, vocab) -> Score:
        o_on, o_off = vocab.offset["NOTE_ON"], vocab.offset["NOTE_OFF"]
        o_sh, o_vel = vocab.offset["TIME_SHIFT"], vocab.offset["VELOCITY"]
        step = self.c.shift_ms / 1000.0
        cap = max(1, int(self.c.max_note_seconds / step))
        now, velocity = 0, bin_velocity(self.c.velocity_bins * 5 // 8, self.c.velocity_bins)
        open_: dict[int, tuple[int, int]] = {}
        notes: list[tuple[int, int, int, int]] = []

        def close(p: int, at: int) -> None:
            s, v = open_.pop(p)
            notes.append((s, min(max(at, s + 1), s + cap), p, v))

        for i in ids.tolist():
            if o_on <= i < o_on + 128:
                p = i - o_on
                if p in open_:
                    if open_[p][0] == now:
                        continue  # the same pitch struck twice at once: keep one
                    close(p, now)
                open_[p] = (now, velocity)
            elif o_off <= i < o_off + 128:
                if i - o_off in open_:
                    close(i - o_off, now)
            elif o_sh <= i < o_sh + self.c.shift_steps:
                now += i - o_sh + 1
            elif o_vel <= i < o_vel + self.c.velocity_bins:
                velocity = bin_velocity(i - o_vel, self.c.velocity_bins)
        for p in list(open_):
            close(p, now)
        a = np.array(sorted(notes), dtype=np.float64).reshape(-1, 4)
        qps = QPM / 60.0 * step  # quarters per step
        return Score(a[:, 0] * qps, a[:, 1] * qps, a[:, 2], a[:, 3], np.zeros(len(a)),
                     tracks=[Track(0, False, "Piano")], tempos=[[0.0, QPM]])
