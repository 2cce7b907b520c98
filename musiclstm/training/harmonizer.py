"""Training the chorale harmonizer (`musiclstm.generation.harmonize.Harmonizer`), as in Coconet (Huang et al. 2017).

Random cells of each chorale window are replaced by MASK and the loss is the NLL of the masked
cells. Masks are of four kinds: the lower voices with the soprano given (harmonizing), any voice
(general context), the lower voices from a random step on (what a left-to-right reading sees), and
blocks of beats in some voices (infilling). Pieces are transposed at random to the keys the voice
ranges allow. `train` reuses the project's TrainConfig, schedule, Ctrl-C flag and checkpoints.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from ..errors import MusiclstmError
from ..models.harmonizer import STEPS, Cells, Harmonizer, HarmonizerConfig


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
          "sample_tokens", "cache", "val_tokens")


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

    from ..encodings.tokenizer import Tokenizer
    from ..models import checkpoint
    from .lm import TrainConfig, _Interrupt, lr_at

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
