"""Music statistics of one `Score`, as a listener would judge it: tonality, melody, arrangement, rhythm, form,
voices, ending.

Every function takes a `Score` (times in quarters; drum notes are ignored) and returns plain floats
(NaN where the statistic does not apply, e.g. intervals of a one-note piece). Definitions follow
MusPy (Dong et al., ISMIR 2020, `muspy.metrics`) where it has one: `scale_consistency`,
`pitch_class_entropy`, `empty_beat_rate`, `groove_consistency`. Keys are Krumhansl-Schmuckler
(duration-weighted pitch classes correlated with the Krumhansl-Kessler profiles, as music21's
`analyze('key.krumhansl')`). `evaluate` applies them identically to samples and held-out pieces.
May import: theory, io.score. Not: encodings, data, models, training, generation, app.
"""

from __future__ import annotations

import math

import numpy as np

from ..io.score import ROLES, Score, bar_contents, bar_lines, first_copies, key_fit, tracks_by_height
from ..theory import SATB_RANGES, parallels, scale, scale_consistency

NAN = float("nan")
GRID = 12  # ticks per quarter for comparing onsets and durations (remi's grid: 16ths and triplets)


# ---- preparing a piece ------------------------------------------------------------------------
def pitched(score: Score) -> Score:
    """The score without its drum notes, in (start, pitch) order."""
    s = score.select(~score.is_drum)
    return s.select(np.lexsort((s.pitch, s.start)))




def trim(score: Score) -> Score:
    """Drop leading empty bars (whole bars, so bar lines stay where they were)."""
    if len(score) == 0:
        return score
    bars = bar_lines(score)
    first = bars[max(0, np.searchsorted(bars, score.start.min(), side="right") - 1)]
    if first <= 0:
        return score
    s = score.select(np.ones(len(score), bool))
    s.start, s.end = s.start - first, s.end - first
    ts = score.time_signatures.copy()
    keep = np.r_[ts[1:, 0] > first, True]  # the signature in force at `first` moves to 0
    ts = ts[keep]
    ts[:, 0] = np.maximum(ts[:, 0] - first, 0)
    s.time_signatures = ts
    tempos = score.tempos.copy()
    tempos = tempos[np.r_[tempos[1:, 0] > first, True]]
    tempos[:, 0] = np.maximum(tempos[:, 0] - first, 0)
    s.tempos = tempos
    return s


def excerpt(score: Score, quarters: float = 60.0) -> Score:
    """The piece as compared: leading empty bars trimmed, cut to `quarters`, drums dropped."""
    return pitched(trim(pitched(score)).crop(quarters))


def shuffle_pitches(score: Score, rng: np.random.Generator) -> Score:
    """The same rhythm and pitch collection with the pitches randomly permuted (melody destroyed)."""
    s = score.select(np.ones(len(score), bool))
    s.pitch = rng.permutation(s.pitch)
    return s


def onset_slices(score: Score) -> tuple[np.ndarray, np.ndarray]:
    """Distinct onset times (on the `GRID`) and an (onsets, notes) bool matrix of the notes sounding at each
    (a performed onset off the grid counts at its grid point)."""
    start = np.round(score.start * GRID) / GRID
    t = np.unique(start)
    sounding = (start[None, :] <= t[:, None] + 1e-6) & (score.end[None, :] > t[:, None] + 1e-6)
    return t, sounding


def top_line(score: Score) -> np.ndarray:
    """The melody as heard on top (skyline): at each onset the highest new note, unless a higher note
    that started earlier is still sounding."""
    s = pitched(score)
    if len(s) == 0:
        return np.zeros(0, np.int64)
    t, sounding = onset_slices(s)
    on = np.abs(np.round(s.start * GRID)[None, :] / GRID - t[:, None]) < 1e-6
    new_top = np.where(on, s.pitch[None, :], -1).max(1)
    held_top = np.where(sounding & ~on, s.pitch[None, :], -1).max(1)
    return new_top[(new_top >= 0) & (new_top >= held_top)]


# ---- tonality ----------------------------------------------------------------------------------
def _pc_durations(s: Score) -> np.ndarray:
    return np.bincount(s.pitch % 12, weights=s.end - s.start, minlength=12)


