"""Training the left-to-right LSTM: `train(corpus, out, **options)` from MIDI folders to a self-contained checkpoint.

The loop is the word-language-model recipe (stateful truncated BPTT, gradient clipping, AdamW)
with a warmup + cosine schedule, early stopping on validation NLL, atomic checkpoints, exact
resume, and PyTorch DDP when started under `torchrun`. The loop itself is `loop.run_loop`, shared
with the harmonizer; here are the LSTM's batches, loss, validation and checkpoints. It knows nothing
about music: it sees the token streams that `data.prepare` makes.

Under DDP every stop (Ctrl-C, `max_time`, early stopping, a NaN loss) is decided by all ranks
together, `last.pt` keeps each rank's random generators and carried LSTM state (gathered to rank 0,
under resume["ranks"]), and a run resumes only with the number of processes it was started with.
May import: errors, io, encodings, data, models, generation (a sample per validation), training.
Not: evaluation, app.
"""

from __future__ import annotations

import json
import math
import os
import sys
import time
from dataclasses import asdict, replace
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from .. import data
from ..encodings.augment import stretch, transpose
from ..encodings.tokenizer import PAD, Tokenizer
from ..errors import ConfigError, MusiclstmError
from ..models import checkpoint
from ..models.lstm import ModelConfig, MusicLSTM
from .config import PRESETS, TrainConfig
from .loop import agree, autocast, mean_over_ranks, pick_device, resolve_precision, run_loop, starting_point

__all__ = ["PRESETS", "TrainConfig", "evaluate_nll", "train"]


@torch.no_grad()
def evaluate_nll(net: MusicLSTM, sequences: list, cfg: TrainConfig, device: torch.device) -> float:
    """Mean next-token NLL (nats) over pieces (BOS ... EOS id arrays), each from a fresh state."""
    net.eval()
    win = data.PieceWindows(sequences, max(1, min(16, len(sequences))), cfg.seq_len, shuffle=False)
    total, count, state = 0.0, 0, None
    for i in range(win.batches_per_epoch):
        x, y, reset = win.get(i)
        state = _reset(state, reset.to(device))
        with autocast(device, cfg.precision):
            logits, state = net(x.to(device), state)
        total += F.cross_entropy(logits.float().flatten(0, 1), y.to(device).flatten(), ignore_index=PAD,
                                 reduction="sum").item()
        count += int((y != PAD).sum())
    net.train()
    return total / max(1, count)


def _reset(state, reset: torch.Tensor):
    """Zero the state of the lanes (batch rows) flagged in `reset` (B,); None when all are reset."""
    if state is None or bool(reset.all()):
        return None
    keep = (~reset).to(state[0].dtype if isinstance(state, tuple) else state.dtype)[None, :, None]  # (1, B, 1)
    return tuple(s.detach() * keep for s in state) if isinstance(state, tuple) else state.detach() * keep


def _detach(state):
    if state is None:
        return None
    return tuple(s.detach() for s in state) if isinstance(state, tuple) else state.detach()


