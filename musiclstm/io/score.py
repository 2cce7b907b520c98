"""The project's note representation: a `Score` of plain numpy arrays.

Everything that reads music (corpus files, primers, pretty_midi objects) ends up as a `Score`, and
every encoding turns a `Score` into token ids and back. Nothing here touches a MIDI library.

Units: times are in quarter notes (float64, exact for any file resolution); `seconds()` converts
through the tempo map. Pitches and velocities are MIDI numbers 0-127.
May import: nothing in musiclstm (numpy only).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field

import numpy as np

DEFAULT_QPM = 120.0


@dataclass(frozen=True)
class Track:
    """One instrument: a General MIDI program (0-127), whether it is drums (channel 10), a name."""

    program: int = 0
    is_drum: bool = False
    name: str = ""


# what a track does in the arrangement; a track's role comes from its name, else from its program
ROLES = ("other", "melody", "counter-melody", "accompaniment", "bass", "drums")
_ROLE_WORDS = (  # checked in this order: "Bg Vocals" is a counter-melody before "vocal" makes it the melody
    (5, r"drum|perc|kit"),
    (4, r"bass(?!oon)|basse|bajo"),
    (2, r"bridge|counter|alto|tenor|\bbg\b|back|harmony|second|2nd|obbligato"),
    (1, r"melod|lead|vocal|voca\b|voice|vox|sing|soprano|chant|tune|theme"),
    (3, r"piano|keys|gtr|guitar|organ|pad|string|chord|rhythm|accomp|choir|harp|rhodes"),
)


def track_role(track: Track) -> int:
    """Index into `ROLES`: drums by channel, then by words in the name (MELODY, BRIDGE, PIANO, Bass ...),
    then bass by program (32-39); "other" when nothing says."""
    if track.is_drum:
        return 5
    name = track.name.lower()
    for role, words in _ROLE_WORDS:
        if re.search(words, name):
            return role
    return 4 if 32 <= track.program <= 39 else 0


@dataclass
class Score:
    """Notes of all tracks, one row per note, plus the tempo, meter, key and pedal maps.

    Arrays (length N notes): `start`, `end` in quarter notes; `pitch`, `velocity` (0-127);
    `track` indexes `tracks`. Maps: `tempos` (K, 2) of (quarter, qpm), sorted, starting at 0 (120 qpm
    until the first given tempo when it comes later, as in MIDI);
    `time_signatures` (M, 3) of (quarter, numerator, denominator); `key_signatures` (J, 3) of
    (quarter, key 0-11 (C=0), minor 0/1); `pedals` (P, 3) of (track, down quarter, up quarter).
    """

    start: np.ndarray
    end: np.ndarray
    pitch: np.ndarray
    velocity: np.ndarray
    track: np.ndarray
    tracks: list[Track] = field(default_factory=list)
    tempos: np.ndarray = field(default_factory=lambda: np.array([[0.0, DEFAULT_QPM]]))
    time_signatures: np.ndarray = field(default_factory=lambda: np.array([[0.0, 4, 4]]))
    key_signatures: np.ndarray = field(default_factory=lambda: np.zeros((0, 3)))
    pedals: np.ndarray = field(default_factory=lambda: np.zeros((0, 3)))
    source: str = "<score>"

    def __post_init__(self) -> None:
        self.start = np.asarray(self.start, dtype=np.float64)
        self.end = np.asarray(self.end, dtype=np.float64)
        self.pitch = np.asarray(self.pitch, dtype=np.int64)
        self.velocity = np.asarray(self.velocity, dtype=np.int64)
        self.track = np.asarray(self.track, dtype=np.int64)
        # before the first tempo / meter event MIDI plays at 120 qpm in 4/4 (the standard's defaults),
        # not at the first event's value: a file whose first tempo comes later keeps its opening time
        self.tempos = np.asarray(self.tempos, dtype=np.float64).reshape(-1, 2)
        self.tempos = self.tempos[np.argsort(self.tempos[:, 0], kind="stable")]
        if len(self.tempos) == 0 or self.tempos[0, 0] > 0:
            self.tempos = np.vstack([[0.0, DEFAULT_QPM], self.tempos])
        self.time_signatures = np.asarray(self.time_signatures, dtype=np.float64).reshape(-1, 3)
        self.time_signatures = self.time_signatures[np.argsort(self.time_signatures[:, 0], kind="stable")]
        if len(self.time_signatures) == 0 or self.time_signatures[0, 0] > 0:
            self.time_signatures = np.vstack([[0.0, 4, 4], self.time_signatures])
        self.key_signatures = np.asarray(self.key_signatures, dtype=np.float64).reshape(-1, 3)
        self.pedals = np.asarray(self.pedals, dtype=np.float64).reshape(-1, 3)

    @classmethod
    def from_notes(cls, notes, *, program: int = 0, is_drum: bool = False, qpm: float = DEFAULT_QPM,
                   **maps) -> Score:
        """A one-track score from (start, end, pitch, velocity) rows in quarter notes."""
        a = np.asarray(notes, dtype=np.float64).reshape(-1, 4)
        return cls(a[:, 0], a[:, 1], a[:, 2], a[:, 3], np.zeros(len(a)),
                   tracks=[Track(program, is_drum)], tempos=[[0.0, qpm]], **maps)

    def __len__(self) -> int:
        return len(self.start)

    @property
    def is_drum(self) -> np.ndarray:
        """(N,) bool: whether each note is on a drum track."""
        flags = np.array([t.is_drum for t in self.tracks] or [False], dtype=bool)
        return flags[self.track] if len(self) else np.zeros(0, dtype=bool)

    @property
    def program(self) -> np.ndarray:
        """(N,) int: each note's General MIDI program."""
        progs = np.array([t.program for t in self.tracks] or [0], dtype=np.int64)
        return progs[self.track] if len(self) else np.zeros(0, dtype=np.int64)

    @property
    def role(self) -> np.ndarray:
        """(N,) int: each note's track role (index into `ROLES`)."""
        roles = np.array([track_role(t) for t in self.tracks] or [0], dtype=np.int64)
        return roles[self.track] if len(self) else np.zeros(0, dtype=np.int64)

    def seconds(self, quarters) -> np.ndarray:
        """Quarter-note times -> seconds through the tempo map (vectorized, float64)."""
        q = np.asarray(quarters, dtype=np.float64)
        at, qpm = self.tempos[:, 0], self.tempos[:, 1]
        sec_at = np.concatenate([[0.0], np.cumsum(np.diff(at) * 60.0 / qpm[:-1])])
        k = np.clip(np.searchsorted(at, q, side="right") - 1, 0, len(at) - 1)
        return sec_at[k] + (q - at[k]) * 60.0 / qpm[k]

    def quarters(self, seconds) -> np.ndarray:
        """Seconds -> quarter-note times: the inverse of `seconds`."""
        s = np.asarray(seconds, dtype=np.float64)
        at, qpm = self.tempos[:, 0], self.tempos[:, 1]
        sec_at = self.seconds(at)
        k = np.clip(np.searchsorted(sec_at, s, side="right") - 1, 0, len(at) - 1)
        return at[k] + (s - sec_at[k]) * qpm[k] / 60.0

    @property
    def duration_seconds(self) -> float:
        """Time of the last note end, in seconds (0 for an empty score)."""
        return float(self.seconds(self.end.max())) if len(self) else 0.0

    def select(self, mask: np.ndarray) -> Score:
        """A copy holding only the notes where `mask` is true (maps and tracks kept)."""
        return Score(self.start[mask], self.end[mask], self.pitch[mask], self.velocity[mask],
                     self.track[mask], list(self.tracks), self.tempos, self.time_signatures,
                     self.key_signatures, self.pedals, self.source)

    def crop(self, quarters: float) -> Score:
        """The notes that start before `quarters`, cut to end there: the opening of a piece."""
        s = self.select(self.start < quarters)
        s.end = np.minimum(s.end, quarters)
        return s

    def sorted(self) -> Score:
        """A copy with notes ordered by (start, track, pitch)."""
        order = np.lexsort((self.pitch, self.track, self.start))
        return self.select(order)