def key(score: Score) -> tuple[int, bool, float]:
    """The piece's key (duration-weighted Krumhansl-Schmuckler): (tonic, minor, correlation)."""
    return key_fit(_pc_durations(pitched(score)))


def tonality(score: Score, window_bars: int = 4) -> dict[str, float]:
    """in_scale (MusPy `scale_consistency`: share of notes in the best major/natural-minor scale),
    key_correlation (piece), window_key_correlation (mean over `window_bars`-bar windows),
    window_key_changes (share of windows whose key differs from the previous window's),
    pitch_class_entropy (MusPy, bits)."""
    s = pitched(score)
    if len(s) == 0:
        return dict.fromkeys(("in_scale", "key_correlation", "window_key_correlation", "window_key_changes",
                              "pitch_class_entropy"), NAN)
    h = np.bincount(s.pitch % 12, minlength=12)
    in_scale = scale_consistency(h)
    p = h[h > 0] / h.sum()
    bars = bar_lines(s)
    edges = np.r_[bars[::window_bars], np.inf]
    keys, rs = [], []
    for a, b in zip(edges[:-1], edges[1:], strict=True):
        w = s.select((s.start >= a) & (s.start < b))
        if len(w):
            tonic, minor, r = key_fit(_pc_durations(w))
            if not math.isnan(r):
                keys.append((tonic, minor))
                rs.append(r)
    changes = np.mean([a != b for a, b in zip(keys[:-1], keys[1:], strict=True)]) if len(keys) > 1 else NAN
    return {"in_scale": float(in_scale), "key_correlation": key(s)[2],
            "window_key_correlation": float(np.mean(rs)) if rs else NAN, "window_key_changes": float(changes),
            "pitch_class_entropy": float(-(p * np.log2(p)).sum())}


# ---- melody ----------------------------------------------------------------------------------
def melody(score: Score) -> dict[str, float]:
    """Intervals of the top line: steps (1-2 semitones), skips (3-4), leaps (>= 5), repeated (0)
    as shares of all intervals; longest_repeat: the longest run of one pitch, in notes."""
    line = top_line(score)
    if len(line) < 2:
        return {"steps": NAN, "skips": NAN, "leaps": NAN, "repeated": NAN, "longest_repeat": float(len(line))}
    iv = np.abs(np.diff(line))
    change = np.flatnonzero(np.r_[True, iv != 0, True])  # run boundaries
    return {"steps": float(((iv >= 1) & (iv <= 2)).mean()), "skips": float(((iv >= 3) & (iv <= 4)).mean()),
            "leaps": float((iv >= 5).mean()), "repeated": float((iv == 0).mean()),
            "longest_repeat": float(np.diff(change).max())}


# ---- rhythm ----------------------------------------------------------------------------------
def rhythm(score: Score) -> dict[str, float]:
    """empty_beat_rate (MusPy: beats, i.e. quarters, in which no note sounds), groove_consistency
    (MusPy / Wu & Yang 2020: 1 - mean Hamming distance of neighbouring bars' onset patterns on a
    12-per-quarter grid), notes per quarter in the first and last third, longest_silence (quarters)."""
    s = pitched(score)
    keys = ("empty_beat_rate", "groove_consistency", "density_first_third", "density_last_third", "longest_silence")
    if len(s) == 0:
        return dict.fromkeys(keys, NAN)
    length = float(s.end.max())
    beats = np.zeros(max(1, math.ceil(length - 1e-9)), bool)
    for a, b in zip(np.floor(s.start + 1e-9).astype(int), np.ceil(s.end - 1e-9).astype(int), strict=True):
        beats[a:max(b, a + 1)] = True
    bars = bar_lines(s)
    ends = np.r_[bars[1:], max(length, bars[-1] + 1e-9)]
    pats = []
    for a, b in zip(bars, ends, strict=True):
        pat = np.zeros(max(1, round((b - a) * GRID)), bool)
        pos = np.round((s.start[(s.start >= a) & (s.start < b)] - a) * GRID).astype(int)
        pat[np.clip(pos, 0, len(pat) - 1)] = True
        pats.append(pat)
    dist = [np.mean(p != q) for p, q in zip(pats[:-1], pats[1:], strict=True) if len(p) == len(q)]
    covered = np.maximum.accumulate(s.end)  # notes are in start order: the end of all sound so far
    gaps = np.r_[s.start[0], s.start[1:] - covered[:-1]]
    third = length / 3
    return {"empty_beat_rate": float(1 - beats.mean()),
            "groove_consistency": float(1 - np.mean(dist)) if dist else NAN,
            "density_first_third": float((s.start < third).sum() / third),
            "density_last_third": float((s.start >= 2 * third).sum() / third),
            "longest_silence": float(max(0.0, gaps.max()))}


