"""`remi`: beat-relative, multi-track (REMI with programs, after Huang & Yang 2020 and MidiTok).

Version 4 (the default): as version 3, plus ROLE tokens (melody, counter-melody, accompaniment, bass, drums,
other; from the track names, `io.score.track_role`) in pieces where tracks of different roles share a program,
so POP909's MELODY, BRIDGE and PIANO, all on program 0, stay three tracks; a ROLE is written only when it
changes, before [PROGRAM]. VELOCITY has 8 levels by default. Decoding names each track by its role.

Version 3: as version 2, and a bar equal to the bar d back is BAR [TIMESIG] [KEY] REPEAT_d.

Version 2: a bar is BAR [TIMESIG] [KEY] then, per onset, POSITION [TEMPO] and per note
[PROGRAM] [VELOCITY] PITCH|DRUM DURATION, where PROGRAM and VELOCITY appear only when they differ
from the previous note's. A one-instrument tune costs about three tokens per note instead of five,
so a bar eight bars back is within reach of a 512-token window. The first bar always carries
TIMESIG and KEY (the key signature of the file, or the Krumhansl-Schmuckler estimate when it has
none), and a meter of one-beat bars throughout (POP909's 1/4) is read as 4/4.

Version 1 (checkpoints made before it; a tokenizer dict without `version`): every note is
PROGRAM PITCH VELOCITY DURATION, no KEY tokens, meters as written.

Positions count 1/12 of a quarter, so 16ths, 8th-triplets and 16th-triplets are exact. Drums use
their own DRUM pitch tokens (program token 128). Encoding sorts all events by a composite key in
one numpy `lexsort`; no Python loop over notes.
May import: errors, io.score, encodings.performance (velocity bins). Not: the tokenizer, data, models and above.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..io.score import ROLES, Score, Track, key_fit
from .performance import bin_velocity, velocity_bin

DRUMS = 128  # the PROGRAM value of drum tracks
KEY_NAMES = ("C", "Db", "D", "Eb", "E", "F", "F#", "G", "Ab", "A", "Bb", "B")  # KEY value = tonic + 12 * minor


def _durations() -> np.ndarray:
    """Duration table in grid ticks (1/12 quarter): fine for short notes, coarser for long."""
    return np.r_[np.arange(1, 13), np.arange(14, 25, 2), np.arange(27, 49, 3), np.arange(54, 97, 6),
                 np.arange(108, 193, 12), np.arange(216, 385, 24)]


def _time_signatures(max_bar_quarters: int) -> list[tuple[int, int]]:
    return [(n, d) for d in (2, 4, 8, 16) for n in range(1, 33) if n * 4 / d <= max_bar_quarters]


# every distance up to 256 bars: folk's 2, 4, 8, bach's odd ones and the far, irregular returns of pop
# choruses (1-16 plus multiples of 4 up to 128 covered only 0.58 of POP909's repeated bars; python bench/form_data.py)
REPEAT_DISTANCES = tuple(range(1, 257))


@dataclass(frozen=True)
class Config:
    """REMI settings."""

    ticks_per_quarter: int = 12  #: grid resolution: 12 holds 16ths (3) and triplets (4)
    max_bar_quarters: int = 8  #: the longest bar (8 quarters = 8/4, 16/8); longer meters become 4/4
    velocity_bins: int | None = None  #: number of VELOCITY tokens; None: 8 from version 4 (steps of 16), else 32
    min_qpm: int = 30  #: the slowest TEMPO token
    max_qpm: int = 300  #: the fastest TEMPO token (TEMPO tokens step by 1 qpm)
    version: int = 4  #: 4: + ROLE tokens, where tracks of different roles share a program; 3: + REPEAT_d;
    #: 2: KEY tokens, PROGRAM/VELOCITY only on change,
    #: one-beat meters read as 4/4; 1: the first
    repeat_distances: tuple[int, ...] = REPEAT_DISTANCES  #: version 3: the bar distances a REPEAT token may name
    bar_cycle: int = 1  #: version 3: BAR tokens carry the bar's index modulo this (1: one plain BAR; 16 measured worse)

    def __post_init__(self):
        if self.velocity_bins is None:  # recorded resolved, so a checkpoint's vocabulary never moves
            object.__setattr__(self, "velocity_bins", 8 if self.version >= 4 else 32)


def score_key(score: Score) -> tuple[int, int]:
    """A score's key: its first key signature, else the Krumhansl-Schmuckler estimate from durations."""
    if len(score.key_signatures):
        return int(score.key_signatures[0, 1]) % 12, int(score.key_signatures[0, 2] > 0)
    pitched = ~score.is_drum
    w = np.bincount(score.pitch[pitched] % 12, weights=(score.end - score.start)[pitched], minlength=12)
    tonic, minor, _ = key_fit(w)
    return tonic, int(minor)


