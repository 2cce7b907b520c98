"""Training: `train(corpus, out, **options)` from MIDI folders to a self-contained checkpoint.

The loop is the word-language-model recipe (stateful truncated BPTT, gradient clipping, AdamW)
with a warmup + cosine schedule, early stopping on validation NLL, atomic checkpoints, exact
resume, and PyTorch DDP when started under `torchrun`. It knows nothing about music: it sees the
token streams that `data.prepare` makes.

Under DDP every stop (Ctrl-C, `max_time`, early stopping, a NaN loss) is decided by all ranks
together, `last.pt` keeps each rank's random generators and carried LSTM state (gathered to rank 0,
under resume["ranks"]), and a run resumes only with the number of processes it was started with.
"""

from __future__ import annotations

import functools
import json
import math
import os
import time
from dataclasses import asdict, dataclass, fields, replace
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

PRESETS = {  # model sizes and schedules; any field can be overridden
    "tiny": dict(embed=64, hidden=128, layers=2, seq_len=128, batch_size=16, lr=3e-3),
    "small": dict(embed=256, hidden=256, layers=2, seq_len=256, batch_size=32, lr=2e-3),
    "medium": dict(embed=256, hidden=512, layers=3, seq_len=256, batch_size=64, lr=1e-3),
    "large": dict(embed=512, hidden=1024, layers=3, seq_len=512, batch_size=64, lr=5e-4),
}


@dataclass
class TrainConfig:
    """Everything a training run needs besides the data. Stored in every checkpoint."""

    encoding: str = "remi"  #: performance, remi or grid
    preset: str = "small"  #: tiny, small, medium or large (see PRESETS)
    embed: int = 256  #: embedding width
    hidden: int = 256  #: LSTM state size per layer
    layers: int = 2  #: LSTM layers
    dropout: float = 0.1  #: dropout between layers and before the output
    cell: str = "lstm"  #: lstm, gru or rnn
    tie_weights: bool = False  #: share embedding and output weights (needs embed == hidden)
    seq_len: int = 256  #: tokens per training window
    batch_size: int = 32  #: windows per step (per process under torchrun)
    lr: float = 2e-3  #: peak learning rate (AdamW)
    weight_decay: float = 0.01  #: AdamW weight decay
    warmup_steps: int = 100  #: linear warmup, then cosine decay to 10 % of `lr`
    grad_clip: float = 1.0  #: gradient norm clipping
    epochs: int = 20  #: passes over the training stream
    max_steps: int | None = None  #: stop after this many optimizer steps
    max_time: float | None = None  #: stop after this many seconds of training
    anneal_by_time: bool = False  #: with max_time: the cosine decay follows the clock, so a run on a busy
    #: machine still ends at the lowest learning rate (a resumed run is then not bit-exact)
    windows: str = "pieces"  #: pieces (each piece from a fresh state, carried within it), tbptt (one stream) or random
    val_fraction: float = 0.1  #: share of files held out, by content hash (a csv split wins)
    val_tokens: int | None = 250_000  #: validation scores the held-out pieces (in their fixed order) up to this
    #: many tokens, so its cost does not grow with the corpus (0 or None: every held-out piece)
    eval_every: int | None = None  #: steps between validations (default: once an epoch)
    patience: int = 5  #: stop after this many validations without improvement
    augment_transpose: int = 0  #: random transposition in [-n, n] semitones, per lane, held for an epoch
    augment_stretch: float = 0.0  #: random tempo stretch by a factor in [1/(1+s), 1+s], per lane and epoch
    styles: str = "none"  #: conditioning: none, folder (top sub-folder name) or corpus (corpus name)
    precision: str = "auto"  #: auto (bf16 on GPUs and CPUs with native bf16, else fp32), fp32, bf16 or fp16 (CUDA)
    device: str = "auto"  #: auto, cpu, cuda, cuda:N or mps
    seed: int = 0  #: seeds initialisation, window order and samples
    jobs: int | None = None  #: worker processes for preparation (default: all cores)
    sample_tokens: int = 256  #: length of the sample MIDI written at each validation (0: none)
    cache: bool = True  #: at the end, tune the continuous cache (musiclstm.models.cache) on up to 40 validation pieces
    #: and TUNE_TOKENS tokens

    @classmethod
    def build(cls, preset: str = "small", config_file: str | os.PathLike | None = None, **overrides) -> TrainConfig:
        """Defaults, then the preset, then a TOML file, then explicit overrides (None = not given)."""
        if preset not in PRESETS:
            raise ConfigError(f"unknown preset {preset!r}; choose one of {', '.join(PRESETS)}")
        values = {**PRESETS[preset], "preset": preset}
        if config_file is not None:
            import tomllib

            try:
                values.update(tomllib.loads(Path(config_file).read_text()))
            except (OSError, tomllib.TOMLDecodeError) as e:
                raise ConfigError(f"cannot read config {config_file}: {e}") from e
        values.update({k: v for k, v in overrides.items() if v is not None})
        names = {f.name for f in fields(cls)}
        unknown = set(values) - names
        if unknown:
            raise ConfigError(f"unknown training option(s): {', '.join(sorted(unknown))}")
        cfg = cls(**values)
        cfg.check()
        return cfg

    def check(self) -> None:
        if self.windows not in ("pieces", "tbptt", "random"):
            raise ConfigError("windows must be pieces, tbptt or random")
        if self.precision not in ("auto", "fp32", "bf16", "fp16"):
            raise ConfigError("precision must be auto, fp32, bf16 or fp16")
        if self.styles not in ("none", "folder", "corpus"):
            raise ConfigError("styles must be none, folder or corpus")
        if min(self.seq_len, self.batch_size, self.epochs) < 1 or self.lr <= 0:
            raise ConfigError("seq_len, batch_size and epochs must be >= 1 and lr > 0")
        if not 0 <= self.val_fraction < 1:
            raise ConfigError("val_fraction must be in [0, 1)")


