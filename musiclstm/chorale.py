"""Harmonize a melody, rewrite chosen bars: a bidirectional LSTM over four-part chorales.

DeepBach (Hadjeres, Pachet & Nielsen 2017) predicts each note of a chorale from an LSTM that reads
the past, one that reads the future and a small network that reads the other voices at that step,
and samples by pseudo-Gibbs: notes are redrawn a few at a time, each given everything else.
This module does the same with one network for all four voices:

* A chorale is a 16th-note grid of four cells per step (Soprano, Alto, Tenor, Bass), each a `grid`
  token: PITCH p (a note starts), HOLD (the voice's note goes on) or REST, or MASK (unknown).
* `Harmonizer`: the four cells' embeddings and the position in the beat (DeepBach's metadata) go
  into a bidirectional LSTM, whose forward half at step t has read steps <= t and backward half
  steps >= t; a "center" layer reads step t's own cells; four heads predict the voices' cells.
* Training (`train`), as in Coconet (Huang et al. 2017): random cells are replaced by MASK and the
  loss is the NLL of the masked cells. Masks are of three kinds: the lower voices with the soprano
  given (harmonizing), any voice (general context), and blocks of beats in some voices (infilling).
  Pieces are transposed at random to the keys the voice ranges allow.
* Sampling (`gibbs`): every free cell starts as MASK; each iteration masks a share of the free cells
  that anneals from all to 5 % (Coconet's schedule) and redraws them from the model, with each
  voice kept in its range, in the key, and HOLD only after a sounding note.

`harmonize(melody)` and `infill(piece, bars="5-8")` return a `pretty_midi.PrettyMIDI`.
"""

from __future__ import annotations

import json
import math
import re
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .errors import ConfigError, MusiclstmError
from .score import Score, Track, key_fit

VOICES = ("Soprano", "Alto", "Tenor", "Bass")
STEPS = 4  # grid steps per quarter note (16ths)
KIND = "harmonizer"  # the checkpoint's model kind
PROGRAM = 52  # Choir Aahs
NOTE_NAMES = ("C", "C#", "D", "Eb", "E", "F", "F#", "G", "Ab", "A", "Bb", "B")


# ---- the network -----------------------------------------------------------------------------------
@dataclass
class HarmonizerConfig:
    vocab_size: int
    embed: int = 64
    hidden: int = 256
    layers: int = 2
    dropout: float = 0.2
    kind: str = KIND


class Harmonizer(nn.Module):
    """(B, T, 4) cell ids (MASK = vocab_size) and (B, T) beat positions -> (B, T, 4, vocab) logits."""

    def __init__(self, config: HarmonizerConfig):
        super().__init__()
        self.config = c = config
        E, H = c.embed, c.hidden
        self.cells = nn.ModuleList(nn.Embedding(c.vocab_size + 1, E) for _ in VOICES)
        self.beat = nn.Embedding(STEPS, E)
        self.lstm = nn.LSTM(5 * E, H, c.layers, batch_first=True, bidirectional=True,
                            dropout=c.dropout if c.layers > 1 else 0.0)
        self.center = nn.Sequential(nn.Linear(5 * E, H), nn.ReLU())
        self.drop = nn.Dropout(c.dropout)
        self.heads = nn.ModuleList(nn.Linear(3 * H, c.vocab_size) for _ in VOICES)

    @property
    def mask_id(self) -> int:
        return self.config.vocab_size

    def _inputs(self, cells: torch.Tensor, beat: torch.Tensor) -> torch.Tensor:
        return torch.cat([emb(cells[..., v]) for v, emb in enumerate(self.cells)] + [self.beat(beat)], -1)

    def forward(self, cells: torch.Tensor, beat: torch.Tensor) -> torch.Tensor:
        x = self.drop(self._inputs(cells, beat))
        h, _ = self.lstm(x)
        z = torch.cat([self.drop(h), self.center(x)], -1)
        return torch.stack([head(z) for head in self.heads], 2)

    @torch.no_grad()
    def states(self, cells: torch.Tensor, beat: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The top layer's forward (past) and backward (future) LSTM outputs: two (B, T, hidden)."""
        h, _ = self.lstm(self._inputs(cells, beat))
        return h[..., : self.config.hidden], h[..., self.config.hidden:]

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())


