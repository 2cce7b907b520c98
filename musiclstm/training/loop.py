"""The one training loop both model kinds use, and what it needs: devices, precision, the schedule, Ctrl-C.

`run_loop` steps an optimizer until the step budget, the clock, Ctrl-C or early stopping ends the
run; everything model-specific comes in as calls: `step_loss(step)` (a batch and its loss),
`after_step()` (e.g. carry the LSTM state on), `validate(step, train_loss, tokens_per_s)` (score,
record, save; True stops the run) and `diverged(step, loss)` (save what can be saved, raise).
Under DDP (`world` > 1) every stop is decided by all ranks together (an all-reduce of the flags):
a rank that left the loop alone, a step before the others, would leave them waiting forever.
May import: errors. Not: data, models, generation, evaluation, app.
"""

from __future__ import annotations

import functools
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch

from ..errors import ConfigError


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


def starting_point(init, kind: str, options: dict, sizes: tuple[str, ...]):
    """Fine-tuning: the checkpoint `init` (a file or bundled name) of model `kind`, and `options` with its network
    `sizes` filled in from it (an explicit size is refused: the network is the checkpoint's). (None, options)
    without `init`."""
    if init is None:
        return None, options
    from ..errors import MusiclstmError
    from ..models import checkpoint

    given = [k for k in sizes if options.get(k) is not None]
    if given:
        raise MusiclstmError(f"--{given[0].replace('_', '-')} does not apply with --init: the network is the "
                             f"checkpoint's")
    start = checkpoint.load(init, kind=kind)
    return start, {**options, **{k: getattr(start.net.config, k) for k in sizes}}


def autocast(device: torch.device, precision: str):
    p = resolve_precision(precision, device)
    if p in ("bf16", "fp16"):
        return torch.autocast(device.type, dtype=torch.bfloat16 if p == "bf16" else torch.float16)
    return torch.autocast(device.type, enabled=False)


def lr_at(step: int, cfg, total: int, elapsed: float = 0.0) -> float:
    """Linear warmup, then cosine decay to 10 % of `cfg.lr` by step `total` (or by `max_time` seconds of
    `elapsed` training, whichever is sooner, with `anneal_by_time`)."""
    if step < cfg.warmup_steps:
        return cfg.lr * (step + 1) / cfg.warmup_steps
    progress = min(1.0, (step - cfg.warmup_steps) / max(1, total - cfg.warmup_steps))
    if cfg.anneal_by_time and cfg.max_time:
        progress = max(progress, min(1.0, elapsed / cfg.max_time))
    return cfg.lr * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * progress)))


def agree(flags: list[bool], world: int, device: torch.device) -> list[bool]:
    """Each flag, True on every rank if it is True on any (an all-reduce under DDP; as given alone)."""
    if world == 1:
        return [bool(f) for f in flags]
    t = torch.tensor([float(f) for f in flags], device=device)
    torch.distributed.all_reduce(t, op=torch.distributed.ReduceOp.MAX)
    return [bool(v) for v in t.tolist()]


def mean_over_ranks(value: float, world: int, device: torch.device) -> float:
    """The mean of `value` over all ranks, the same on each (a NaN anywhere gives NaN everywhere)."""
    if world == 1:
        return value
    t = torch.tensor([value], dtype=torch.float64, device=device)
    torch.distributed.all_reduce(t)
    return t.item() / world


class Interrupt:
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


@dataclass
class LoopEnd:
    """Where `run_loop` stopped: the step, whether Ctrl-C ended it, and the training loss and speed since
    the last validation (for a final one)."""

    step: int
    interrupted: bool
    train_loss: float
    tokens_per_s: float
    validated: bool  #: whether the last step was validated
    elapsed: float = 0.0  #: seconds of training of the run, across resumes