def pick_device(name: str) -> torch.device:
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError("--device cuda: no CUDA GPU is available")
    return torch.device(name)


# `--precision auto` on a CPU with native bf16: bf16 autocast. bench/precision.py measured it faster and
# no worse on such a CPU (see README, "Precision"); set False to keep fp32 there.
CPU_BF16_AUTO = True


@functools.cache
def native_bf16() -> bool:
    """Whether this CPU has bf16 arithmetic in hardware (AVX512-BF16 or AMX), where bf16 autocast pays;
    elsewhere PyTorch emulates it, slower than fp32."""
    try:
        return bool(torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported())
    except AttributeError:  # an older or other build: read the flags
        try:
            flags = Path("/proc/cpuinfo").read_text().split()
        except OSError:
            return False
        return "avx512_bf16" in flags or "amx_bf16" in flags


def resolve_precision(precision: str, device: torch.device) -> str:
    """What `precision` (auto, fp32, bf16, fp16) means on `device`: fp32, bf16 or fp16 (CUDA only).

    auto is bf16 on CUDA GPUs that have it and on CPUs with native bf16 (`native_bf16`, with
    `CPU_BF16_AUTO`), fp32 elsewhere. The choice is recorded in each checkpoint's meta["precision"].
    """
    if precision == "auto":
        if device.type == "cuda":
            return "bf16" if torch.cuda.is_bf16_supported() else "fp32"
        return "bf16" if device.type == "cpu" and CPU_BF16_AUTO and native_bf16() else "fp32"
    if precision == "fp16" and device.type != "cuda":
        return "fp32"  # fp16 autocast is CUDA's mixed precision (with a grad scaler elsewhere); not on CPU
    return precision


def _autocast(device: torch.device, precision: str):
    p = resolve_precision(precision, device)
    if p in ("bf16", "fp16"):
        return torch.autocast(device.type, dtype=torch.bfloat16 if p == "bf16" else torch.float16)
    return torch.autocast(device.type, enabled=False)