# ---- form ------------------------------------------------------------------------------------
def repeated_bars(score: Score, bars: np.ndarray | None = None, *, transposed: bool = False) -> np.ndarray:
    """Per bar, whether it repeats an earlier non-empty bar note for note (onset in the bar, pitch,
    duration) or, with `transposed`, at another pitch. Empty bars never repeat."""
    first = first_copies(score, bars, transposed=transposed)
    return (first >= 0) & (first < np.arange(len(first)))


def repeat_distances(score: Score, bars: np.ndarray | None = None) -> np.ndarray:
    """Per non-empty bar, the distance in bars to its nearest earlier exact copy (same onsets in the bar,
    pitches and durations); 0 for a bar that repeats none."""
    seen: dict[bytes, int] = {}
    out = []
    for i, r in enumerate(bar_contents(score, bars)):
        if len(r):
            k = r.tobytes()
            out.append(i - seen[k] if k in seen else 0)
            seen[k] = i
    return np.array(out, np.int64)


def returns(score: Score, phrase: int = 8) -> dict[str, float]:
    """Form you can hear: repeated_bars_exact, the share of non-empty bars that repeat an earlier bar note
    for note (the share written as REPEAT tokens in remi 3); longest_repeat_run, the longest run of such
    bars, in bars (a loop is as wrong as no form); looping, 1 when more than 70 % of the bars repeat;
    phrases_return, the share of `phrase`-bar phrases (from bar 1, whole and non-empty) that come back
    note for note later in the piece (NaN when it has none)."""
    contents = bar_contents(score)
    rep = repeat_distances(score) > 0
    if not len(rep):
        return {"repeated_bars_exact": NAN, "longest_repeat_run": NAN, "looping": NAN, "phrases_return": NAN}
    run = longest = 0
    for r in rep:
        run = run + 1 if r else 0
        longest = max(longest, run)
    keys = [r.tobytes() for r in contents]
    n = len(contents)
    back = []
    for j in range(0, n - phrase + 1, phrase):
        if all(len(r) for r in contents[j:j + phrase]):
            span = keys[j:j + phrase]
            back.append(any(keys[k:k + phrase] == span for k in range(j + 1, n - phrase + 1)))
    return {"repeated_bars_exact": float(rep.mean()), "longest_repeat_run": float(longest),
            "looping": float(rep.mean() > 0.7), "phrases_return": float(np.mean(back)) if back else NAN}


def distance_overlap(a: np.ndarray, b: np.ndarray) -> float:
    """Overlap (sum of the smaller share per distance, 0..1) of two histograms of repeat distances."""
    a, b = np.asarray(a, np.int64), np.asarray(b, np.int64)
    if not len(a) or not len(b):
        return NAN
    n = int(max(a.max(), b.max())) + 1
    pa, pb = np.bincount(a, minlength=n) / len(a), np.bincount(b, minlength=n) / len(b)
    return float(np.minimum(pa, pb).sum())


def form(score: Score, phrase: int = 4) -> dict[str, float]:
    """repeated_bars: share of non-empty bars that repeat an earlier bar exactly or transposed;
    repeated_phrase_bars: share inside a `phrase`-bar span repeating an earlier span (transposed as
    a whole allowed); distinct_interval_4grams: distinct / all 4-grams of top-line intervals
    (1 = no melodic figure ever recurs)."""
    contents = bar_contents(score)
    full = np.array([len(r) > 0 for r in contents])
    if not full.any():
        return {"repeated_bars": NAN, "repeated_phrase_bars": NAN, "distinct_interval_4grams": NAN}
    rep = repeated_bars(score, transposed=True)
    in_phrase = np.zeros(len(contents), bool)
    seen = set()
    for j in range(len(contents) - phrase + 1):
        span = contents[j:j + phrase]
        if not full[j:j + phrase].all():
            continue
        low = min(r[:, 1].min() for r in span)
        k = b"|".join((r - [0, low, 0]).tobytes() for r in span)
        if k in seen:
            in_phrase[j:j + phrase] = True
        seen.add(k)
    iv = np.diff(top_line(score))
    grams = [tuple(iv[i:i + 4]) for i in range(len(iv) - 3)]
    return {"repeated_bars": float(rep[full].mean()), "repeated_phrase_bars": float(in_phrase[full].mean()),
            "distinct_interval_4grams": len(set(grams)) / len(grams) if grams else NAN}