def train(corpus, out, *, resume: bool = False, init=None, force: bool = False, progress: bool = True,
          cache_dir=None, config_file=None, preset: str = "small", callback=None, **options) -> Path:
    """Prepare `corpus` (a folder, a file, or a list of them), train, and return the best checkpoint path.

    `corpus` may also be an already prepared `data.Corpus` (with its tokenizer): its "train" and
    "valid" pieces are used as they are (that is how `benchmark jsb` trains on the JSB arrays).

    `init`: a checkpoint (file or bundled name) to start from: its weights, network sizes and tokenizer
    (fine-tuning on `corpus`). Options are the fields of `TrainConfig`. `callback(row)`, if given, is called
    with the metrics row after every validation (a notebook draws a live loss curve with it). Writes into `out`:
    last.pt, best.pt, config.json, metrics.jsonl, loss.png, data_report.json and samples/.
    """
    out = Path(out)
    corpora = corpus if isinstance(corpus, data.Corpus) else data.as_paths(corpus)
    rank, world = int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1))
    if init is not None and resume:
        raise MusiclstmError("--init starts a new run from a checkpoint and --resume continues one: give one")
    start, options = starting_point(init, "lm", options, ("embed", "hidden", "layers", "cell", "tie_weights"))
    if start is not None and options.get("encoding") not in (None, start.tokenizer.encoding):
        raise MusiclstmError(f"--encoding does not apply with --init: {start.path.name} reads "
                             f"{start.tokenizer.encoding} tokens")
    resume_blob = _resume_blob(out, world) if resume else None
    if resume_blob is not None:
        saved = resume_blob["meta"]["train"]
        saved = {"val_tokens": None, **saved}  # a run from before the validation budget validated on every piece
        cfg = replace(TrainConfig(**saved), **{k: v for k, v in options.items()
                                               if v is not None and k in ("epochs", "max_steps", "max_time",
                                                                          "patience", "device", "jobs")})
    else:
        if (out / "last.pt").exists() and not force:
            raise MusiclstmError(f"{out} already holds a run; use --resume to continue it or --force to start over")
        cfg = TrainConfig.build(preset, config_file, **{**options, **({"encoding": start.tokenizer.encoding}
                                                                     if start is not None else {})})

    device = pick_device(cfg.device)
    if world > 1 and device.type == "cuda":
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))
        torch.cuda.set_device(device)
    owns_group = world > 1 and not torch.distributed.is_initialized()  # a caller's group is left to the caller
    if owns_group:
        torch.distributed.init_process_group("nccl" if device.type == "cuda" else "gloo")
    try:
        best = _Run(corpora, out, cfg, device, rank, world, resume_blob, progress, cache_dir, callback, start).run()
        if world > 1:
            torch.distributed.barrier()  # rank 0 may still be writing files; leave together
        return best
    finally:
        if owns_group and torch.distributed.is_initialized():
            torch.distributed.destroy_process_group()


def _resume_blob(out: Path, world: int) -> dict:
    """The run's last.pt, read to resume it (with the number of processes it was started with)."""
    last = out / "last.pt"
    if not last.is_file():
        raise MusiclstmError(f"nothing to resume: {last} does not exist")
    blob = checkpoint.read(last)
    saved_world = blob["meta"].get("world_size", 1)
    if saved_world != world:  # lanes, generators and carried states are per process: no re-sharding
        raise ConfigError(f"{last} was trained by {saved_world} process(es) and cannot resume with {world}; "
                          f"resume with the same number (torchrun --nproc_per_node, times nodes)")
    return blob