# Krumhansl & Kessler (1982) key profiles, C major and C minor
KK_MAJOR = np.array([6.35, 2.23, 3.48, 2.33, 4.38, 4.09, 2.52, 5.19, 2.39, 3.66, 2.29, 2.88])
KK_MINOR = np.array([6.33, 2.68, 3.52, 5.38, 2.60, 3.53, 2.54, 4.75, 3.98, 2.69, 3.34, 3.17])


# the 24 key profiles (C..B major, then C..B minor), centred and of unit length: r = _KEYS @ centred w / |w|
_KEYS = np.stack([np.roll(p, t) for p in (KK_MAJOR, KK_MINOR) for t in range(12)])
_KEYS = (_KEYS - _KEYS.mean(1, keepdims=True)) / np.linalg.norm(_KEYS - _KEYS.mean(1, keepdims=True), axis=1)[:, None]


def key_fit(weights: np.ndarray) -> tuple[int, bool, float]:
    """Krumhansl-Schmuckler: (tonic 0-11, minor, Pearson r) of the best of the 24 keys for a
    pitch-class weight vector; (0, False, NaN) when it is flat or empty."""
    w = np.asarray(weights, float)
    if w.sum() <= 0 or w.std() == 0:
        return 0, False, float("nan")
    c = w - w.mean()
    r = _KEYS @ c / np.linalg.norm(c)  # (24,) every key's r at once (corpus preparation calls this per file)
    top = np.argsort(-r, kind="stable")[:2]
    if r[top[0]] - r[top[1]] > 1e-9:  # a clear winner: the same as the loop below finds, in one product
        tonic, minor = int(top[0]) % 12, bool(top[0] >= 12)
        return tonic, minor, float(np.corrcoef(w, np.roll(KK_MINOR if minor else KK_MAJOR, tonic))[0, 1])
    best = (0, False, -2.0)  # a near tie: decided exactly as it always was, first best in key order
    for minor, prof in ((False, KK_MAJOR), (True, KK_MINOR)):
        for tonic in range(12):
            r = float(np.corrcoef(w, np.roll(prof, tonic))[0, 1])
            if r > best[2]:
                best = (tonic, minor, r)
    return best