def plausible_meter(time_signatures: np.ndarray) -> bool:
    """False for a map of one-beat bars throughout (1/4, 1/8 ...), which POP909 writes for 4/4 songs."""
    return not bool((time_signatures[:, 1] == 1).all())


class Codec:
    def __init__(self, config: Config):
        self.c = config
        self.durations = _durations() * config.ticks_per_quarter // 12
        self.durations = np.unique(np.maximum(self.durations, 1))
        self.sigs = _time_signatures(config.max_bar_quarters)
        self.tempos = np.arange(config.min_qpm, config.max_qpm + 1, dtype=np.float64)
        self.positions = config.ticks_per_quarter * config.max_bar_quarters
        self.bar_cycle = max(1, config.bar_cycle) if config.version >= 3 else 1
        if config.version >= 3 and list(config.repeat_distances) != sorted(set(config.repeat_distances)) \
                or min(config.repeat_distances, default=1) < 1:
            raise ValueError("repeat_distances must be increasing positive bar counts")

    def table(self) -> list[tuple[str, int]]:
        key = [("KEY", 24)] if self.c.version >= 2 else []
        repeat = [("REPEAT", len(self.c.repeat_distances))] if self.c.version >= 3 else []
        role = [("ROLE", len(ROLES))] if self.c.version >= 4 else []
        return [("BAR", self.bar_cycle), ("TIMESIG", len(self.sigs)), *key, *repeat, ("POSITION", self.positions),
                ("TEMPO", len(self.tempos)), *role, ("PROGRAM", 129), ("PITCH", 128), ("DRUM", 128),
                ("VELOCITY", self.c.velocity_bins), ("DURATION", len(self.durations))]

    def value_name(self, kind: str, v: int) -> str:
        if kind == "TIMESIG":
            return "{}/{}".format(*self.sigs[v])
        if kind == "TEMPO":
            return f"{self.tempos[v]:.0f}"
        if kind == "DURATION":
            return f"{self.durations[v]}/{self.c.ticks_per_quarter}"
        if kind == "KEY":
            return KEY_NAMES[v % 12] + ("m" if v >= 12 else "")
        if kind == "REPEAT":
            return str(self.c.repeat_distances[v])
        if kind == "ROLE":
            return ROLES[v]
        return str(v)

    def sig_index(self, num, den) -> int:
        try:
            return self.sigs.index((int(num), int(den)))
        except ValueError:
            return self.sigs.index((4, 4))

    # ---- encode ---------------------------------------------------------------------------
    def encode(self, score: Score, vocab) -> np.ndarray:
        if len(score) == 0:
            return np.zeros(0, np.int64)
        q = self.c.ticks_per_quarter
        on = np.round(score.start * q).astype(np.int64)
        d_ix = self._duration_index(np.round((score.end - score.start) * q).astype(np.int64))
        program = np.where(score.is_drum, DRUMS, score.program)
        last = int(on.max())
        bars, bar_sig, bar_lens = self._bars(score.time_signatures, last)
        new_sig = np.r_[True, bar_sig[1:] != bar_sig[:-1]]
        t_tick, t_bin = self._tempo_changes(score.tempos, last)
        pos_tick = np.unique(np.r_[on, t_tick])

        # (tick, order, rank) keys: BAR 0, TIMESIG 1, KEY 1.5, POSITION 2, TEMPO 3, notes 4 (W tokens each)
        note_toks, keep, rank, note_bar, repeat = self._notes(score, vocab, on, d_ix, program, bars, bar_lens, t_tick)
        keys_tick, keys_val = self._keys(score, bars) if self.c.version >= 2 else (np.zeros(0, np.int64),) * 2
        # a repeated bar is BAR [TIMESIG] [KEY] REPEAT_d: its positions and notes are not written
        copied = repeat > 0
        keep &= ~copied[note_bar][:, None]
        pos_tick = pos_tick[~copied[np.searchsorted(bars, pos_tick, side="right") - 1]]
        rep_ix = np.searchsorted(self.c.repeat_distances, repeat[copied])
        W = note_toks.shape[1]
        tick = np.r_[bars, bars[new_sig], keys_tick, bars[copied], pos_tick, t_tick, np.repeat(on, W)[keep.ravel()]]
        order = np.r_[np.zeros(len(bars)), np.ones(new_sig.sum()), np.full(len(keys_tick), 1.5),
                      np.full(copied.sum(), 1.75), np.full(len(pos_tick), 2), np.full(len(t_tick), 3),
                      np.full(keep.sum(), 4)]
        sub = np.r_[np.zeros(len(bars) + new_sig.sum() + len(keys_tick) + copied.sum() + len(pos_tick) + len(t_tick)),
                    (rank[:, None] * W + np.arange(W)).ravel()[keep.ravel()]]
        bar_ids = vocab.id("BAR", np.arange(len(bars)) % self.bar_cycle)
        toks = np.r_[bar_ids, vocab.id("TIMESIG", bar_sig[new_sig]),
                     vocab.id("KEY", keys_val) if len(keys_val) else np.zeros(0, np.int64),
                     vocab.id("REPEAT", rep_ix) if copied.any() else np.zeros(0, np.int64),
                     vocab.id("POSITION", self._position(bars, pos_tick)), vocab.id("TEMPO", t_bin),
                     note_toks.ravel()[keep.ravel()]]
        return toks[np.lexsort((sub, order, tick))].astype(np.int64)

    def _duration_index(self, dur: np.ndarray) -> np.ndarray:
        """Durations in ticks -> the index of the nearest entry of the duration table (the shorter on a tie)."""
        d_ix = np.clip(np.searchsorted(self.durations, dur), 0, len(self.durations) - 1)
        lower = np.maximum(d_ix - 1, 0)  # nearest table entry
        return np.where(np.abs(self.durations[lower] - dur) <= np.abs(self.durations[d_ix] - dur), lower, d_ix)

    def _bars(self, ts: np.ndarray, last: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(start tick, TIMESIG index, length in ticks) of every bar up to tick `last`: the bar grid restarts at
        every time-signature change of `ts` (rows of quarter, numerator, denominator)."""
        q = self.c.ticks_per_quarter
        if self.c.version >= 2 and not plausible_meter(ts):
            ts = np.array([[0.0, 4, 4]])
        ts_tick = np.round(ts[:, 0] * q).astype(np.int64)
        sig = np.array([self.sig_index(n, d) for n, d in ts[:, 1:]])
        bar_len = np.array([self.sigs[i][0] * 4 * q // self.sigs[i][1] for i in sig])
        keep = np.r_[ts_tick[1:] > ts_tick[:-1], True] & (ts_tick <= last)  # last of same-tick changes
        keep[0] |= not keep.any()
        ts_tick, sig, bar_len = ts_tick[keep], sig[keep], bar_len[keep]
        ts_tick[0] = 0
        # a change that falls inside a bar of the previous meter takes effect at that meter's next
        # bar line (the decoder can only start a bar where the previous one ends)
        seg = [[0, int(sig[0]), int(bar_len[0])]]
        for t, g, n in zip(ts_tick[1:].tolist(), sig[1:].tolist(), bar_len[1:].tolist(), strict=True):
            a, _, prev_n = seg[-1]
            snapped = a + -(-(t - a) // prev_n) * prev_n
            if snapped == a:  # the previous meter would get no bar: the later change wins
                seg[-1][1:] = [g, n]
            elif snapped <= last:
                seg.append([snapped, g, n])
        ts_tick, sig, bar_len = (np.array(c, np.int64) for c in zip(*seg, strict=True))
        seg_end = np.r_[ts_tick[1:], last + 1]
        bars, bar_sig, bar_lens = [], [], []
        for a, b, n, s in zip(ts_tick, seg_end, bar_len, sig, strict=True):
            starts = np.arange(a, b, n)
            bars.append(starts)
            bar_sig.append(np.full(len(starts), s))
            bar_lens.append(np.full(len(starts), n))
        return np.concatenate(bars), np.concatenate(bar_sig), np.concatenate(bar_lens)

    def _position(self, bars: np.ndarray, ticks: np.ndarray) -> np.ndarray:
        """Ticks -> their POSITION in the bar they fall in."""
        b = np.searchsorted(bars, ticks, side="right") - 1
        return np.clip(ticks - bars[b], 0, self.positions - 1)

    def _tempo_changes(self, tempos: np.ndarray, last: int) -> tuple[np.ndarray, np.ndarray]:
        """(tick, TEMPO index) of the tempo changes on the grid, deduplicated by bin, none after tick `last`."""
        q = self.c.ticks_per_quarter
        t_tick = np.round(tempos[:, 0] * q).astype(np.int64)
        t_bin = np.clip(np.round(tempos[:, 1]) - self.tempos[0], 0, len(self.tempos) - 1).astype(np.int64)
        keep = np.r_[t_tick[1:] > t_tick[:-1], True] & (t_tick <= last)
        t_tick, t_bin = t_tick[keep], t_bin[keep]
        keep = np.r_[True, t_bin[1:] != t_bin[:-1]]
        return t_tick[keep], t_bin[keep]

    def _notes(self, score: Score, vocab, on, d_ix, program, bars, bar_lens, t_tick):
        """The notes' tokens: (note_toks (n, W) ids, keep (n, W) which of them are written, each note's rank in
        the sorted order, each note's bar, per bar the distance it repeats (version 3, else 0))."""
        n = len(on)
        role = self._roles(score, program)
        note_order = np.lexsort((score.pitch, program, role, on))
        rank = np.empty(n, np.int64)
        rank[note_order] = np.arange(n)
        vb = velocity_bin(score.velocity, self.c.velocity_bins)
        note_bar = np.searchsorted(bars, on, side="right") - 1
        repeat = np.zeros(len(bars), np.int64)  # per bar: the distance it repeats (version 3), else 0
        if self.c.version >= 3:
            t_bar = np.searchsorted(bars, t_tick, side="right") - 1
            repeat, vb = self._repeats(bars, bar_lens, note_bar, note_order,
                                       np.stack([on - bars[note_bar], role, program, score.pitch, d_ix], 1), vb,
                                       no_repeat=np.isin(np.arange(len(bars)), t_bar))
        note_toks, keep = self._note_columns(vocab, score.pitch, program, role, vb, d_ix, note_order)
        return note_toks, keep, rank, note_bar, repeat

    def _note_columns(self, vocab, pitch, program, role, vb, d_ix, note_order):
        """Each note's tokens as a row (the columns of the version) and which of them are written: ROLE, PROGRAM
        and VELOCITY (versions 2 and up) only where they change from the previous note in `note_order`."""
        n = len(pitch)
        pitch_tok = np.where(program == DRUMS, vocab.id("DRUM", pitch), vocab.id("PITCH", pitch))
        if self.c.version >= 4:  # [ROLE] [PROGRAM] [VELOCITY] PITCH DURATION, the bracketed ones only on change
            note_toks = np.stack([vocab.id("ROLE", np.maximum(role, 0)), vocab.id("PROGRAM", program),
                                  vocab.id("VELOCITY", vb), pitch_tok, vocab.id("DURATION", d_ix)], axis=1)
            keep = np.ones((n, 5), dtype=bool)
            for col, value in ((0, role), (1, program), (2, vb)):
                v = value[note_order]
                keep[note_order[1:], col] = v[1:] != v[:-1]
            keep[:, 0] &= role >= 0  # no roles needed: none written
        elif self.c.version >= 2:  # [PROGRAM] [VELOCITY] PITCH DURATION, the bracketed ones only on change
            note_toks = np.stack([vocab.id("PROGRAM", program), vocab.id("VELOCITY", vb), pitch_tok,
                                  vocab.id("DURATION", d_ix)], axis=1)
            keep = np.ones((n, 4), dtype=bool)
            for col, value in ((0, program), (1, vb)):
                v = value[note_order]
                keep[note_order[1:], col] = v[1:] != v[:-1]
        else:
            note_toks = np.stack([vocab.id("PROGRAM", program), pitch_tok, vocab.id("VELOCITY", vb),
                                  vocab.id("DURATION", d_ix)], axis=1)
            keep = np.ones((n, 4), dtype=bool)
        return note_toks, keep

    def _roles(self, score: Score, program: np.ndarray) -> np.ndarray:
        """Version 4: each note's track role (`ROLES`) where the piece needs it, that is where tracks of different
        roles share a program (POP909's MELODY, BRIDGE and PIANO on piano); else -1 for every note (no ROLE
        token is written, and a decoded track's role follows from its program)."""
        if self.c.version < 4 or not len(score):
            return np.full(len(score), -1, np.int64)
        role = score.role
        pairs = np.unique(np.stack([program, role], 1), axis=0)
        shared = len(np.unique(pairs[:, 0])) < len(pairs)
        return role if shared else np.full(len(score), -1, np.int64)

    def _repeats(self, bars, bar_lens, note_bar, note_order, rows, vb, *, no_repeat) -> tuple[np.ndarray, np.ndarray]:
        """Version 3: per bar, the distance (in `repeat_distances`, nearest first) to an earlier bar of the same
        length with the same notes (rows: onset in the bar, role, program, pitch, duration; velocity aside), else 0;
        and the velocity bins as decoded: a repeated bar plays its source's velocities. Empty bars and bars
        with a tempo change (`no_repeat`) are written out."""
        order = note_order  # sorted by onset, program, pitch: the order the notes are written and copied
        starts = np.searchsorted(note_bar[order], np.arange(len(bars) + 1))
        dists = np.array(self.c.repeat_distances)
        repeat, vb = np.zeros(len(bars), np.int64), vb.copy()
        seen: dict[bytes, list[int]] = {}
        for i in range(len(bars)):
            notes = order[starts[i]:starts[i + 1]]
            if not len(notes):
                continue
            key = bar_lens[i].tobytes() + rows[notes].tobytes()
            earlier = seen.setdefault(key, [])
            if earlier and not no_repeat[i]:
                ok = np.isin(i - dists, earlier)
                if ok.any():
                    d = int(dists[ok.argmax()])
                    repeat[i] = d
                    vb[notes] = vb[order[starts[i - d]:starts[i - d + 1]]]
            earlier.append(i)
        return repeat, vb

    def _keys(self, score: Score, bars: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """KEY tokens: (bar-line ticks, values). The first bar always gets one; a later key signature takes
        effect at the bar line at or before it; repeats of the current key are dropped."""
        tonic, minor = score_key(score)
        q = self.c.ticks_per_quarter
        ticks, vals = [0], [tonic + 12 * minor]
        for at, k, m in score.key_signatures[1:]:
            b = int(bars[max(0, np.searchsorted(bars, round(at * q), side="right") - 1)])
            v = int(k) % 12 + 12 * int(m > 0)
            if b == ticks[-1]:
                vals[-1] = v
            elif v != vals[-1]:
                ticks.append(b)
                vals.append(v)
        if len(vals) > 1 and ticks[0] == ticks[1]:
            ticks, vals = ticks[1:], vals[1:]
        return np.array(ticks, np.int64), np.array(vals, np.int64)

    # ---- decode ---------------------------------------------------------------------------
    def decode(self, ids: np.ndarray, vocab) -> Score:
        q = self.c.ticks_per_quarter
        kinds = vocab.kinds
        ki = vocab.kind_index(ids)
        vals = ids - np.array([vocab.offset[k] for k in kinds])[ki]
        bar_start, bar_len, pos, started = 0, 4 * q, 0, False
        program, pitch, velocity, role = 0, None, 80, -1
        notes, tempos, sigs, keys = [], [], [], []
        bar_notes: list[list[tuple]] = []  # per bar, its notes as written or copied: (onset in bar, end, ...)
        for k, v in zip(ki.tolist(), vals.tolist(), strict=True):
            kind = kinds[k]
            if kind == "BAR":
                bar_start, pos = (bar_start + bar_len if started else 0), 0
                started = True
                bar_notes.append([])
            elif kind == "REPEAT" and len(bar_notes) > self.c.repeat_distances[v]:
                for rel, length, p, vel, prog, rl in bar_notes[-1 - self.c.repeat_distances[v]]:
                    notes.append((bar_start + rel, bar_start + rel + length, p, vel, prog, rl))
                    bar_notes[-1].append((rel, length, p, vel, prog, rl))
                    program, velocity, pitch, role = prog, vel, None, rl
            elif kind == "TIMESIG":
                num, den = self.sigs[v]
                bar_len = num * 4 * q // den
                sigs.append((bar_start, num, den))
            elif kind == "KEY":
                keys.append((bar_start, v % 12, int(v >= 12)))
            elif kind == "POSITION":
                pos = v
            elif kind == "TEMPO":
                tempos.append((bar_start + pos, float(self.tempos[v])))
            elif kind == "PROGRAM":
                program, pitch = v, None
            elif kind == "ROLE":
                role, pitch = v, None
            elif kind in ("PITCH", "DRUM"):
                pitch = (v, DRUMS if kind == "DRUM" else (program if program != DRUMS else 0))
            elif kind == "VELOCITY":
                velocity = bin_velocity(v, self.c.velocity_bins)
            elif kind == "DURATION" and pitch is not None:
                t = bar_start + pos
                notes.append((t, t + int(self.durations[v]), pitch[0], velocity, pitch[1], role))
                if bar_notes:
                    bar_notes[-1].append((pos, int(self.durations[v]), pitch[0], velocity, pitch[1], role))
                pitch = None
        a = np.array(notes, dtype=np.float64).reshape(-1, 6)
        # one track per (role, program), named by its role where ROLE tokens gave one; unnamed first, then by role
        pairs = sorted(set(map(tuple, a[:, [5, 4]].astype(int).tolist())))
        tracks = [Track(0 if p == DRUMS else p, p == DRUMS, ROLES[r].capitalize() if r > 0 else "") for r, p in pairs]
        track = np.array([pairs.index(rp) for rp in map(tuple, a[:, [5, 4]].astype(int).tolist())], np.int64)
        return Score(a[:, 0] / q, a[:, 1] / q, a[:, 2], a[:, 3], track, tracks=tracks,
                     tempos=np.array(tempos or [(0, 120.0)], dtype=np.float64) / [q, 1],
                     time_signatures=np.array(sigs or [(0, 4, 4)], dtype=np.float64) / [q, 1, 1],
                     key_signatures=np.array(keys, dtype=np.float64).reshape(-1, 3) / [q, 1, 1])