def lr_at(step: int, cfg: TrainConfig, total: int, elapsed: float = 0.0) -> float:
    """Linear warmup, then cosine decay to 10 % of `cfg.lr` by step `total` (or by `max_time` seconds of
    `elapsed` training, whichever is sooner, with `anneal_by_time`)."""
    if step < cfg.warmup_steps:
        return cfg.lr * (step + 1) / cfg.warmup_steps
    progress = min(1.0, (step - cfg.warmup_steps) / max(1, total - cfg.warmup_steps))
    if cfg.anneal_by_time and cfg.max_time:
        progress = max(progress, min(1.0, elapsed / cfg.max_time))
    return cfg.lr * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * progress)))


@torch.no_grad()
def evaluate_nll(net: MusicLSTM, sequences: list, cfg: TrainConfig, device: torch.device) -> float:
    """Mean next-token NLL (nats) over pieces (BOS ... EOS id arrays), each from a fresh state."""
    net.eval()
    win = data.PieceWindows(sequences, max(1, min(16, len(sequences))), cfg.seq_len, shuffle=False)
    total, count, state = 0.0, 0, None
    for i in range(win.batches_per_epoch):
        x, y, reset = win.get(i)
        state = _reset(state, reset.to(device))
        with _autocast(device, cfg.precision):
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


def train(corpus, out, *, resume: bool = False, force: bool = False, progress: bool = True,
          cache_dir=None, config_file=None, preset: str = "small", callback=None, **options) -> Path:
    """Prepare `corpus` (a folder, a file, or a list of them), train, and return the best checkpoint path.

    `corpus` may also be an already prepared `data.Corpus` (with its tokenizer): its "train" and
    "valid" pieces are used as they are (that is how `benchmark jsb` trains on the JSB arrays).

    Options are the fields of `TrainConfig`. `callback(row)`, if given, is called with the metrics
    row after every validation (a notebook draws a live loss curve with it). Writes into `out`:
    last.pt, best.pt, config.json, metrics.jsonl, loss.png, data_report.json and samples/.
    """
    out = Path(out)
    if isinstance(corpus, data.Corpus):
        corpora = corpus
    else:
        corpora = data.as_paths(corpus)
    rank, world = int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1))
    resume_blob = None
    if resume:
        last = out / "last.pt"
        if not last.is_file():
            raise MusiclstmError(f"nothing to resume: {last} does not exist")
        resume_blob = checkpoint.read(last)
        saved_world = resume_blob["meta"].get("world_size", 1)
        if saved_world != world:  # lanes, generators and carried states are per process: no re-sharding
            raise ConfigError(f"{last} was trained by {saved_world} process(es) and cannot resume with {world}; "
                              f"resume with the same number (torchrun --nproc_per_node, times nodes)")
        saved = resume_blob["meta"]["train"]
        saved = {"val_tokens": None, **saved}  # a run from before the validation budget validated on every piece
        cfg = replace(TrainConfig(**saved), **{k: v for k, v in options.items()
                                               if v is not None and k in ("epochs", "max_steps", "max_time",
                                                                          "patience", "device", "jobs")})
    else:
        if (out / "last.pt").exists() and not force:
            raise MusiclstmError(f"{out} already holds a run; use --resume to continue it or --force to start over")
        cfg = TrainConfig.build(preset, config_file, **options)

    device = pick_device(cfg.device)
    if world > 1 and device.type == "cuda":
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))
        torch.cuda.set_device(device)
    owns_group = world > 1 and not torch.distributed.is_initialized()  # a caller's group is left to the caller
    if owns_group:
        torch.distributed.init_process_group("nccl" if device.type == "cuda" else "gloo")
    is_main = rank == 0
    try:
        best = _run(corpora, out, cfg, device, rank, world, is_main, resume_blob, progress, cache_dir, callback)
        if world > 1:
            torch.distributed.barrier()  # rank 0 may still be writing files; leave together
        return best
    finally:
        if owns_group and torch.distributed.is_initialized():
            torch.distributed.destroy_process_group()