def run_loop(net: torch.nn.Module, opt: torch.optim.Optimizer, cfg, *, step: int, total: int, eval_every: int,
             step_loss: Callable[[int], tuple[torch.Tensor, int]], validate: Callable[[int, float, float], bool],
             diverged: Callable[[int, float], None], after_step: Callable[[], None] | None = None,
             bar=None, world: int = 1, device: torch.device | None = None, clock: dict | None = None) -> LoopEnd:
    """Train from `step` to `total`: set the learning rate (`lr_at`), take `step_loss(step)` -> (summed NLL,
    real targets in it), step AdamW with clipping, validate every `eval_every` steps. A batch of padding alone
    on every rank moves no weight (it still counts as a step of the data). Each real target weighs the same
    on every rank, and the training NLL is nats per real target. `clock["elapsed"]` holds the seconds of
    training before a resume and is kept up to date, so --max-time and --anneal-by-time go on across
    resumes. Ctrl-C only raises a flag: the step in flight completes, so the saved weights, optimizer and
    step always belong together."""
    device = device or torch.device("cpu")
    clock = clock if clock is not None else {}
    spent = float(clock.get("elapsed", 0.0))
    t0, tokens, loss_sum, loss_n, validated = time.time(), 0, 0.0, 0, False

    def elapsed() -> float:
        return spent + time.time() - t0

    stop = Interrupt()
    with stop:
        while step < total:
            clock["elapsed"] = elapsed()
            out_of_time = cfg.max_time is not None and clock["elapsed"] > cfg.max_time
            if any(agree([stop.flag, out_of_time], world, device)):
                break
            nll, n_targets = step_loss(step)
            # real targets on all ranks together, and the ranks' mean clock (one learning rate on every rank)
            n_all, mean_clock = sum_over_ranks([n_targets, clock["elapsed"]], world, device)
            n_all = int(n_all)
            if n_all:
                nll_all = _update(net, opt, cfg, nll, n_all, lr=lr_at(step, cfg, total, mean_clock / world),
                                  step=step, diverged=diverged, world=world, device=device)
                loss_sum, loss_n = loss_sum + nll_all, loss_n + n_all
            if after_step is not None:
                after_step()
            step += 1  # weights, step and carried state now agree
            tokens += n_all
            tok_s = tokens / max(1e-9, time.time() - t0)
            if bar is not None:
                bar.update(1)
            validated = step % eval_every == 0 or step == total
            if validated:
                clock["elapsed"] = elapsed()
                if validate(step, loss_sum / max(1, loss_n), tok_s):
                    break
                loss_sum, loss_n = 0.0, 0
            elif step % 10 == 0 and bar is not None:
                bar.set_postfix(loss=f"{loss_sum / max(1, loss_n):.3f}", tok_s=f"{tok_s:,.0f}")
        interrupted = agree([stop.flag], world, device)[0]  # a Ctrl-C on any rank during the last step
    clock["elapsed"] = elapsed()
    return LoopEnd(step, interrupted, loss_sum / max(1, loss_n), tokens / max(1e-9, time.time() - t0), validated,
                   clock["elapsed"])


def _update(net: torch.nn.Module, opt: torch.optim.Optimizer, cfg, nll: torch.Tensor, n_all: int, *, lr: float,
            step: int, diverged: Callable[[int, float], None], world: int, device: torch.device) -> float:
    """One optimizer step at learning rate `lr` on this rank's summed NLL `nll` of `n_all` real targets (all
    ranks together); returns the NLL summed over the ranks (`diverged` is called first when it is not finite)."""
    for g in opt.param_groups:
        g["lr"] = lr
    nll_all = sum_over_ranks([nll.item()], world, device)[0]  # a NaN on any rank is a NaN on all
    if not math.isfinite(nll_all):
        diverged(step, nll_all / n_all)
    opt.zero_grad(set_to_none=True)
    # DDP averages the ranks' gradients: each rank divides its sum by the mean targets per rank
    (nll / (n_all / world)).backward()
    torch.nn.utils.clip_grad_norm_(net.parameters(), cfg.grad_clip)
    opt.step()
    return nll_all


def sum_over_ranks(values: list[float], world: int, device: torch.device) -> list[float]:
    """Each value summed over all ranks, the same on each (as given alone)."""
    if world == 1:
        return list(values)
    t = torch.tensor(values, dtype=torch.float64, device=device)
    torch.distributed.all_reduce(t)
    return t.tolist()
