"""Training speed of `musiclstm.training.lm.train` against a bare PyTorch loop, same shapes, same run.

    OMP_NUM_THREADS=1 nice -n 10 python bench/train_speed.py --threads 1 [--preset small] [--encoding remi]
        [--data ../shared/data/nottingham] [--warmup 5] [--steps 30] [--repeats 5] [--precision fp32/bf16]

Figure: steady-state training tokens/s of `musiclstm.training.lm.train(...)` (the function the CLI
calls), on the prepared token stream of the corpus (default: Nottingham, REMI), CPU, fp32 (or
with `--precision bf16`, bf16 autocast for train() and the bare loops alike).
It is measured by differencing: train() is run twice in a fresh temporary folder, with
`max_steps = warmup` and `max_steps = warmup + steps`, and the extra `steps` optimizer steps are
divided by the extra wall time, so preparation (reading the cache), model building, the final
validation, checkpoints and the plot cancel out. A global optimizer step hook also timestamps
every step of the longer run; the interval between two hooks is one whole iteration of train()'s
loop (windows, forward, loss, backward, clipping, step, bookkeeping). The goal is judged on the
median step after the warmup against the bare loop's median step (the same statistic on both
sides, robust to other processes on this shared machine); the differenced figure is printed
beside it and should agree when the machine is quiet (the load average is printed too).

Anchor (the goal's): a bare loop of nn.Embedding + nn.LSTM + nn.Linear forward with the model's
dropout (the same rate, before the LSTM, between its layers and before the output, as MusicLSTM
applies it), cross-entropy, backward and an AdamW step on identical shapes (vocabulary, embed,
hidden, layers, batch, seq_len), the same precision and thread count, on windows of the same token stream
with the state carried as in TBPTT, timed in this process. Two informative loops beside it: the
bare loop without dropout, and the anchor plus gradient-norm clipping (what train() adds on top),
to tell model work from loop overhead.

Preparation (tokenizing into the cache) is run, and timed, before anything is measured, and a
first one-step call of train() pays the process's one-time costs (imports, worker pool, file cache).
The four measurements of a repeat run in a rotating order. On a shared machine compare with
`--threads 1` under `nice`. Goal: musiclstm >= 95 % of the bare loop with the same dropout.
Medians over --repeats are reported; the machine is noisy (about +-10 % on compute-bound numbers,
see docs/measurements.md).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from torch import nn  # noqa: E402
from torch.optim.optimizer import register_optimizer_step_post_hook  # noqa: E402

from musiclstm import data  # noqa: E402
from musiclstm.encodings.tokenizer import Tokenizer  # noqa: E402
from musiclstm.training.config import PRESETS, TrainConfig  # noqa: E402
from musiclstm.training.lm import train  # noqa: E402


def run_train(corpus: Path, max_steps: int, args, tmp: Path) -> tuple[float, list[float], list[dict]]:
    """One call of train(); returns (wall seconds, timestamps after each optimizer step, metrics rows)."""
    out = tmp / f"run{max_steps}_{time.monotonic_ns()}"
    stamps: list[float] = []
    handle = register_optimizer_step_post_hook(lambda opt, a, kw: stamps.append(time.perf_counter()))
    cpu_stamps.clear()
    cpu_handle = register_optimizer_step_post_hook(lambda opt, a, kw: cpu_stamps.append(time.thread_time()))
    try:
        t = time.perf_counter()
        train(corpus, out, progress=False, cache_dir=args.cache_dir, preset=args.preset, encoding=args.encoding,
              max_steps=max_steps, sample_tokens=0, windows=args.windows, device="cpu", precision=args.precision,
              seed=0, cache=False)
        wall = time.perf_counter() - t
    finally:
        handle.remove()
        cpu_handle.remove()
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines() if line.strip()]
    return wall, stamps, rows


def run_bare(stream: torch.Tensor, vocab: int, cfg: TrainConfig, warmup: int, steps: int, bf16: bool,
             dropout: float = 0.0, clip: float | None = None) -> tuple[float, list[float]]:
    """Bare Embedding + LSTM + Linear loop; returns (seconds for `steps` steps after warmup, per-step times)."""
    torch.manual_seed(0)
    emb = nn.Embedding(vocab, cfg.embed)
    lstm = nn.LSTM(cfg.embed, cfg.hidden, cfg.layers, batch_first=True, dropout=dropout if cfg.layers > 1 else 0.0)
    head = nn.Linear(cfg.hidden, vocab)
    drop = nn.Dropout(dropout)
    params = [*emb.parameters(), *lstm.parameters(), *head.parameters()]
    opt = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    B, T = cfg.batch_size, cfg.seq_len
    n = (len(stream) - 1) // B
    xs = stream[: n * B].view(B, n)
    ys = stream[1: n * B + 1].view(B, n)
    per_epoch = (n - 1) // T
    state = None
    times: list[float] = []
    cpu_times.clear()
    start = None
    for i in range(warmup + steps):
        if i == warmup:
            start = time.perf_counter()
        t, c = time.perf_counter(), time.thread_time()
        j = i % per_epoch
        x, y = xs[:, j * T:(j + 1) * T], ys[:, j * T:(j + 1) * T]
        if j == 0:
            state = None
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            out, state = lstm(drop(emb(x)), state)
            logits = head(drop(out))
        loss = F.cross_entropy(logits.float().flatten(0, 1), y.flatten())
        opt.zero_grad(set_to_none=True)
        loss.backward()
        if clip is not None:
            torch.nn.utils.clip_grad_norm_(params, clip)
        opt.step()
        state = tuple(s.detach() for s in state)
        times.append(time.perf_counter() - t)
        cpu_times.append(time.thread_time() - c)
    del cpu_times[:warmup]
    return time.perf_counter() - start, times[warmup:]


# CPU time of this (the main) thread per step, beside the wall time: with one torch thread all the work
# runs on it, so its CPU time hardly moves when other processes share the cores (wall time does)
cpu_stamps: list[float] = []
cpu_times: list[float] = []


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default=str(Path(__file__).resolve().parents[2] / "shared" / "data" / "nottingham"))
    ap.add_argument("--preset", default="small", choices=list(PRESETS))
    ap.add_argument("--encoding", default="remi", choices=["remi", "performance", "grid"])
    ap.add_argument("--windows", default="tbptt", choices=["tbptt", "random"],
                    help="train()'s window order (the bare loops always take contiguous TBPTT windows)")
    ap.add_argument("--warmup", type=int, default=5, help="steps before timing starts (default 5)")
    ap.add_argument("--steps", type=int, default=30, help="timed steps (default 30)")
    ap.add_argument("--repeats", type=int, default=5, help="measurements of each; medians reported (default 5)")
    ap.add_argument("--precision", default="fp32", choices=["fp32", "bf16"],
                    help="fp32, or bf16 autocast for train() and the bare loops alike (default fp32)")
    ap.add_argument("--threads", type=int, default=None, help="torch threads for both (default: torch's default)")
    ap.add_argument("--cache-dir", default=None, help="token cache (default: musiclstm's, ~/.cache/musiclstm)")
    args = ap.parse_args()
    corpus = Path(args.data)
    if not corpus.exists():
        sys.exit(f"no corpus at {corpus}")
    if args.warmup < 1 or args.steps < 1:
        sys.exit("--warmup and --steps must be >= 1")
    if args.threads:
        torch.set_num_threads(args.threads)
    threads = torch.get_num_threads()
    load0 = os.getloadavg()

    # preparation: fill the cache (not counted), and get the same stream train() will see
    cfg = TrainConfig.build(args.preset, encoding=args.encoding, windows=args.windows)
    tok = Tokenizer(cfg.encoding)
    t = time.perf_counter()
    prepared = data.prepare([corpus], tok, val_fraction=cfg.val_fraction, cache_dir=args.cache_dir, progress=False)
    prep_s = time.perf_counter() - t
    stream = data.stream(prepared.split("train"), tok)
    B, T = cfg.batch_size, cfg.seq_len
    tokens_per_step = B * T
    per_epoch = data.Windows(stream, B, T, cfg.windows).batches_per_epoch
    if args.warmup + args.steps >= per_epoch:
        print(f"warning: {args.warmup + args.steps} steps reach the end of an epoch ({per_epoch} batches): "
              "the last window may be short and a validation runs mid-way")
    print(f"corpus {corpus} ({cfg.encoding}): {len(prepared.pieces)} files, {len(stream):,} training tokens, "
          f"vocabulary {tok.vocab_size}; preparation {prep_s:.1f} s (not counted)")
    print(f"preset {args.preset}: embed {cfg.embed}, hidden {cfg.hidden}, layers {cfg.layers}, batch {B}, "
          f"seq_len {T} ({tokens_per_step:,} tokens/step), dropout {cfg.dropout}, windows {cfg.windows}, "
          f"{args.precision}, {threads} threads (OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS')}); "
          f"{args.warmup} warmup + {args.steps} timed steps, {args.repeats} repeats")

    # bare loops: the anchor (same dropout), and two informative ones (no dropout; dropout + clipping)
    bares = {"drop": (cfg.dropout, None), "nodrop": (0.0, None), "clip": (cfg.dropout, cfg.grad_clip)}
    res: dict[str, list[float]] = {k: [] for k in ("train_diff", "train_med", "train_cpu", "train_metric",
                                                   *[f"{b}{s}" for b in bares for s in ("", "_med", "_cpu")])}
    with tempfile.TemporaryDirectory(prefix="musiclstm-bench-") as tmp:
        tmp = Path(tmp)

        def measure_train() -> str:
            wall_a, _, _ = run_train(corpus, args.warmup, args, tmp)
            wall_b, stamps, rows = run_train(corpus, args.warmup + args.steps, args, tmp)
            steady = [b - a for a, b in zip(stamps[args.warmup - 1:-1], stamps[args.warmup:], strict=True)]
            res["train_cpu"].append(tokens_per_step / statistics.median(
                [b - a for a, b in zip(cpu_stamps[args.warmup - 1:-1], cpu_stamps[args.warmup:], strict=True)]))
            res["train_diff"].append(args.steps * tokens_per_step / (wall_b - wall_a))
            res["train_med"].append(tokens_per_step / statistics.median(steady))
            res["train_metric"].append(rows[-1]["tokens_per_s"])
            return f"train() runs of {wall_a:.1f} s and {wall_b:.1f} s"

        def measure_bare(key: str) -> str:
            secs, times = run_bare(stream, tok.vocab_size, cfg, args.warmup, args.steps,
                                   args.precision == "bf16", *bares[key])
            res[key].append(args.steps * tokens_per_step / secs)
            res[f"{key}_med"].append(tokens_per_step / statistics.median(times))
            res[f"{key}_cpu"].append(tokens_per_step / statistics.median(cpu_times))
            return ""

        t = time.perf_counter()
        run_train(corpus, 1, args, tmp)  # first call in the process: imports, pools, file cache (not counted)
        print(f"  warm-up train() call of 1 step: {time.perf_counter() - t:.1f} s (not counted)", flush=True)
        order = [measure_train, *[lambda k=k: measure_bare(k) for k in bares]]
        for r in range(args.repeats):
            k = r % len(order)  # rotate, so a drift in the machine's load does not always hit the same one
            note = "".join(f() for f in order[k:] + order[:k])  # only measure_train returns text
            print(f"  repeat {r + 1}: median step: train() {res['train_med'][-1]:7,.0f} tok/s, bare+dropout "
                  f"{res['drop_med'][-1]:7,.0f} ({res['train_med'][-1] / res['drop_med'][-1]:.3f}), bare "
                  f"{res['nodrop_med'][-1]:7,.0f}, bare+dropout+clip {res['clip_med'][-1]:7,.0f}; differenced: "
                  f"train() {res['train_diff'][-1]:7,.0f} tok/s ({note}), bare+dropout {res['drop'][-1]:7,.0f} "
                  f"({res['train_diff'][-1] / res['drop'][-1]:.3f}); CPU time: train() {res['train_cpu'][-1]:7,.0f}, "
                  f"bare+dropout {res['drop_cpu'][-1]:7,.0f} ({res['train_cpu'][-1] / res['drop_cpu'][-1]:.3f}); "
                  f"load {os.getloadavg()[0]:.2f}", flush=True)

    med = {k: statistics.median(v) for k, v in res.items() if v}
    load1 = os.getloadavg()
    print(f"\nload average (1 min) at start {load0[0]:.2f}, at end {load1[0]:.2f} on {os.cpu_count()} cores"
          + ("  -- machine busy: figures are unreliable" if max(load0[0], load1[0]) > 0.5 + threads else ""))
    print(f"{'':62}{'tokens/s':>10}  {'vs anchor':>9}")
    rows = [
        ("musiclstm train(), median step CPU time (main thread)", med["train_cpu"], med["drop_cpu"]),
        (f"bare loop + dropout {cfg.dropout} (anchor), median step CPU time", med["drop_cpu"], med["drop_cpu"]),
        ("bare loop without dropout, median step CPU time", med["nodrop_cpu"], med["drop_cpu"]),
        ("bare loop + dropout + grad clip, median step CPU time", med["clip_cpu"], med["drop_cpu"]),
        ("musiclstm train(), median step (optimizer-hook stamps)", med["train_med"], med["drop_med"]),
        (f"bare loop + dropout {cfg.dropout} (anchor), median step", med["drop_med"], med["drop_med"]),
        ("bare loop without dropout, median step", med["nodrop_med"], med["drop_med"]),
        (f"bare loop + dropout + grad clip {cfg.grad_clip}, median step", med["clip_med"], med["drop_med"]),
        ("musiclstm train(), differenced wall time", med["train_diff"], med["drop"]),
        ("bare loop + dropout, wall time of the timed steps", med["drop"], med["drop"]),
        ("bare loop + dropout + grad clip, wall time", med["clip"], med["drop"]),
        ("musiclstm train(), metrics.jsonl tokens_per_s (all steps)", med["train_metric"], med["drop"]),
    ]
    for name, v, anchor in rows:
        print(f"{name:62}{v:10,.0f}  {v / anchor:9.3f}")
    per_med = [a / b for a, b in zip(res["train_med"], res["drop_med"], strict=True)]
    per_diff = [a / b for a, b in zip(res["train_diff"], res["drop"], strict=True)]
    per_clip = [a / b for a, b in zip(res["train_med"], res["clip_med"], strict=True)]
    per_cpu = [a / b for a, b in zip(res["train_cpu"], res["drop_cpu"], strict=True)]
    ratio, diff_ratio, clip_ratio, cpu_ratio = (statistics.median(v) for v in (per_med, per_diff, per_clip, per_cpu))
    print(f"\nper-repeat ratios train()/(bare+dropout), median step: {', '.join(f'{x:.3f}' for x in per_med)}; "
          f"by CPU time: {', '.join(f'{x:.3f}' for x in per_cpu)}; "
          f"differenced: {', '.join(f'{x:.3f}' for x in per_diff)}; "
          f"train()/(bare+dropout+clip): {', '.join(f'{x:.3f}' for x in per_clip)}")
    judged, how = (cpu_ratio, "median step CPU time (one thread: robust to other processes)") if threads == 1 else \
        (ratio, "median step wall time")
    print(f"goal: musiclstm >= 95% of the bare nn.LSTM loop with the same dropout -> {judged:.1%} by {how}: "
          f"{'met' if judged >= 0.95 else 'NOT met'}; beside it {ratio:.1%} by median step wall time, "
          f"{diff_ratio:.1%} by differenced wall time [medians of the paired per-repeat ratios]; "
          f"against bare + dropout + clip: {clip_ratio:.1%} (wall)")
    if (cfg.hidden, cfg.layers, threads) == (256, 2, 2):
        print("reference (docs/measurements.md, 2x256 nn.LSTM, ~400 tokens, 2 threads fp32): 18,400-24,200 tokens/s")


if __name__ == "__main__":
    main()
