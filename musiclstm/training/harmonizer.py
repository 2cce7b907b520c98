"""Training the chorale harmonizer (`musiclstm.models.harmonizer.Harmonizer`), as in Coconet (Huang et al. 2017).

Random cells of each chorale window are replaced by MASK and the loss is the NLL of the masked
cells. Masks are of four kinds: the lower voices with the soprano given (harmonizing), any voice
(general context), the lower voices from a random step on (what a left-to-right reading sees), and
blocks of beats in some voices (infilling). Pieces are transposed at random to the keys the voice
ranges allow. Where the corpus marks fermatas (`data.collections.fermatas_of`: MusicXML, or the `fermatas.json`
that `corpus export bach` writes), the network gets a fermata channel (DeepBach's metadata) and half the windows
see it as unknown. Half the windows have their re-strikes made holds (`Cells.merge_restrikes`), so a melody
from data that cannot mark them (the JSB arrays, a tied-over MIDI line) reads as music it knows. `init` starts
from a checkpoint's weights (fine-tuning). `train` runs the shared loop (`loop.run_loop`) with the harmonizer's
batches, loss and validation; its config shares `BaseTrainConfig` with the LSTM's.
May import: errors, encodings, data, models, training (the shared loop). Not: generation, evaluation, app.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from ..data.collections import fermatas_of
from ..errors import MusiclstmError
from ..models import checkpoint
from ..models.harmonizer import STEPS, Cells, Harmonizer, HarmonizerConfig, fermata_channel
from .config import HARMONIZER_UNUSED, HarmonizerTrainConfig
from .loop import autocast, pick_device, resolve_precision, run_loop, starting_point


def melody_signature(soprano: np.ndarray, n: int = 8) -> tuple[int, ...]:
    """A melody's opening as transposition-free intervals between its first n+1 different pitches;
    repeated notes are not counted (the JSB arrays do not mark them)."""
    p = [int(x) for x in soprano if x >= 0]
    return tuple(b - a for a, b in zip(p, p[1:], strict=False) if b != a)[:n]


def _grids(corpus, tokenizer, cache_dir=None, val_fraction: float = 0.1, jobs=None):
    """Every piece of `corpus` (at least 16 steps) read by the grid encoding: (T, 4) cells, its file
    name and its split (data.prepare's rule: by content hash, a csv split wins)."""
    from .. import data

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
    from ..encodings.grid import load_jsb

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


def _batch(grids, idx, L, cells: Cells, shifts, gen, *, crop: bool = True, fermatas=None, hide: float = 0.0):
    """Crops of L steps (beat-aligned) from pieces `idx`, each transposed by a shift it allows, and their
    fermata channel (`fermatas[i]`; a share `hide` of the windows are given it as unknown)."""
    B = len(idx)
    x = torch.zeros(B, L, 4, dtype=torch.long)
    ferm = torch.zeros(B, L, dtype=torch.long)
    beat = torch.zeros(B, L, dtype=torch.long)
    valid = torch.zeros(B, L, dtype=torch.bool)
    k = torch.zeros(B, dtype=torch.long)
    for b, i in enumerate(idx):
        g = grids[i]
        s = 4 * int(torch.randint(0, max(1, (len(g) - L) // 4 + 1), (1,), generator=gen)) if crop else 0
        piece = torch.from_numpy(np.array(g[s:s + L], np.int64))
        x[b, :len(piece)], valid[b, :len(piece)] = piece, True
        if fermatas is not None and (hide <= 0 or float(torch.rand(1, generator=gen)) >= hide):
            ferm[b, :len(piece)] = torch.from_numpy(fermatas[i][s:s + L])
        beat[b] = (torch.arange(L) + s) % STEPS
        if shifts is not None:
            ks = shifts[i]
            k[b] = ks[int(torch.randint(0, len(ks), (1,), generator=gen))]
    return cells.transpose(x, k), beat, valid, ferm


def _loss(net: Harmonizer, x, beat, mask, precision: str = "fp32", fermata=None) -> torch.Tensor:
    device = next(net.parameters()).device
    x, beat, mask = x.to(device), beat.to(device), mask.to(device)
    inp = x.masked_fill(mask, net.mask_id)
    fermata = fermata.to(device) if fermata is not None and net.config.fermatas else None
    with autocast(device, precision):
        logits = net(inp, beat, fermata)
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


def _validate(net, grids, idx, cells, L: int = 512, fermatas=None) -> float:
    """Validation NLL per masked cell: fixed masks (seed 0) over whole pieces (up to L steps), the fermata
    channel as the data gives it (`fermatas`; None: unknown)."""
    net.eval()
    gen = torch.Generator().manual_seed(0)
    total, n = 0.0, 0
    with torch.no_grad():
        for j in range(0, len(idx), 16):
            x, beat, valid, ferm = _batch(grids, idx[j:j + 16], L, cells, None, gen, crop=False, fermatas=fermatas)
            mask = _masks(len(x), L, valid, gen)
            if mask.any():
                total += float(_loss(net, x, beat, mask, fermata=ferm)) * int(mask.sum())
                n += int(mask.sum())
    net.train()
    return total / max(1, n)


HIDE_FERMATAS = 0.5  # share of training windows given the fermata channel as unknown (as a melody without marks)
MERGE_RESTRIKES = 0.5  # share of training windows whose re-strikes are made holds (as pitch-per-step data reads)
UNUSED = HARMONIZER_UNUSED  # TrainConfig fields a harmonizer's training does not use (refused by the command line)


def train(corpus, out, *, holdout=None, init=None, force: bool = False, progress: bool = True, cache_dir=None,
          preset: str = "small", config_file=None, callback=None, **options) -> Path:
    """Train a harmonizer on the four-part chorales in `corpus`; returns `out`/best.pt.

    Options are `HarmonizerTrainConfig` fields (embed, hidden, layers, dropout, seq_len = steps per
    window, batch_size, lr, max_steps, max_time, anneal_by_time, eval_every, patience, seed,
    val_fraction, augment_transpose: at most this many semitones, to keys the voice ranges allow).
    `holdout`: a JSB Chorales .json whose test chorales are left out and whose valid ones validate
    (see `split_by_melody`). `init`: a harmonizer checkpoint (file or bundled name) to start from, its
    weights and network sizes (fine-tuning: embed, hidden and layers are its own). Validation is in fp32;
    `precision` applies to the training steps. Writes last.pt, best.pt, metrics.jsonl and config.json into `out`.
    """
    out = Path(out)
    if (out / "last.pt").exists() and not force:
        raise MusiclstmError(f"{out} already holds a run; use --force to start over")
    start, options = starting_point(init, "harmonizer", options, ("embed", "hidden", "layers"))
    cfg = HarmonizerTrainConfig.build(preset, config_file, **{"embed": 64, "seq_len": 128, "dropout": 0.2,
                                                              "augment_transpose": 6,
                                                              **{k: v for k, v in options.items() if v is not None}})
    return _HarmonizerRun(corpus, out, cfg, holdout, cache_dir, progress, callback, start).run()


class _HarmonizerRun:
    """One harmonizer training run: its chorales, network and progress, and the hooks of the shared loop."""

    def __init__(self, corpus, out: Path, cfg: HarmonizerTrainConfig, holdout, cache_dir, progress: bool, callback,
                 start=None):
        from ..encodings.tokenizer import Tokenizer

        self.out, self.cfg, self.holdout, self.progress, self.callback = out, cfg, holdout, progress, callback
        torch.manual_seed(cfg.seed)
        self.tokenizer = Tokenizer("grid", hold=True)
        self.cells = cells = Cells(self.tokenizer)
        grids, names, splits = _grids(corpus, self.tokenizer, cache_dir, cfg.val_fraction, cfg.jobs)
        if len(grids) < 2:
            raise MusiclstmError(f"{corpus}: fewer than two four-part pieces to train a harmonizer on")
        train_idx, self.valid_idx, left_out = split_by_melody(grids, cells, holdout, splits)
        self.ranges = ranges = voice_ranges([grids[i] for i in train_idx], cells)
        wide = [i for i in train_idx if not in_range(grids[i], cells, ranges)]
        self.grids, self.train_idx = grids, [i for i in train_idx if i not in wide]
        self.shifts = {i: [k for k in _shifts(grids[i], cells, ranges) if abs(k) <= cfg.augment_transpose] or [0]
                       for i in self.train_idx}
        self.device = pick_device(cfg.device)
        marks = [fermatas_of(n) for n in names]  # the fermata channel where the data marks fermatas
        self.fermatas = [fermata_channel(g, cells, m) for g, m in zip(grids, marks, strict=True)] \
            if any(m is not None for m in marks) else None
        self.net = Harmonizer(HarmonizerConfig(self.tokenizer.vocab_size, cfg.embed, cfg.hidden, cfg.layers,
                                               cfg.dropout, fermatas=self.fermatas is not None)).to(self.device)
        if start is not None:  # fine-tuning: the checkpoint's weights (its sizes are cfg's; dropout may differ)
            if start.tokenizer != self.tokenizer:
                raise MusiclstmError(f"{start.path.name} reads other tokens than a harmonizer trained now")
            missing, _ = self.net.load_state_dict(start.net.state_dict(), strict=False)
            if set(missing) - {"fermata.weight"}:  # only the fermata channel may be new (it starts at zero)
                raise MusiclstmError(f"{start.path.name} lacks {', '.join(missing)}")
        self.init = checkpoint.origin(start) if start is not None else None
        self.precision = resolve_precision(cfg.precision, self.device)
        self.opt = torch.optim.AdamW(self.net.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
        self.gen = torch.Generator().manual_seed(cfg.seed)
        steps_in = sum(len(grids[i]) for i in self.train_idx)
        per_epoch = max(1, steps_in // (cfg.batch_size * cfg.seq_len))
        self.total = min(cfg.epochs * per_epoch, cfg.max_steps or 10**12)
        self.eval_every = cfg.eval_every or per_epoch
        self.data_info = {"files": len(grids), "train": len(self.train_idx), "valid": len(self.valid_idx),
                          "left_out": left_out, "out_of_range": [Path(names[i]).name for i in wide],
                          "steps": steps_in, "holdout": Path(holdout).name if holdout else None,
                          "with_fermatas": sum(m is not None for m in marks)}
        weights = np.array([len(grids[i]) for i in self.train_idx], float)
        self.weights = weights / weights.sum()
        self.rng = np.random.default_rng(cfg.seed)
        self.best, self.bad, self.history = float("inf"), 0, []
        self.t0 = time.time()

    def meta(self, step: int) -> dict:
        return {"step": step, "train": asdict(self.cfg), "data": self.data_info, "ranges": self.ranges,
                "init": self.init, "precision": self.precision,
                "best_val_nll": self.best, "metrics": self.history[-1] if self.history else {},
                "torch": torch.__version__}

    def step_loss(self, step: int) -> tuple[torch.Tensor, int]:
        """The loop's model-specific part: chorale windows (transposed), masked cells, their NLL."""
        idx = self.rng.choice(self.train_idx, size=self.cfg.batch_size, p=self.weights).tolist()
        x, beat, valid, ferm = _batch(self.grids, idx, self.cfg.seq_len, self.cells, self.shifts, self.gen,
                                      fermatas=self.fermatas, hide=HIDE_FERMATAS)
        merge = torch.rand(len(x), generator=self.gen) < MERGE_RESTRIKES
        x[merge] = self.cells.merge_restrikes(x[merge])
        mask = _masks(len(x), self.cfg.seq_len, valid, self.gen)
        n = int(mask.sum())
        if n == 0:  # nothing masked in this batch (its cross-entropy would be NaN): no step, never "diverged"
            return torch.zeros((), device=self.device), 0
        return _loss(self.net, x, beat, mask, self.precision, ferm) * n, n

    def diverged(self, step: int, loss_value: float) -> None:
        raise MusiclstmError(f"training diverged at step {step}: the loss is {loss_value}; lower --lr")

    def validate(self, step: int, train_loss: float, tok_s: float) -> bool:
        """Score the validation chorales, record the row, save last.pt (and best.pt); True: stop early."""
        val = _validate(self.net, self.grids, self.valid_idx, self.cells, fermatas=self.fermatas) \
            if self.valid_idx else float("nan")
        row = {"step": step, "train_nll": round(train_loss, 5), "val_nll": round(val, 5),
               "seconds": round(time.time() - self.t0, 1)}
        self.history.append(row)
        with open(self.out / "metrics.jsonl", "a") as fh:
            fh.write(json.dumps(row) + "\n")
        if not self.valid_idx or val < self.best:
            self.best, self.bad = (val if self.valid_idx else self.best), 0
            checkpoint.save(self.out / "best.pt", self.net, self.tokenizer, self.meta(step))
        else:
            self.bad += 1
        checkpoint.save(self.out / "last.pt", self.net, self.tokenizer, self.meta(step))
        self.bar.set_postfix(loss=f"{row['train_nll']:.3f}", val=f"{val:.3f}", best=f"{self.best:.3f}")
        if self.callback is not None:
            self.callback(dict(row))
        return self.bad >= self.cfg.patience

    def run(self) -> Path:
        from tqdm.auto import tqdm

        out, cfg = self.out, self.cfg
        out.mkdir(parents=True, exist_ok=True)
        for old in ("metrics.jsonl", "best.pt", "last.pt"):
            (out / old).unlink(missing_ok=True)
        (out / "config.json").write_text(json.dumps({"train": asdict(cfg), "data": self.data_info,
                                                     "ranges": self.ranges}, indent=2))
        if self.progress:
            tqdm.write(f"harmonizer: {len(self.train_idx)} training and {len(self.valid_idx)} validation chorales"
                       + (f", {self.data_info['left_out']} left out (the content of a chorale of the test split "
                          f"of {Path(self.holdout).name})" if self.holdout else "")
                       + f"; {self.net.num_parameters():,} parameters")
        self.bar = tqdm(total=self.total, desc="training", unit="step", disable=not self.progress, dynamic_ncols=True)
        self.t0 = time.time()
        end = run_loop(self.net, self.opt, cfg, step=0, total=self.total, eval_every=self.eval_every,
                       step_loss=self.step_loss, validate=self.validate, diverged=self.diverged, bar=self.bar,
                       device=self.device)
        if not end.validated and not end.interrupted:  # stopped by --max-time between validations: score the end too
            self.validate(end.step, end.train_loss, end.tokens_per_s)
        self.bar.close()
        if not (out / "best.pt").exists():
            checkpoint.save(out / "best.pt", self.net, self.tokenizer, self.meta(end.step))
        if end.interrupted:
            checkpoint.save(out / "last.pt", self.net, self.tokenizer, self.meta(end.step))
            raise KeyboardInterrupt
        return out / "best.pt"