# ---- voices ----------------------------------------------------------------------------------
def voice_count(score: Score) -> int:
    """Separable voices: the number of pitched tracks when there are several, else the number of notes
    sounding at 80 % or more of the onsets (a chorale merged into one track: 4), else 1."""
    s = pitched(score)
    n_tracks = len(np.unique(s.track))
    if n_tracks > 1:
        return n_tracks
    if len(s) == 0:
        return 1
    counts = onset_slices(s)[1].sum(1)
    mode = int(np.bincount(counts).argmax())
    return mode if (counts == mode).mean() >= 0.8 else 1


def voices(score: Score, n_voices: int | None = None, by_track: bool | None = None) -> dict[str, float]:
    """Between adjacent voices (top first), per 100 beats (quarters): parallel_fifths and
    parallel_octaves (both voices move the same way and form a perfect fifth, resp. octave, modulo
    octaves, before and after), voice_crossings (the lower voice above the upper: several tracks
    only); out_of_range: share of voice notes outside the SATB ranges (four voices only);
    overfull_onsets: share of onsets with more notes sounding than voices. Voices are the tracks
    (ordered by mean pitch) when there are several, else the notes sounding, ranked by pitch, at
    onsets where exactly `n_voices` sound (`by_track` forces one way; pieces compared with each other
    should be read the same way). NaN for fewer than two voices."""
    s = pitched(score)
    tracks = np.unique(s.track)
    by_track = len(tracks) > 1 if by_track is None else by_track and len(tracks) > 1
    n = len(tracks) if by_track else (n_voices or voice_count(s))
    keys = ("parallel_fifths", "parallel_octaves", "voice_crossings", "out_of_range", "overfull_onsets")
    if n < 2 or len(s) == 0 or (n_voices is not None and n_voices < 2):
        return dict.fromkeys(keys, NAN)
    t, sounding = onset_slices(s)
    grid = np.full((len(t), n), -1)  # pitch of each voice at each onset, -1: silent or unknown
    if by_track:
        for v, k in enumerate(tracks_by_height(s)):
            grid[:, v] = np.where(sounding & (s.track == k)[None, :], s.pitch[None, :], -1).max(1)
    else:
        for i in np.flatnonzero(sounding.sum(1) == n):
            grid[i] = np.sort(s.pitch[sounding[i]])[::-1]
    fifths = octaves = crossings = 0
    for v in range(n - 1):
        hi, lo = grid[:, v], grid[:, v + 1]
        ok = (hi >= 0) & (lo >= 0)
        crossings += int((ok & (hi < lo)).sum())
        both = ok[:-1] & ok[1:]
        fifth, octave, _ = parallels(hi[:-1], lo[:-1], hi[1:], lo[1:])
        fifths += int((both & fifth).sum())
        octaves += int((both & octave).sum())
    beats = max(float(s.end.max()), 1.0)
    out_of_range = NAN
    if n == 4:
        lo_r, hi_r = np.array(SATB_RANGES).T
        known = grid >= 0
        out_of_range = float(((grid < lo_r) | (grid > hi_r))[known].mean()) if known.any() else NAN
    return {"parallel_fifths": 100 * fifths / beats, "parallel_octaves": 100 * octaves / beats,
            "voice_crossings": 100 * crossings / beats if by_track else NAN, "out_of_range": out_of_range,
            "overfull_onsets": float((sounding.sum(1) > n).mean())}