# ---- grids of cells --------------------------------------------------------------------------------
class Cells:
    """Token ids of the grid encoding (hold=True) and conversions between cells and pitches."""

    def __init__(self, tokenizer):
        v = tokenizer.vocab
        self.tokenizer = tokenizer
        self.pitch0, self.rest, self.hold = v.offset["PITCH"], v.id("REST"), v.id("HOLD")
        self.size = v.size

    def pitches(self, cells: np.ndarray) -> np.ndarray:
        """(T, V) cells -> (T, V) sounding MIDI pitch (-1: silent); a HOLD after silence is silent."""
        cells = np.asarray(cells)
        out = np.full(cells.shape, -1, np.int64)
        is_pitch = (cells >= self.pitch0) & (cells < self.pitch0 + 128)
        for t in range(len(cells)):
            out[t] = np.where(is_pitch[t], cells[t] - self.pitch0,
                              np.where((cells[t] == self.hold) & (t > 0), out[t - 1] if t else -1, -1))
        return out

    def onsets(self, cells: np.ndarray) -> np.ndarray:
        return (np.asarray(cells) >= self.pitch0) & (np.asarray(cells) < self.pitch0 + 128)

    def from_pitches(self, pitches: np.ndarray, onset: np.ndarray) -> np.ndarray:
        """(T, V) pitches (-1 silent) and onset flags -> cells."""
        pitches, onset = np.asarray(pitches), np.asarray(onset, bool)
        cells = np.where(pitches < 0, self.rest, self.pitch0 + np.clip(pitches, 0, 127))
        return np.where((pitches >= 0) & ~onset, self.hold, cells).astype(np.int64)

    def transpose(self, cells: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
        """Shift the PITCH cells of each (B, T, V) item by its k (B,) semitones."""
        is_pitch = (cells >= self.pitch0) & (cells < self.pitch0 + 128)
        return torch.where(is_pitch, cells + k.view(-1, 1, 1), cells)


def melody_signature(soprano: np.ndarray, n: int = 8) -> tuple[int, ...]:
    """A melody's opening as transposition-free intervals between its first n+1 different pitches;
    repeated notes are not counted (the JSB arrays do not mark them)."""
    p = [int(x) for x in soprano if x >= 0]
    return tuple(b - a for a, b in zip(p, p[1:], strict=False) if b != a)[:n]


# ---- training --------------------------------------------------------------------------------------
def _grids(corpus, tokenizer, cache_dir=None, val_fraction: float = 0.1, jobs=None):
    """Every piece of `corpus` (at least 16 steps) read by the grid encoding: (T, 4) cells, its file
    name and its split (data.prepare's rule: by content hash, a csv split wins)."""
    from . import data

    prepared = data.prepare(data.as_paths(corpus), tokenizer, val_fraction=val_fraction, cache_dir=cache_dir,
                            jobs=jobs, progress=False)
    pieces = [p for p in prepared.pieces if len(p.ids) % 4 == 0 and len(p.ids) >= 64]
    grids = [np.asarray(p.ids, np.int64).reshape(-1, 4) for p in pieces]  # ids: uint16 views into the token store
    return grids, [str(p.path) for p in pieces], [p.split for p in pieces]


def content_signature(pitches: np.ndarray) -> tuple:
    """A chorale's content, transposition-free: the openings of its soprano and bass lines. The same
    tune harmonized differently by Bach (many chorale tunes recur) has another bass, so another signature."""
    return melody_signature(pitches[:, 0]), melody_signature(pitches[:, -1])


def split_by_melody(grids, cells: Cells, holdout, splits=None) -> tuple[list[int], list[int], int]:
    """Indices of training and validation pieces. With `holdout` (a JSB Chorales .json), a piece with
    the content of a chorale of its test split (`content_signature`) is left out altogether and one
    of its valid split validates; else `splits` (data.prepare's) decide. Returns (train, valid, left out)."""
    if holdout is None:
        splits = splits or ["train"] * len(grids)
        return ([i for i, s in enumerate(splits) if s == "train"], [i for i, s in enumerate(splits) if s == "valid"], 0)
    from .encodings.grid import load_jsb

    jsb = load_jsb(holdout)
    sig = {k: {content_signature(np.nan_to_num(a, nan=-1)) for a in jsb[k]} for k in ("valid", "test")}
    train, valid, out = [], [], 0
    for i, g in enumerate(grids):
        s = content_signature(cells.pitches(g))
        if s in sig["test"]:
            out += 1
        elif s in sig["valid"]:
            valid.append(i)
        else:
            train.append(i)
    return train, valid, out


def _masks(B: int, L: int, valid: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """(B, L, 4) training masks: 40 % harmonizing (random lower-voice cells, the soprano given), 20 %
    any voice, 20 % the lower voices from a random step on (what a left-to-right reading sees), 20 %
    blocks of beats in some voices (infilling)."""
    u = torch.rand(B, generator=gen)
    rate = torch.rand(B, 1, 1, generator=gen)
    rate = torch.where(torch.rand(B, 1, 1, generator=gen) < 0.2, torch.ones_like(rate), rate)
    m = torch.rand(B, L, 4, generator=gen) < rate
    m[u < 0.4, :, 0] = False
    ahead = (u >= 0.6) & (u < 0.8)
    start = torch.randint(0, L, (B, 1), generator=gen)
    m[ahead] = (torch.arange(L)[None, :, None] >= start[:, :, None]).expand(B, L, 4)[ahead]
    m[ahead, :, 0] = False
    for b in torch.nonzero(u >= 0.8).flatten().tolist():
        n = int(valid[b].sum())
        span = 4 * int(torch.randint(1, 17, (1,), generator=gen))
        s = 4 * int(torch.randint(0, max(1, (n - span) // 4 + 1), (1,), generator=gen))
        voices = torch.rand(4, generator=gen) < 0.5
        voices[int(torch.randint(0, 4, (1,), generator=gen))] = True
        m[b] = False
        m[b, s:s + span] = voices
    return m & valid[..., None]


def _batch(grids, idx, L, cells: Cells, shifts, gen, *, crop: bool = True):
    """Crops of L steps (beat-aligned) from pieces `idx`, each transposed by a shift it allows."""
    B = len(idx)
    x = torch.zeros(B, L, 4, dtype=torch.long)
    beat = torch.zeros(B, L, dtype=torch.long)
    valid = torch.zeros(B, L, dtype=torch.bool)
    k = torch.zeros(B, dtype=torch.long)
    for b, i in enumerate(idx):
        g = grids[i]
        s = 4 * int(torch.randint(0, max(1, (len(g) - L) // 4 + 1), (1,), generator=gen)) if crop else 0
        piece = torch.from_numpy(np.array(g[s:s + L], np.int64))
        x[b, :len(piece)], valid[b, :len(piece)] = piece, True
        beat[b] = (torch.arange(L) + s) % STEPS
        if shifts is not None:
            ks = shifts[i]
            k[b] = ks[int(torch.randint(0, len(ks), (1,), generator=gen))]
    return cells.transpose(x, k), beat, valid


def _loss(net: Harmonizer, x, beat, mask) -> torch.Tensor:
    inp = x.masked_fill(mask, net.mask_id)
    logits = net(inp, beat)
    return F.cross_entropy(logits[mask].float(), x[mask])


def voice_ranges(grids, cells: Cells) -> list[tuple[int, int]]:
    """Each voice's range: its lowest and highest pitch but the 0.05 % extremes (a few exported pieces
    put an instrumental line in a voice)."""
    p = np.concatenate([cells.pitches(g) for g in grids])
    return [tuple(int(round(q)) for q in np.percentile(p[:, v][p[:, v] >= 0], [0.05, 99.95])) for v in range(4)]


def in_range(grid, cells: Cells, ranges) -> bool:
    p = cells.pitches(grid)
    return all(((p[:, v] < 0) | ((p[:, v] >= lo) & (p[:, v] <= hi))).all() for v, (lo, hi) in enumerate(ranges))


def _shifts(grid, cells: Cells, ranges) -> list[int]:
    p = cells.pitches(grid)
    fits = [all(((q < 0) | ((q + k >= lo) & (q + k <= hi))).all() for q, (lo, hi) in zip(p.T, ranges, strict=True))
            for k in range(-6, 7)]
    return [k for k, ok in zip(range(-6, 7), fits, strict=True) if ok] or [0]


def _validate(net, grids, idx, cells, L: int = 512) -> float:
    """Validation NLL per masked cell: fixed masks (seed 0) over whole pieces (up to L steps)."""
    net.eval()
    gen = torch.Generator().manual_seed(0)
    total, n = 0.0, 0
    with torch.no_grad():
        for j in range(0, len(idx), 16):
            x, beat, valid = _batch(grids, idx[j:j + 16], L, cells, None, gen, crop=False)
            mask = _masks(len(x), L, valid, gen)
            if mask.any():
                total += float(_loss(net, x, beat, mask)) * int(mask.sum())
                n += int(mask.sum())
    net.train()
    return total / max(1, n)


# TrainConfig fields that a harmonizer's training does not use (refused by the command line)
UNUSED = ("encoding", "windows", "styles", "cell", "tie_weights", "augment_stretch", "precision", "device",
          "sample_tokens", "cache")


def train(corpus, out, *, holdout=None, force: bool = False, progress: bool = True, cache_dir=None,
          preset: str = "small", config_file=None, callback=None, **options) -> Path:
    """Train a harmonizer on the four-part chorales in `corpus`; returns `out`/best.pt.

    Options are `TrainConfig` fields (embed, hidden, layers, dropout, seq_len = steps per window,
    batch_size, lr, max_steps, max_time, anneal_by_time, eval_every, patience, seed, val_fraction,
    augment_transpose: at most this many semitones, to keys the voice ranges allow; not those in
    `UNUSED`). `holdout`: a JSB Chorales .json whose test chorales are left out and whose valid ones
    validate (see `split_by_melody`). Writes last.pt, best.pt, metrics.jsonl and config.json into `out`.
    """
    from tqdm.auto import tqdm

    from . import checkpoint
    from .tokenizer import Tokenizer
    from .train import TrainConfig, _Interrupt, lr_at

    out = Path(out)
    if (out / "last.pt").exists() and not force:
        raise MusiclstmError(f"{out} already holds a run; use --force to start over")
    cfg = TrainConfig.build(preset, config_file, **{"encoding": "grid", "embed": 64, "seq_len": 128, "dropout": 0.2,
                                                    "augment_transpose": 6, "cache": False, "sample_tokens": 0,
                                                    **{k: v for k, v in options.items() if v is not None}})
    torch.manual_seed(cfg.seed)
    tokenizer = Tokenizer("grid", hold=True)
    cells = Cells(tokenizer)
    grids, names, splits = _grids(corpus, tokenizer, cache_dir, cfg.val_fraction, cfg.jobs)
    if len(grids) < 2:
        raise MusiclstmError(f"{corpus}: fewer than two four-part pieces to train a harmonizer on")
    train_idx, valid_idx, left_out = split_by_melody(grids, cells, holdout, splits)
    ranges = voice_ranges([grids[i] for i in train_idx], cells)
    wide = [i for i in train_idx if not in_range(grids[i], cells, ranges)]
    train_idx = [i for i in train_idx if i not in wide]
    shifts = {i: [k for k in _shifts(grids[i], cells, ranges) if abs(k) <= cfg.augment_transpose] or [0]
              for i in train_idx}
    net = Harmonizer(HarmonizerConfig(tokenizer.vocab_size, cfg.embed, cfg.hidden, cfg.layers, cfg.dropout))
    opt = torch.optim.AdamW(net.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    gen = torch.Generator().manual_seed(cfg.seed)
    steps_in = sum(len(grids[i]) for i in train_idx)
    per_epoch = max(1, steps_in // (cfg.batch_size * cfg.seq_len))
    total = min(cfg.epochs * per_epoch, cfg.max_steps or 10**12)
    eval_every = cfg.eval_every or per_epoch
    out.mkdir(parents=True, exist_ok=True)
    for old in ("metrics.jsonl", "best.pt", "last.pt"):
        (out / old).unlink(missing_ok=True)
    data_info = {"files": len(grids), "train": len(train_idx), "valid": len(valid_idx), "left_out": left_out,
                 "out_of_range": [Path(names[i]).name for i in wide],
                 "steps": steps_in, "holdout": Path(holdout).name if holdout else None}
    (out / "config.json").write_text(json.dumps({"train": asdict(cfg), "data": data_info, "ranges": ranges}, indent=2))
    weights = np.array([len(grids[i]) for i in train_idx], float)
    weights /= weights.sum()
    rng = np.random.default_rng(cfg.seed)
    best, bad, history = float("inf"), 0, []

    def meta(step: int) -> dict:
        return {"step": step, "train": asdict(cfg), "data": data_info, "ranges": ranges, "best_val_nll": best,
                "metrics": history[-1] if history else {}, "torch": torch.__version__}

    if progress:
        tqdm.write(f"harmonizer: {len(train_idx)} training and {len(valid_idx)} validation chorales"
                   + (f", {left_out} left out (the content of a chorale of the test split of "
                      f"{Path(holdout).name})" if holdout else "")
                   + f"; {net.num_parameters():,} parameters")
    bar = tqdm(total=total, desc="training", unit="step", disable=not progress, dynamic_ncols=True)
    t0, step, loss_sum, loss_n = time.time(), 0, 0.0, 0
    stop = _Interrupt()
    with stop:
        while step < total and not stop.flag:
            if cfg.max_time is not None and time.time() - t0 > cfg.max_time:
                break
            idx = rng.choice(train_idx, size=cfg.batch_size, p=weights).tolist()
            x, beat, valid = _batch(grids, idx, cfg.seq_len, cells, shifts, gen)
            mask = _masks(len(x), cfg.seq_len, valid, gen)
            for g in opt.param_groups:
                g["lr"] = lr_at(step, cfg, total, time.time() - t0)
            loss = _loss(net, x, beat, mask)
            if not math.isfinite(loss.item()):
                raise MusiclstmError(f"training diverged at step {step}: the loss is {loss.item()}; lower --lr")
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(net.parameters(), cfg.grad_clip)
            opt.step()
            step += 1
            loss_sum, loss_n = loss_sum + loss.item(), loss_n + 1
            bar.update(1)
            if step % eval_every == 0 or step == total:
                val = _validate(net, grids, valid_idx, cells) if valid_idx else float("nan")
                row = {"step": step, "train_nll": round(loss_sum / loss_n, 5), "val_nll": round(val, 5),
                       "seconds": round(time.time() - t0, 1)}
                history.append(row)
                loss_sum, loss_n = 0.0, 0
                with open(out / "metrics.jsonl", "a") as fh:
                    fh.write(json.dumps(row) + "\n")
                if not valid_idx or val < best:
                    best, bad = (val if valid_idx else best), 0
                    checkpoint.save(out / "best.pt", net, tokenizer, meta(step))
                else:
                    bad += 1
                checkpoint.save(out / "last.pt", net, tokenizer, meta(step))
                bar.set_postfix(loss=f"{row['train_nll']:.3f}", val=f"{val:.3f}", best=f"{best:.3f}")
                if callback is not None:
                    callback(dict(row))
                if bad >= cfg.patience:
                    break
    bar.close()
    if not (out / "best.pt").exists():
        checkpoint.save(out / "best.pt", net, tokenizer, meta(step))
    if stop.flag:
        checkpoint.save(out / "last.pt", net, tokenizer, meta(step))
        raise KeyboardInterrupt
    return out / "best.pt"


# ---- sampling --------------------------------------------------------------------------------------
def scale(tonic: int, minor: bool) -> set[int]:
    """Pitch classes of a key: major, or minor with its raised sixth and seventh (melodic/harmonic)."""
    steps = (0, 2, 3, 5, 7, 8, 9, 10, 11) if minor else (0, 2, 4, 5, 7, 9, 11)
    return {(tonic + s) % 12 for s in steps}


def parse_key(text: str) -> tuple[int, bool]:
    """'G major', 'F# minor', 'Bb', 'e minor' -> (tonic, minor)."""
    m = re.fullmatch(r"\s*([A-Ga-g])([#b]?)\s*(major|minor|maj|min|m)?\s*", text or "")
    if not m:
        raise ConfigError(f"key {text!r} is not a key like 'G major' or 'F# minor'")
    tonic = (NOTE_NAMES.index(m.group(1).upper()) + {"#": 1, "b": -1, "": 0}[m.group(2)]) % 12
    return tonic, (m.group(3) or "").startswith("m") and m.group(3) != "major" and m.group(3) != "maj"


def key_name(tonic: int, minor: bool) -> str:
    return f"{NOTE_NAMES[tonic]} {'minor' if minor else 'major'}"


def allowed_cells(cells: Cells, ranges, pitch_classes: set[int] | None) -> torch.Tensor:
    """(4, vocab) bool: the cells each voice may take (its range and, if given, the pitch classes)."""
    ok = torch.zeros(4, cells.size, dtype=torch.bool)
    ok[:, cells.rest] = ok[:, cells.hold] = True
    for v, (lo, hi) in enumerate(ranges):
        for p in range(lo, hi + 1):
            ok[v, cells.pitch0 + p] = pitch_classes is None or p % 12 in pitch_classes
    return ok


def sounding(x: np.ndarray, cells: Cells, unknown: int) -> np.ndarray:
    """(T, V) cells -> the pitch each voice sounds (-1 silent, -2 unknown: a cell equal to `unknown`,
    or a HOLD after one)."""
    x = np.asarray(x)
    own = np.where((x >= cells.pitch0) & (x < cells.pitch0 + 128), x - cells.pitch0, np.where(x == unknown, -2, -1))
    steps = np.arange(len(x))[:, None]
    last = np.maximum.accumulate(np.where(x != cells.hold, steps, -1), axis=0)  # the cell a HOLD goes back to
    return np.where(last >= 0, np.take_along_axis(own, np.maximum(last, 0), 0), -1)


def _same_perfect(before: np.ndarray, after: np.ndarray) -> np.ndarray:
    """Two signed intervals (upper minus lower voice) that are the same perfect fifth or octave
    (unison), compound or not, the voices in the same order."""
    kind = np.abs(before) % 12
    return np.isin(kind, (0, 7)) & (np.abs(after) % 12 == kind) & (np.sign(before) * np.sign(after) >= 0) & \
        ((before == 0) == (after == 0)) | ((before == 0) & (after == 0))


def forbidden_pitches(x: np.ndarray, cells: Cells, unknown: int) -> np.ndarray:
    """(T, 4, 128) bool: the pitches that, struck at that cell, would make parallel fifths or octaves
    (or unisons) with another voice, from the step before or into the step after, or cross a
    neighbouring voice, given the cells known now (unknown cells are not checked)."""
    T = len(x)
    snd = sounding(x, cells, unknown)
    q = np.arange(128)[None, :]
    bad = np.zeros((T, 4, 128), bool)
    prev = np.vstack([np.full((1, 4), -1), snd[:-1]])
    nxt = np.vstack([snd[1:], np.full((1, 4), -1)])
    struck_next = np.vstack([(x[1:] >= cells.pitch0) & (x[1:] < cells.pitch0 + 128), np.zeros((1, 4), bool)])
    for v in range(4):
        for u in range(4):
            if u == v:
                continue
            a, b, c = prev[:, v, None], prev[:, u, None], snd[:, u, None]  # v's and u's pitch before, u's now
            ok = (a >= 0) & (b >= 0) & (c >= 0) & (c != b) & (q != a) & (np.sign(q - a) == np.sign(c - b))
            bad[:, v] |= ok & _same_perfect(a - b, q - c)
            d, e = nxt[:, v, None], nxt[:, u, None]  # v's next (struck) and u's next
            ok = struck_next[:, v, None] & (d >= 0) & (c >= 0) & (e >= 0) & (e != c) & (d != q) & \
                (np.sign(d - q) == np.sign(e - c))
            bad[:, v] |= ok & _same_perfect(q - c, d - e)
        if v > 0:
            above = snd[:, v - 1, None]
            bad[:, v] |= (above >= 0) & (q > above)
        if v < 3:
            below = snd[:, v + 1, None]
            bad[:, v] |= (below >= 0) & (q < below)
    return bad


def _apply_rules(logits: torch.Tensor, x: torch.Tensor, cells: Cells, unknown: int) -> torch.Tensor:
    """(T, 4, V) logits with `forbidden_pitches` at -inf, in every cell that keeps some choice."""
    bad = torch.from_numpy(forbidden_pitches(x.numpy(), cells, unknown))
    ruled = logits.clone()
    ruled[..., cells.pitch0:cells.pitch0 + 128] = ruled[..., cells.pitch0:cells.pitch0 + 128].masked_fill(
        bad, float("-inf"))
    return torch.where(torch.isfinite(ruled).any(-1, keepdim=True), ruled, logits)


def _draw(logits: torch.Tensor, temperature: float, gen: torch.Generator) -> torch.Tensor:
    if temperature <= 0:
        return logits.argmax(-1)
    probs = torch.softmax(logits / temperature, -1)
    return torch.multinomial(probs.view(-1, probs.shape[-1]), 1, generator=gen).view(probs.shape[:-1])


def _logits(net, cells, x, allowed, beat, rules: bool) -> torch.Tensor:
    """The model's logits for every cell of x, within `allowed`, HOLD only after a sounding cell."""
    logits = net(x[None], beat)[0].float().masked_fill(~allowed[None], float("-inf"))
    prev = torch.cat([torch.full((1, 4), cells.rest), x[:-1]])
    logits[..., cells.hold] = logits[..., cells.hold].masked_fill(prev == cells.rest, float("-inf"))
    return _apply_rules(logits, x, cells, net.mask_id) if rules else logits


def _settle(net, cells, x, free, allowed, beat, temperature, gen, rounds: int = 8):
    """Redraw, a few at a time (never two at neighbouring steps), the free notes that break a rule."""
    for _ in range(rounds):
        xn = x.numpy()
        bad = forbidden_pitches(xn, cells, net.mask_id)
        struck = (xn >= cells.pitch0) & (xn < cells.pitch0 + 128)
        pitch = np.clip(xn - cells.pitch0, 0, 127)
        faulty = free.numpy() & struck & np.take_along_axis(bad, pitch[..., None], 2)[..., 0]
        if not faulty.any():
            break
        pick = np.zeros_like(faulty)
        taken = -2
        for t, v in zip(*np.nonzero(faulty), strict=True):  # one per step, no two at neighbouring steps
            if t > taken + 1:
                pick[t, v], taken = True, t
        pick_t = torch.from_numpy(pick)
        x[pick_t] = net.mask_id
        draw = _draw(_logits(net, cells, x, allowed, beat, True), temperature, gen)
        x[pick_t] = draw[pick_t]
    return x


@torch.no_grad()
def gibbs(net: Harmonizer, cells: Cells, grid: np.ndarray, free: np.ndarray, allowed: torch.Tensor, *,
          iterations: int = 64, temperature: float = 0.8, generator: torch.Generator | None = None,
          phase: int = 0, rules: bool = True) -> np.ndarray:
    """Redraw the `free` cells of `grid` ((T, 4) ids) by annealed pseudo-Gibbs sampling; the other
    cells never change. Temperature 0 takes the most likely cell each time. With `rules`, a note is
    not drawn where it would make parallel fifths or octaves or cross a voice (`forbidden_pitches`,
    against the cells known at that moment), unless every note is forbidden there."""
    net.eval()
    gen = generator or torch.Generator().manual_seed(0)
    T = len(grid)
    x = torch.from_numpy(np.asarray(grid, np.int64)).clone()
    free_t = torch.from_numpy(np.asarray(free, bool))
    beat = ((torch.arange(T) + phase) % STEPS)[None]
    x[free_t] = net.mask_id
    if not free_t.any():
        return x.numpy()
    for n in range(max(1, iterations)):
        share = max(0.05, 1.0 - n / (0.75 * max(1, iterations)) * 0.95)
        pick = free_t & (torch.rand(T, 4, generator=gen) < share) if n else free_t.clone()
        if not pick.any():
            pick.view(-1)[torch.nonzero(free_t.view(-1)).flatten()[
                int(torch.randint(0, int(free_t.sum()), (1,), generator=gen))]] = True
        x[pick] = net.mask_id
        draw = _draw(_logits(net, cells, x, allowed, beat, rules), temperature, gen)
        x[pick] = draw[pick]
    if rules:  # notes still breaking a rule (drawn together with the note they clash with): redraw them
        x = _settle(net, cells, x, free_t, allowed, beat, temperature, gen)
    out = x.numpy()
    for t in range(T):  # a HOLD whose note was redrawn into a rest is a rest
        bad = free[t] & (out[t] == cells.hold) & ((out[t - 1] == cells.rest) if t else True)
        out[t][bad] = cells.rest
    return out


# ---- harmonize and infill --------------------------------------------------------------------------
@dataclass
class Loaded:
    """A harmonizer checkpoint ready to sample: the network, its cells, voice ranges and the `Model`."""

    net: Harmonizer
    cells: Cells
    ranges: list
    meta: dict
    model: object = None


def load(model=None) -> Loaded:
    """The bundled harmonizer (None), or a harmonizer checkpoint file / run folder; a `Loaded` passes through.

    Its `ranges` are where each voice may sing: the textbook SATB ranges (`music.SATB_RANGES`) within
    the ranges of the training chorales (those alone where the two do not meet)."""
    from . import checkpoint
    from .music import SATB_RANGES

    if isinstance(model, Loaded):
        return model
    m = checkpoint.load(model or "harmonizer", kind=KIND)
    ranges = [(max(lo, a), min(hi, b)) if max(lo, a) <= min(hi, b) else (lo, hi)
              for (lo, hi), (a, b) in zip(m.meta["ranges"], SATB_RANGES, strict=True)]
    return Loaded(m.net, Cells(m.tokenizer), ranges, m.meta, m)


def sidecar(h: Loaded, options: dict, source) -> dict:
    """Provenance of a harmonized or infilled file: model fingerprint, seed, every option, the input's hash."""
    import hashlib

    from . import __version__

    info = {"musiclstm": __version__, "checkpoint": str(h.model.path), "model_fingerprint": h.model.fingerprint,
            "step": h.meta.get("step"), "options": options}
    if isinstance(source, str | Path):
        info["input"] = {"path": str(source), "sha1": hashlib.sha1(Path(source).read_bytes()).hexdigest()}
    return info


def _melody(score: Score, top_voice: bool) -> tuple[Score, str]:
    """The melody line of `score`: its only track, or the highest of several (said in the note)."""
    s = score.select(~score.is_drum)
    if len(s) == 0:
        raise ConfigError(f"{score.source} has no notes")
    used = sorted({int(k) for k in s.track}, key=lambda k: -s.pitch[s.track == k].mean())
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


def melody_key(score: Score, line: Score) -> tuple[int, bool]:
    """The key a melody is written in: the file's first key signature, else Krumhansl-Schmuckler on the line."""
    if len(score.key_signatures):
        return int(score.key_signatures[0, 1]) % 12, bool(score.key_signatures[0, 2])
    return key_fit(np.bincount(line.pitch % 12, weights=line.end - line.start, minlength=12))[:2]


def harmonize(melody, *, model=None, seed: int = 0, temperature: float = 0.8, iterations: int = 64,
              key: str | None = None, transpose: int = 0, top_voice: bool = False, rules: bool = True,
              info: dict | None = None):
    """Harmonize `melody` (a path to MIDI/MusicXML/ABC, MIDI bytes, a PrettyMIDI or a `Score`) in four parts.

    The soprano is the melody exactly (transposed by `transpose` semitones); alto, tenor and bass are
    sampled by `gibbs`, each voice in its range (`load`) and in `key` ('G major'; default: the file's
    key signature, else Krumhansl-Schmuckler on the melody) or the pitch classes the melody uses;
    with `rules`, no parallel fifths or octaves and no crossed voices where the model has another choice.
    `info`, if a dict, receives what was done (key, melody track, seconds). Returns a PrettyMIDI.
    """
    from .midi import read, to_pretty_midi

    t0 = time.time()
    score = melody if isinstance(melody, Score) else read(melody)
    line, note = _melody(score, top_voice)
    line.pitch = line.pitch + int(transpose)
    h = load(model)
    lo, hi = h.ranges[0]
    if line.pitch.min() < lo or line.pitch.max() > hi:
        shift = lo - int(line.pitch.min()) if line.pitch.min() < lo else hi - int(line.pitch.max())
        octave = int(math.copysign(12 * math.ceil(abs(shift) / 12), shift))
        hint = f"; try --transpose {int(transpose) + octave}" if hi - lo >= np.ptp(line.pitch) else ""
        raise ConfigError(f"the melody spans MIDI {line.pitch.min()}-{line.pitch.max()}, outside the soprano "
                          f"range {lo}-{hi}{hint}")
    T = int(np.round(line.end.max() * STEPS))
    if T > 4 * STEPS * 400:
        raise ConfigError(f"the melody lasts {T / STEPS:g} quarters; harmonize takes at most 1600")
    tonic, minor = parse_key(key) if key else melody_key(score, line)
    pcs = scale(tonic, minor) | {int(p) % 12 for p in line.pitch}
    pitches, onset = np.full((T, 4), -1), np.zeros((T, 4), bool)
    for st, en, p in zip(line.start, line.end, line.pitch, strict=True):
        a, b = int(round(st * STEPS)), max(int(round(en * STEPS)), int(round(st * STEPS)) + 1)
        pitches[a:b, 0], onset[a, 0] = p, True
    grid = h.cells.from_pitches(pitches, onset)
    free = np.zeros((T, 4), bool)
    free[:, 1:] = True
    gen = torch.Generator().manual_seed(int(seed))
    out = gibbs(h.net, h.cells, grid, free, allowed_cells(h.cells, h.ranges, pcs), iterations=iterations,
                temperature=temperature, generator=gen, rules=rules)
    result = _assemble(line, out, h.cells, score)
    if info is not None:
        info.update(key=key_name(tonic, minor), key_given=bool(key), melody=note, seconds=time.time() - t0,
                    steps=T, notes=int(len(result)))
    return to_pretty_midi(result)


def _assemble(soprano: Score, grid: np.ndarray, cells: Cells, like: Score) -> Score:
    """The soprano's own notes plus alto, tenor and bass decoded from `grid`, on four choir tracks."""
    from .encodings.grid import Codec, Config

    lower = Codec(Config(voices=4, hold=True)).decode(grid.reshape(-1), cells.tokenizer.vocab)
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
    from .midi import read, to_pretty_midi
    from .music import bar_lines

    t0 = time.time()
    score = piece if isinstance(piece, Score) else read(piece)
    s = score.select(~score.is_drum)
    used = sorted({int(k) for k in s.track}, key=lambda k: -s.pitch[s.track == k].mean()) if len(s) else []
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
    h = load(model)
    T = int(np.ceil(s.end.max() * STEPS))
    pitches, onset = np.full((T, 4), -1), np.zeros((T, 4), bool)
    for i in np.argsort(s.start, kind="stable"):
        e = max(int(round(s.end[i] * STEPS)), on[i] + 1)
        pitches[on[i]:e, v_of_note[i]], onset[on[i], v_of_note[i]] = s.pitch[i], True
    grid = h.cells.from_pitches(pitches, onset)
    redo = np.isin(v_of_note, which) & (s.start >= lo_q - 1e-9) & (s.start < hi_q - 1e-9)
    free = np.zeros((T, 4), bool)
    a_s, b_s = int(round(lo_q * STEPS)), int(round(hi_q * STEPS))
    free[a_s:b_s, which] = True
    for i in np.flatnonzero(~redo & np.isin(v_of_note, which)):  # notes kept: their cells stay
        free[on[i]:max(int(round(s.end[i] * STEPS)), on[i] + 1), v_of_note[i]] = False
    for i in np.flatnonzero(redo):  # the whole of a note redrawn is free, even past the last bar
        free[on[i]:max(int(round(s.end[i] * STEPS)), on[i] + 1), v_of_note[i]] = True
    ranges = [(min(lo, int(s.pitch[v_of_note == v].min())), max(hi, int(s.pitch[v_of_note == v].max())))
              for v, (lo, hi) in enumerate(h.ranges)]
    tonic, minor, _ = key_fit(np.bincount(s.pitch % 12, weights=s.end - s.start, minlength=12))
    pcs = scale(tonic, minor) | {int(p) % 12 for p in s.pitch}
    gen = torch.Generator().manual_seed(int(seed))
    new = gibbs(h.net, h.cells, grid, free, allowed_cells(h.cells, ranges, pcs), iterations=iterations,
                temperature=temperature, generator=gen, rules=rules)
    # new notes: those starting in a free cell (a HOLD continuing a kept note is not a new note)
    from .encodings.grid import Codec, Config

    dec = Codec(Config(voices=4, hold=True, max_hold_steps=10**6)).decode(new.reshape(-1), h.cells.tokenizer.vocab)
    d_on = np.round(dec.start * STEPS).astype(int)
    fresh = free[np.clip(d_on, 0, T - 1), dec.track.astype(int)]
    dec = dec.select(fresh)
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


__all__ = ["Harmonizer", "HarmonizerConfig", "gibbs", "harmonize", "infill", "train"]