class _Run:
    """One training run of the LSTM: its data, network, optimizer and progress, and the hooks of the
    shared loop (the batch and its loss, what a validation records and saves)."""

    def __init__(self, corpora, out: Path, cfg: TrainConfig, device, rank: int, world: int, resume_blob,
                 progress: bool, cache_dir, callback, start=None):
        self.out, self.cfg, self.device, self.rank, self.world, self.start = out, cfg, device, rank, world, start
        self.is_main, self.resume_blob, self.progress, self.callback = rank == 0, resume_blob, progress, callback
        torch.manual_seed(cfg.seed)
        self.tokenizer, self.corpus = self._data(corpora, cache_dir)
        if resume_blob is not None and resume_blob["meta"].get("fingerprint") != self.corpus.fingerprint:
            raise MusiclstmError("the corpus changed since this run started (data fingerprint differs); "
                                 "start a new run instead of --resume")
        # pieces laid end to end, memory-mapped from the store; the first of them up to the token budget
        self.valid_seqs = _first_tokens(self.corpus.sequences("valid"), cfg.val_tokens)
        train_seqs = self.corpus.sequences("train")
        if cfg.windows == "pieces":
            self.windows = data.PieceWindows(train_seqs, cfg.batch_size, cfg.seq_len, rank=rank, world=world,
                                             seed=cfg.seed)
        else:
            self.windows = data.Windows(train_seqs.tokens, cfg.batch_size, cfg.seq_len, cfg.windows, rank, world)
        self.per_epoch = self.windows.batches_per_epoch
        self.total = min(cfg.epochs * self.per_epoch, cfg.max_steps or 10**12)
        self.eval_every = cfg.eval_every or self.per_epoch
        self._network()
        self.best: dict = {}  # the best weights so far and their meta (what best.pt holds)

    def _data(self, corpora, cache_dir):
        """The tokenizer (its styles found before training) and the prepared corpus."""
        cfg = self.cfg
        if isinstance(corpora, data.Corpus):  # prepared by the caller, with its tokenizer
            if self.start is not None and self.start.tokenizer != corpora.tokenizer:
                raise MusiclstmError(f"{self.start.path.name} reads other tokens than this corpus")
            return corpora.tokenizer, corpora
        if self.resume_blob is not None:
            tokenizer = Tokenizer.from_dict(self.resume_blob["meta"]["tokenizer"])
        elif self.start is not None:  # fine-tuning: the checkpoint's tokens
            tokenizer = self.start.tokenizer
        else:  # styles come from sub-folders or corpus names; the tokenizer must know them before training
            found = sorted({data.style_of(f, Path(c), cfg.styles) for c in corpora
                            for f in data.find_files(Path(c))}) if cfg.styles != "none" else []
            tokenizer = Tokenizer(cfg.encoding, styles=tuple(s for s in found if s))
        # every rank tokenizes its share into the shared cache; rank 0 writes the token store, the others wait
        corpus = data.prepare(corpora, tokenizer, val_fraction=cfg.val_fraction, styles=cfg.styles, jobs=cfg.jobs,
                              cache_dir=cache_dir, progress=self.progress and self.is_main, rank=self.rank,
                              world=self.world)
        return tokenizer, corpus

    def _network(self) -> None:
        """The network, its optimizer, the batch generator and the progress, fresh or resumed."""
        cfg, rank = self.cfg, self.rank
        self.mcfg = ModelConfig(self.tokenizer.vocab_size, cfg.embed, cfg.hidden, cfg.layers, cfg.dropout, cfg.cell,
                                cfg.tie_weights)
        self.net = MusicLSTM(self.mcfg).to(self.device)
        if self.start is not None:  # fine-tuning: the checkpoint's weights (its sizes are cfg's)
            self.net.load_state_dict(self.start.net.state_dict())
        if rank:  # the same initial weights on every rank (DDP checks), then a dropout stream of each rank's own
            torch.manual_seed(cfg.seed * 1000 + rank)
        # the fused kernel: one pass over all parameters (0.8 vs 3.9 ms a step for the small preset on one
        # CPU thread; PyTorch's default on CPU is a Python loop over the tensors)
        self.opt = torch.optim.AdamW(self.net.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay,
                                     fused=self.device.type in ("cpu", "cuda"))
        self.gen = torch.Generator().manual_seed(cfg.seed * 1000 + rank)
        self.st = {"step": 0, "best": float("inf"), "bad_evals": 0, "history": []}
        self.carry = None
        if self.resume_blob is not None:
            self._restore(self.resume_blob)
        self.model = torch.nn.parallel.DistributedDataParallel(self.net) if self.world > 1 else self.net

    def _restore(self, blob: dict) -> None:
        self.net.load_state_dict(blob["weights"])
        r = blob["resume"]
        self.opt.load_state_dict(r["optimizer"])
        self.st = json.loads(r["progress"])
        mine = r["ranks"][self.rank] if "ranks" in r else r  # a file from before per-rank state: one process's
        self.gen.set_state(mine["generator"])
        torch.set_rng_state(mine["torch_rng"])
        if "cuda_rng" in mine and self.device.type == "cuda":
            torch.cuda.set_rng_state(mine["cuda_rng"], self.device)
        if "carry_h" in mine and self.cfg.windows != "random":
            h = mine["carry_h"].to(self.device)
            self.carry = (h, mine["carry_c"].to(self.device)) if "carry_c" in mine else h

    def _prepare_out(self) -> None:
        """The run folder: config, data report; a fresh run (--force) clears the previous run's files."""
        out = self.out
        out.mkdir(parents=True, exist_ok=True)
        (out / "samples").mkdir(exist_ok=True)
        for stale in out.glob(".*.tmp"):  # left by a process killed while writing a checkpoint
            stale.unlink(missing_ok=True)
        if self.resume_blob is None:  # a fresh run (--force): nothing of the previous run's may mix in
            for old in [out / n for n in ("metrics.jsonl", "best.pt", "last.pt", "loss.png")] + \
                    list((out / "samples").glob("*.mid")):
                old.unlink(missing_ok=True)
        (out / "config.json").write_text(json.dumps({"train": asdict(self.cfg), "model": asdict(self.mcfg),
                                                     "tokenizer": self.tokenizer.to_dict()}, indent=2))
        (out / "data_report.json").write_text(json.dumps(self.corpus.to_json(), indent=2))

    def meta(self, step: int) -> dict:
        st = self.st
        return {"step": step, "epoch": step / self.per_epoch, "train": asdict(self.cfg),
                "fingerprint": self.corpus.fingerprint, "metrics": st["history"][-1] if st["history"] else {},
                "best_val_nll": st["best"],
                "data": _data_meta(self.corpus, self.cfg),
                "world_size": self.world, "precision": resolve_precision(self.cfg.precision, self.device),
                "init": checkpoint.origin(self.start) if self.start else None,
                "torch": torch.__version__}

    def save_last(self, step: int) -> None:
        """last.pt: weights, optimizer and progress (the same on every rank) and, under "ranks", each
        rank's own random generators and carried state, gathered to rank 0 (a collective: every rank
        calls it at the same step)."""
        mine = {"generator": self.gen.get_state(), "torch_rng": torch.get_rng_state()}
        if self.device.type == "cuda":
            mine["cuda_rng"] = torch.cuda.get_rng_state(self.device)
        if self.carry is not None:
            h, c = self.carry if isinstance(self.carry, tuple) else (self.carry, None)
            mine["carry_h"] = h.detach().cpu()
            if c is not None:
                mine["carry_c"] = c.detach().cpu()
        ranks = [mine]
        if self.world > 1:
            ranks = [None] * self.world if self.is_main else None
            torch.distributed.gather_object(mine, ranks, dst=0)
        if self.is_main:
            r = {"optimizer": self.opt.state_dict(), "progress": json.dumps(self.st), "ranks": ranks}
            checkpoint.save(self.out / "last.pt", self.net, self.tokenizer, self.meta(step), r)

    def step_loss(self, step: int) -> tuple[torch.Tensor, int]:
        """The loop's model-specific part: the next windows, augmented, through the network; the loss."""
        x, y, reset = self.windows.get(step % self.per_epoch, self.gen, step // self.per_epoch)
        x, y = _augment(self.tokenizer, self.cfg, x, y, step // self.per_epoch)
        x, y = x.to(self.device), y.to(self.device)
        state = _reset(self.carry, reset.to(self.device))
        n_targets = int((y != PAD).sum())
        if n_targets == 0 and self.world == 1:  # padding alone: nothing to learn (under DDP the ranks agree first)
            self.new_carry = state
            return torch.zeros((), device=self.device), 0
        with autocast(self.device, self.cfg.precision):
            logits, self.new_carry = self.model(x, state)  # (B, T, V)
        return F.cross_entropy(logits.float().flatten(0, 1), y.flatten(), ignore_index=PAD, reduction="sum"), n_targets

    def after_step(self) -> None:
        self.carry = _detach(self.new_carry) if self.cfg.windows != "random" else None
        self.st["step"] += 1

    def diverged(self, step: int, loss_value: float) -> None:
        self.save_last(step)
        raise MusiclstmError(f"training diverged at step {step}: the loss is {loss_value} "
                             f"(last.pt holds step {step}; lower --lr)")

    def validate(self, step: int, train_loss: float, tok_s: float) -> bool:
        """Score the validation pieces, record the row, save last.pt (and best.pt); True: stop early."""
        cfg, st, valid_seqs = self.cfg, self.st, self.valid_seqs
        val = mean_over_ranks(evaluate_nll(self.net, valid_seqs, cfg, self.device) if valid_seqs else float("nan"),
                              self.world, self.device)
        row = {"step": step, "epoch": round(step / self.per_epoch, 3), "train_nll": round(train_loss, 5),
               "val_nll": round(val, 5), "val_bits": round(val / math.log(2), 5),
               "lr": self.opt.param_groups[0]["lr"],  # the rate the last step applied (with the clock's share)
               "tokens_per_s": round(tok_s, 1), "time": round(time.time(), 1),
               "elapsed_s": round(float(st.get("elapsed", 0.0)), 1)}  # seconds of training so far, across resumes
        st["history"].append(row)
        if math.isnan(val) and valid_seqs:  # a validation set that scores NaN: the run has diverged
            raise MusiclstmError(f"training diverged at step {step}: validation NLL is NaN "
                                 f"(last.pt is kept; lower --lr or raise --warmup)")
        improved = not valid_seqs or val < st["best"]  # without a validation set the latest weights are best
        if improved:
            st["best"], st["bad_evals"] = (val if valid_seqs else st["best"]), 0
        else:
            st["bad_evals"] += 1
        self.bar.set_postfix(loss=f"{train_loss:.3f}", val=f"{val:.3f}", best=f"{st['best']:.3f}",
                             tok_s=f"{tok_s:,.0f}")
        if self.is_main:
            with open(self.out / "metrics.jsonl", "a") as fh:
                fh.write(json.dumps(row) + "\n")
        self.save_last(step)  # on every rank: it gathers each rank's state
        if self.is_main:
            if improved:
                self._save_best(step)
            _plot(self.out, st["history"])
            _sample(self.net, self.tokenizer, cfg, self.out / "samples" / f"step{step:07d}.mid", self.device)
            if self.callback is not None:
                self.callback(dict(row))
        return agree([st["bad_evals"] >= cfg.patience], self.world, self.device)[0]

    def _save_best(self, step: int) -> None:
        self.best["meta"] = self.meta(step)
        checkpoint.save(self.out / "best.pt", self.net, self.tokenizer, self.best["meta"])
        if self.cfg.cache and self.valid_seqs:  # the weights the cache is tuned on at the end, kept in memory
            self.best["weights"] = {k: v.detach().to("cpu", copy=True) for k, v in self.net.state_dict().items()}

    def run(self) -> Path:
        from tqdm.auto import tqdm

        if self.is_main:
            self._prepare_out()
            if self.progress and self.resume_blob is None:  # a resumed run said it all when it started
                tqdm.write(self.corpus.report())
        step, total = self.st["step"], self.total
        self.net.train()
        self.bar = tqdm(total=total, initial=step, desc="training", unit="step",
                        disable=not (self.progress and self.is_main), dynamic_ncols=True)
        if self.resume_blob is not None and self.is_main:  # said on or off a terminal (not a progress bar)
            tqdm.write(f"resuming {self.out} at step {step:,} of {total:,} (epoch {step / self.per_epoch:.2f}, "
                       f"best validation NLL {self.st['best']:.4f})", file=sys.stderr)
        end = run_loop(self.net, self.opt, self.cfg, step=step, total=total, eval_every=self.eval_every,
                       step_loss=self.step_loss, after_step=self.after_step, validate=self.validate,
                       diverged=self.diverged, bar=self.bar, world=self.world, device=self.device, clock=self.st)
        if end.interrupted:
            self.save_last(end.step)
            self.bar.close()
            raise KeyboardInterrupt
        self.bar.close()
        if not self.st["history"] or self.st["history"][-1]["step"] != end.step:
            self.validate(end.step, end.train_loss, end.tokens_per_s)
        self._tune_cache()
        return self.out / "best.pt"

    def _tune_cache(self) -> None:
        """The end of the run: the continuous cache tuned on up to 40 validation pieces, best.pt saved once."""
        if not (self.cfg.cache and self.valid_seqs and self.is_main and (self.out / "best.pt").exists()):
            return
        from .tune import save_tuned, tune_checkpoint

        # up to 40 pieces and TUNE_TOKENS tokens: each token of the grid search costs a window of states
        pieces = _first_tokens(self.valid_seqs, TUNE_TOKENS)[:40]
        if "weights" in self.best:  # tuned on the best weights in memory and saved once
            tuned = MusicLSTM(self.mcfg).to(self.device)
            tuned.load_state_dict(self.best["weights"])
            c = save_tuned(self.out / "best.pt", tuned, self.tokenizer, self.best["meta"], pieces)
        else:  # a resumed run whose best weights are those of an earlier process
            c = tune_checkpoint(self.out / "best.pt", pieces)
        if self.progress:
            from tqdm.auto import tqdm

            tqdm.write(f"continuous cache tuned on {len(pieces)} validation pieces: "
                       f"lam {c.lam}, theta {c.theta}")



def _augment(tokenizer: Tokenizer, cfg: TrainConfig, x: torch.Tensor, y: torch.Tensor, epoch: int):
    """Transpose and tempo-stretch each lane (row) of a batch by its own amount, drawn once per epoch.

    With TBPTT a lane's state runs on from one window into the next, so the amount must not change
    between them: a fresh transposition every window would show the model keys that jump for no
    reason, and it learns to wander between keys. The amounts come from (seed, epoch) alone, so a
    resumed run draws the same ones.
    """
    if not (cfg.augment_transpose or cfg.augment_stretch):
        return x, y
    g = torch.Generator().manual_seed(cfg.seed * 100_003 + epoch)
    B = x.shape[0]
    k = torch.randint(-cfg.augment_transpose, cfg.augment_transpose + 1, (B, 1), generator=g)
    u = torch.rand(B, 1, generator=g, dtype=torch.float64) * 2 - 1  # log-uniform stretch in [1/(1+s), 1+s]
    f = torch.exp(u * math.log1p(cfg.augment_stretch))
    if cfg.augment_transpose:
        x, y = transpose(tokenizer, x, k), transpose(tokenizer, y, k)
    if cfg.augment_stretch:
        x, y = stretch(tokenizer, x, f), stretch(tokenizer, y, f)
    return x, y


def _plot(out: Path, history: list[dict]) -> None:
    from ..io.plot import save_loss_curve

    save_loss_curve(history, out / "loss.png")


def _sample(net: MusicLSTM, tokenizer: Tokenizer, cfg: TrainConfig, path: Path, device) -> None:
    if cfg.sample_tokens <= 0:
        return
    from ..generation.sample import generate
    from ..io.midi import write_midi

    ids = generate(net, max_tokens=cfg.sample_tokens, temperature=1.0, seed=cfg.seed, device=device)[0]
    write_midi(tokenizer.decode_score(ids), path, force=True)
    net.train()


def _data_meta(corpus, cfg) -> dict:
    """What a checkpoint records of its data: size, programs, note density and the pitch range it learned
    (widened by --augment's transpositions), so that compose offers nothing the model never saw."""
    data = {k: v for k, v in corpus.to_json().items() if k in ("files", "tokens", "hours", "programs", "density_p99",
                                                                 "pitch_range")}
    shift = int(getattr(cfg, "augment_transpose", 0) or 0)
    if data.get("pitch_range"):
        lo, hi = data["pitch_range"]
        data["pitch_range"] = [max(0, lo - shift), min(127, hi + shift)]
    return data


TUNE_TOKENS = 20_000  # the continuous cache is tuned on the first validation pieces up to this many tokens


def _first_tokens(seqs: data.Sequences, budget: int | None) -> data.Sequences:
    """The first pieces of `seqs` whose tokens add up to at most `budget` (at least one piece); all without one."""
    if not budget or len(seqs) <= 1:
        return seqs
    k = int(np.searchsorted(np.cumsum(seqs.lengths), budget, side="right"))
    return data.Sequences(seqs.tokens, seqs.starts[:max(1, min(k, len(seqs))) + 1])