def bar_lines(score: Score, end: float | None = None) -> np.ndarray:
    """Start (in quarters) of every bar from 0 to `end` [the last note's end], from the time signatures."""
    end = float(score.end.max()) if end is None and len(score) else (end or 0.0)
    ts = score.time_signatures
    out = []
    for i, (at, num, den) in enumerate(ts):
        nxt = ts[i + 1, 0] if i + 1 < len(ts) else max(end, at + 1e-9)
        length = num * 4.0 / den
        if nxt <= at or length <= 0:
            continue  # a signature replaced at the same time
        out.append(at + length * np.arange(math.ceil((nxt - at) / length - 1e-9)))
    return np.concatenate(out) if out else np.zeros(1)


def tracks_by_height(score: Score) -> np.ndarray:
    """The tracks that have notes in `score`, highest mean pitch first (ties: the lower track first).
    The one ordering of parts by height: voices of a grid, a harmonizer's SATB, the music statistics."""
    tracks = np.unique(score.track).astype(np.int64)
    means = np.array([score.pitch[score.track == k].mean() for k in tracks])
    return tracks[np.argsort(-means, kind="stable")] if len(tracks) else tracks


def bar_contents(score: Score, bars: np.ndarray | None = None, grid: int = 12) -> list[np.ndarray]:
    """Per bar, its pitched notes as (onset in the bar, pitch, duration) rows on a `grid`-per-quarter grid
    (12: remi's 16ths and triplets), sorted."""
    s = score.select(~score.is_drum)
    bars = bar_lines(s) if bars is None else bars
    idx = np.searchsorted(bars, s.start + 1e-9, side="right") - 1
    rows = np.stack([np.round((s.start - bars[np.clip(idx, 0, None)]) * grid), s.pitch,
                     np.round((s.end - s.start) * grid)], 1).astype(np.int64)
    out = []
    for i in range(len(bars)):
        r = rows[idx == i]
        out.append(r[np.lexsort((r[:, 2], r[:, 1], r[:, 0]))])
    return out


def first_copies(score: Score, bars: np.ndarray | None = None, *, transposed: bool = False) -> np.ndarray:
    """Per bar, the index of the first bar with the same notes (itself when new; with `transposed`,
    at any pitch); -1 for an empty bar."""
    first: dict[bytes, int] = {}
    out = []
    for i, r in enumerate(bar_contents(score, bars)):
        if len(r) == 0:
            out.append(-1)
            continue
        if transposed:
            r = r - [0, r[:, 1].min(), 0]
        out.append(first.setdefault(r.tobytes(), i))
    return np.array(out, np.int64)