def _run(corpora, out, cfg, device, rank, world, is_main, resume_blob, progress, cache_dir, callback) -> Path:
    from tqdm.auto import tqdm

    torch.manual_seed(cfg.seed)
    if isinstance(corpora, data.Corpus):  # prepared by the caller, with its tokenizer
        corpus, tokenizer = corpora, corpora.tokenizer
    else:
        if resume_blob is not None:
            tokenizer = Tokenizer.from_dict(resume_blob["meta"]["tokenizer"])
        else:  # styles come from sub-folders or corpus names; the tokenizer must know them before training
            found = sorted({data.style_of(f, Path(c), cfg.styles) for c in corpora
                            for f in data.find_files(Path(c))}) if cfg.styles != "none" else []
            tokenizer = Tokenizer(cfg.encoding, styles=tuple(s for s in found if s))
        # every rank tokenizes its share into the shared cache; rank 0 writes the token store, the others wait
        corpus = data.prepare(corpora, tokenizer, val_fraction=cfg.val_fraction, styles=cfg.styles, jobs=cfg.jobs,
                              cache_dir=cache_dir, progress=progress and is_main, rank=rank, world=world)
    if resume_blob is not None and resume_blob["meta"].get("fingerprint") != corpus.fingerprint:
        raise MusiclstmError("the corpus changed since this run started (data fingerprint differs); "
                             "start a new run instead of --resume")
    # pieces laid end to end, memory-mapped from the token store; the first of them up to the token budget
    valid_seqs = _first_tokens(corpus.sequences("valid"), cfg.val_tokens)
    if cfg.windows == "pieces":
        windows = data.PieceWindows(corpus.sequences("train"), cfg.batch_size, cfg.seq_len, rank=rank, world=world,
                                    seed=cfg.seed)
    else:
        windows = data.Windows(corpus.sequences("train").tokens, cfg.batch_size, cfg.seq_len, cfg.windows, rank,
                               world)
    per_epoch = windows.batches_per_epoch
    total = min(cfg.epochs * per_epoch, cfg.max_steps or 10**12)
    eval_every = cfg.eval_every or per_epoch

    mcfg = ModelConfig(tokenizer.vocab_size, cfg.embed, cfg.hidden, cfg.layers, cfg.dropout, cfg.cell, cfg.tie_weights)
    net = MusicLSTM(mcfg).to(device)
    if rank:  # the same initial weights on every rank (DDP checks), then a dropout stream of each rank's own
        torch.manual_seed(cfg.seed * 1000 + rank)
    # the fused kernel: one pass over all parameters (0.8 vs 3.9 ms a step for the small preset on one
    # CPU thread; PyTorch's default on CPU is a Python loop over the tensors)
    opt = torch.optim.AdamW(net.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay,
                            fused=device.type in ("cpu", "cuda"))
    gen = torch.Generator().manual_seed(cfg.seed * 1000 + rank)
    st = {"step": 0, "best": float("inf"), "bad_evals": 0, "history": []}
    carry = None
    if resume_blob is not None:
        net.load_state_dict(resume_blob["weights"])
        r = resume_blob["resume"]
        opt.load_state_dict(r["optimizer"])
        st = json.loads(r["progress"])
        mine = r["ranks"][rank] if "ranks" in r else r  # a file from before per-rank state: one process's
        gen.set_state(mine["generator"])
        torch.set_rng_state(mine["torch_rng"])
        if "cuda_rng" in mine and device.type == "cuda":
            torch.cuda.set_rng_state(mine["cuda_rng"], device)
        if "carry_h" in mine and cfg.windows != "random":
            h = mine["carry_h"].to(device)
            carry = (h, mine["carry_c"].to(device)) if "carry_c" in mine else h
    model = torch.nn.parallel.DistributedDataParallel(net) if world > 1 else net

    if is_main:
        out.mkdir(parents=True, exist_ok=True)
        (out / "samples").mkdir(exist_ok=True)
        for stale in out.glob(".*.tmp"):  # left by a process killed while writing a checkpoint
            stale.unlink(missing_ok=True)
        if resume_blob is None:  # a fresh run (--force): nothing of the previous run's may mix in
            for old in [out / n for n in ("metrics.jsonl", "best.pt", "last.pt", "loss.png")] + \
                    list((out / "samples").glob("*.mid")):
                old.unlink(missing_ok=True)
        (out / "config.json").write_text(json.dumps({"train": asdict(cfg), "model": asdict(mcfg),
                                                     "tokenizer": tokenizer.to_dict()}, indent=2))
        (out / "data_report.json").write_text(json.dumps(corpus.to_json(), indent=2))
        if progress and resume_blob is None:  # a resumed run said it all when it started
            tqdm.write(corpus.report())

    def meta(step: int) -> dict:
        return {"step": step, "epoch": step / per_epoch, "train": asdict(cfg), "fingerprint": corpus.fingerprint,
                "metrics": st["history"][-1] if st["history"] else {}, "best_val_nll": st["best"],
                "data": {k: v for k, v in corpus.to_json().items() if k in ("files", "tokens", "hours", "programs",
                                                                             "density_p99")},
                "world_size": world, "precision": resolve_precision(cfg.precision, device), "torch": torch.__version__}

    def save_last(step: int) -> None:
        """last.pt: weights, optimizer and progress (the same on every rank) and, under "ranks", each
        rank's own random generators and carried state, gathered to rank 0 (a collective: every rank
        calls it at the same step)."""
        mine = {"generator": gen.get_state(), "torch_rng": torch.get_rng_state()}
        if device.type == "cuda":
            mine["cuda_rng"] = torch.cuda.get_rng_state(device)
        if carry is not None:
            h, c = carry if isinstance(carry, tuple) else (carry, None)
            mine["carry_h"] = h.detach().cpu()
            if c is not None:
                mine["carry_c"] = c.detach().cpu()
        ranks = [mine]
        if world > 1:
            ranks = [None] * world if is_main else None
            torch.distributed.gather_object(mine, ranks, dst=0)
        st["elapsed"] = elapsed()
        if is_main:
            r = {"optimizer": opt.state_dict(), "progress": json.dumps(st), "ranks": ranks}
            checkpoint.save(out / "last.pt", net, tokenizer, meta(step), r)

    def validate(step: int, train_loss: float, tok_s: float) -> bool:
        nonlocal carry
        val = _mean_over_ranks(evaluate_nll(net, valid_seqs, cfg, device) if valid_seqs else float("nan"),
                               world, device)
        row = {"step": step, "epoch": round(step / per_epoch, 3), "train_nll": round(train_loss, 5),
               "val_nll": round(val, 5), "val_bits": round(val / math.log(2), 5),
               "lr": opt.param_groups[0]["lr"],  # the rate the last step applied (with the clock's share)
               "tokens_per_s": round(tok_s, 1), "time": round(time.time(), 1)}
        st["history"].append(row)
        if math.isnan(val) and valid_seqs:  # a validation set that scores NaN: the run has diverged
            raise MusiclstmError(f"training diverged at step {step}: validation NLL is NaN "
                                 f"(last.pt is kept; lower --lr or raise --warmup)")
        improved = not valid_seqs or val < st["best"]  # without a validation set the latest weights are best
        if improved:
            st["best"], st["bad_evals"] = (val if valid_seqs else st["best"]), 0
        else:
            st["bad_evals"] += 1
        bar.set_postfix(loss=f"{train_loss:.3f}", val=f"{val:.3f}", best=f"{st['best']:.3f}",
                        tok_s=f"{tok_s:,.0f}")
        if is_main:
            with open(out / "metrics.jsonl", "a") as fh:
                fh.write(json.dumps(row) + "\n")
        save_last(step)  # on every rank: it gathers each rank's state
        if is_main:
            if improved:
                checkpoint.save(out / "best.pt", net, tokenizer, meta(step))
            _plot(out, st["history"])
            _sample(net, tokenizer, cfg, out / "samples" / f"step{step:07d}.mid", device)
            if callback is not None:
                callback(dict(row))
        return _agree([st["bad_evals"] >= cfg.patience], world, device)[0]

    net.train()
    t0, tokens, loss_sum, loss_n = time.time(), 0, 0.0, 0
    spent = float(st.get("elapsed", 0.0))  # training seconds before a resume: the budget and the clock go on

    def elapsed() -> float:
        """Seconds of training of this run, across resumes (what --max-time and --anneal-by-time count)."""
        return spent + time.time() - t0
    bar = tqdm(total=total, initial=st["step"], desc="training", unit="step", disable=not (progress and is_main),
               dynamic_ncols=True)
    step = st["step"]
    if resume_blob is not None and is_main and progress:
        tqdm.write(f"resuming {out} at step {step:,} of {total:,} (epoch {step / per_epoch:.2f}, "
                   f"best validation NLL {st['best']:.4f})")
    # Ctrl-C only raises a flag: the step in flight completes, so the saved weights, optimizer, step
    # and carried state always belong together, and no KeyboardInterrupt can land inside a library
    # callback (where Python would print "Exception ignored" and carry on training).
    # Under DDP every stop is decided by all ranks together (an all-reduce of the flags): a rank that
    # left the loop alone, a step before the others, would leave them waiting in a collective forever.
    stop = _Interrupt()
    with stop:
        while step < total:
            out_of_time = cfg.max_time is not None and elapsed() > cfg.max_time
            if any(_agree([stop.flag, out_of_time], world, device)):
                break
            x, y, reset = windows.get(step % per_epoch, gen, step // per_epoch)
            x, y = _augment(tokenizer, cfg, x, y, step // per_epoch)
            x, y = x.to(device), y.to(device)
            state = _reset(carry, reset.to(device))
            n_targets = int((y != PAD).sum())
            # real targets on all ranks together, and the ranks' mean clock (one learning rate on every rank)
            n_all, clock = _sum_over_ranks([n_targets, elapsed()], world, device)
            n_all, clock = int(n_all), clock / world
            if n_all == 0:  # only padding on every rank (the end of an epoch): no step moves the weights
                carry = _detach(state) if cfg.windows != "random" else None
            else:
                for g in opt.param_groups:
                    g["lr"] = lr_at(step, cfg, total, clock)
                with _autocast(device, cfg.precision):
                    logits, new_carry = model(x, state)  # (B, T, V)
                nll = F.cross_entropy(logits.float().flatten(0, 1), y.flatten(), ignore_index=PAD, reduction="sum")
                # each real target weighs the same on every rank: DDP averages the ranks' gradients, so each
                # rank divides its sum by the mean number of targets per rank
                loss = nll / (n_all / world)
                nll_all = _sum_over_ranks([nll.item()], world, device)[0]  # a NaN on any rank is a NaN on all
                loss_value = nll_all / n_all
                if not math.isfinite(loss_value):
                    save_last(step)
                    raise MusiclstmError(f"training diverged at step {step}: the loss is {loss_value} "
                                         f"(last.pt holds step {step}; lower --lr)")
                opt.zero_grad(set_to_none=True)
                loss.backward()
                torch.nn.utils.clip_grad_norm_(net.parameters(), cfg.grad_clip)
                opt.step()
                carry = _detach(new_carry) if cfg.windows != "random" else None
                loss_sum, loss_n = loss_sum + nll_all, loss_n + n_all  # train_nll: nats per real target
            step += 1  # weights, step and carry now agree
            st["step"] = step
            tokens += n_all
            tok_s = tokens / max(1e-9, time.time() - t0)
            bar.update(1)
            if step % eval_every == 0 or step == total:
                if validate(step, loss_sum / max(1, loss_n), tok_s):
                    break
                loss_sum, loss_n = 0.0, 0
            elif step % 10 == 0:
                last_val = st["history"][-1]["val_nll"] if st["history"] else float("nan")
                bar.set_postfix(loss=f"{loss_sum / max(1, loss_n):.3f}", val=f"{last_val:.3f}", tok_s=f"{tok_s:,.0f}")
        interrupted = _agree([stop.flag], world, device)[0]  # a Ctrl-C on any rank during the last step
    if interrupted:
        save_last(step)
        bar.close()
        raise KeyboardInterrupt
    bar.close()
    if not st["history"] or st["history"][-1]["step"] != step:
        validate(step, loss_sum / max(1, loss_n), tokens / max(1e-9, time.time() - t0))
    if cfg.cache and valid_seqs and is_main and (out / "best.pt").exists():
        from .tune import tune_checkpoint

        # up to 40 pieces and TUNE_TOKENS tokens: each token of the grid search costs a window of states
        tuning = _first_tokens(valid_seqs, TUNE_TOKENS)[:40]
        c = tune_checkpoint(out / "best.pt", tuning)
        if progress:
            tqdm.write(f"continuous cache tuned on {len(tuning)} validation pieces: "
                       f"lam {c.lam}, theta {c.theta}")
    return out / "best.pt"


TUNE_TOKENS = 20_000  # the continuous cache is tuned on the first validation pieces up to this many tokens


def _first_tokens(seqs: data.Sequences, budget: int | None) -> data.Sequences:
    """The first pieces of `seqs` whose tokens add up to at most `budget` (at least one piece); all without one."""
    if not budget or len(seqs) <= 1:
        return seqs
    k = int(np.searchsorted(np.cumsum(seqs.lengths), budget, side="right"))
    return data.Sequences(seqs.tokens, seqs.starts[:max(1, min(k, len(seqs))) + 1])


def _agree(flags: list[bool], world: int, device: torch.device) -> list[bool]:
    """Each flag, True on every rank if it is True on any (an all-reduce under DDP; as given alone)."""
    if world == 1:
        return [bool(f) for f in flags]
    t = torch.tensor([float(f) for f in flags], device=device)
    torch.distributed.all_reduce(t, op=torch.distributed.ReduceOp.MAX)
    return [bool(v) for v in t.tolist()]


def _sum_over_ranks(values: list[float], world: int, device: torch.device) -> list[float]:
    """Each value summed over all ranks, the same on each (as given alone)."""
    if world == 1:
        return list(values)
    t = torch.tensor(values, dtype=torch.float64, device=device)
    torch.distributed.all_reduce(t)
    return t.tolist()


def _mean_over_ranks(value: float, world: int, device: torch.device) -> float:
    """The mean of `value` over all ranks, the same on each (a NaN anywhere gives NaN everywhere)."""
    if world == 1:
        return value
    t = torch.tensor([value], dtype=torch.float64, device=device)
    torch.distributed.all_reduce(t)
    return t.item() / world


class _Interrupt:
    """While active, SIGINT (Ctrl-C) sets `flag` instead of raising; a second Ctrl-C raises at once."""

    def __init__(self):
        self.flag = False
        self._old = None

    def _handle(self, signum, frame):
        if self.flag:
            raise KeyboardInterrupt
        self.flag = True

    def __enter__(self):
        import signal
        import threading

        if threading.current_thread() is threading.main_thread():
            self._old = signal.signal(signal.SIGINT, self._handle)
        return self

    def __exit__(self, *exc):
        import signal

        if self._old is not None:
            signal.signal(signal.SIGINT, self._old)
        return False


def _detach(state):
    if state is None:
        return None
    return tuple(s.detach() for s in state) if isinstance(state, tuple) else state.detach()


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