def _part_grid(s: Score) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Onset times, (onsets, tracks) pitch of each track (highest mean pitch first; -1 silent) and the
    track order, for a piece written in parts (one voice per track)."""
    order = tracks_by_height(s)
    t, sounding = onset_slices(s)
    grid = np.stack([np.where(sounding & (s.track == k)[None, :], s.pitch[None, :], -1).max(1) for k in order], 1)
    return t, grid, order


def chorale(score: Score, key: tuple[int, bool] | None = None) -> dict[str, float]:
    """Four-part writing (four tracks, soprano to bass), beyond `voices`:
    spacing: per 100 beats, onsets where soprano and alto, or alto and tenor, are more than an octave
    apart; out_of_key: share of the alto, tenor and bass notes outside `key` (tonic, minor) [the
    piece's own], the major scale or the minor with its raised sixth and seventh; cadences: share of
    the soprano's long notes (two beats or more: where chorale phrases end, at their fermatas)
    sounding over a root-position major or minor triad (the bass on the root, the third present, the
    fifth optional, no other pitch class).
    NaN unless the piece has four pitched tracks."""
    s = pitched(score)
    keys = ("spacing", "out_of_key", "cadences")
    if len(np.unique(s.track)) != 4:
        return dict.fromkeys(keys, NAN)
    t, grid, order = _part_grid(s)
    on = grid >= 0
    wide = ((on[:, 0] & on[:, 1] & (grid[:, 0] - grid[:, 1] > 12)) |
            (on[:, 1] & on[:, 2] & (grid[:, 1] - grid[:, 2] > 12)))
    beats = max(float(s.end.max()), 1.0)
    tonic, minor = key if key is not None else key_fit(_pc_durations(s))[:2]
    in_key = np.isin(s.pitch % 12, sorted(scale(tonic, minor)))
    lower = s.track != order[0]
    top = s.select(s.track == order[0])
    long_at = top.start[top.end - top.start >= 2 - 1e-6]
    good = []
    for at in long_at:
        i = int(np.argmin(np.abs(t - at)))
        if (grid[i] < 0).any():
            good.append(False)
            continue
        root = grid[i, 3] % 12
        pcs = {int(p - root) % 12 for p in grid[i]}
        good.append(pcs <= {0, 4, 7} and 4 in pcs or pcs <= {0, 3, 7} and 3 in pcs)
    return {"spacing": 100 * float(wide.sum()) / beats,
            "out_of_key": float((~in_key[lower]).mean()) if lower.any() else NAN,
            "cadences": float(np.mean(good)) if good else NAN}


# ---- arrangement ------------------------------------------------------------------------------
def arrangement(score: Score) -> dict[str, float]:
    """Tracks by role (`io.score.track_role`: the track's name, else its program). melody_over_accompaniment: 1
    where a melody track sounds above (higher mean pitch than) a pitched track of another role, else 0 (a single
    track, or no melody); melody_steps: the share of steps (1-2 semitones) in the melody tracks' own top line
    (NaN without a melody track)."""
    s = pitched(score)
    if len(s) == 0:
        return {"melody_over_accompaniment": NAN, "melody_steps": NAN}
    role = s.role
    lead = role == ROLES.index("melody")
    below = [s.pitch[(s.track == k) & ~lead].mean() for k in np.unique(s.track[~lead])]
    over = bool(lead.any() and below and s.pitch[lead].mean() > min(below))
    steps = melody(s.select(lead))["steps"] if lead.sum() > 1 else NAN
    return {"melody_over_accompaniment": float(over), "melody_steps": steps}


# ---- endings and everything --------------------------------------------------------------------
def ending(score: Score) -> dict[str, float]:
    """last_bass_on_tonic: whether the lowest note of the last onset is the tonic of the piece's key."""
    s = pitched(score)
    if len(s) == 0:
        return {"last_bass_on_tonic": NAN}
    last = s.pitch[np.abs(s.start - s.start.max()) < 1e-6].min()
    tonic, _, r = key(s)
    return {"last_bass_on_tonic": NAN if math.isnan(r) else float(last % 12 == tonic)}


def statistics(score: Score, n_voices: int | None = None, by_track: bool | None = None) -> dict[str, float]:
    """Every statistic above of one (already trimmed and cropped) piece, in one flat dict."""
    return {**tonality(score), **melody(score), **arrangement(score), **rhythm(score), **form(score),
            **returns(score), **voices(score, n_voices, by_track)}
