"""Training speed of `musiclstm.train.train` against a bare PyTorch loop, same shapes, same run.

    python bench/train_speed.py [--preset small] [--encoding remi] [--data ../shared/data/nottingham]
                                [--warmup 5] [--steps 30] [--repeats 5] [--threads N]

Figure: steady-state training tokens/s of `musiclstm.train.train(...)` (the function the CLI
calls), on the prepared token stream of the corpus (default: Nottingham, REMI), fp32, CPU.
It is measured by differencing: train() is run twice in a fresh temporary folder, with
`max_steps = warmup` and `max_steps = warmup + steps`, and the extra `steps` optimizer steps are
divided by the extra wall time, so preparation (reading the cache), model building, the final
validation, checkpoints and the plot cancel out. A global optimizer step hook also timestamps
every step of the longer run; the interval between two hooks is one whole iteration of train()'s
loop (windows, forward, loss, backward, clipping, step, bookkeeping). The goal is judged on the
median step after the warmup against the bare loop's median step (the same statistic on both
sides, robust to other processes on this shared machine); the differenced figure is printed
beside it and should agree when the machine is quiet (the load average is printed too).

Anchor: a bare loop of nn.Embedding + nn.LSTM + nn.Linear forward, cross-entropy, backward and an
AdamW step on identical shapes (vocabulary, embed, hidden, layers, batch, seq_len), fp32, the same
thread count, on windows of the same token stream with the state carried as in TBPTT, timed in
this process. A second, informative loop adds what the model itself does beyond the bare one
(dropout at the preset's rate, gradient-norm clipping), to tell model work from loop overhead.

Preparation (tokenizing into the cache) is run, and timed, before anything is measured, and a
first one-step call of train() pays the process's one-time costs (imports, worker pool, file cache).
The three measurements of a repeat run in a rotating order. About 4-5 minutes on the idle machine.
Goal: musiclstm >= 90 % of bare. Medians over --repeats are reported; the machine is noisy
(about +-10 % on compute-bound numbers, see ../shared/docs/PERFORMANCE.md).
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
from musiclstm.tokenizer import Tokenizer  # noqa: E402
from musiclstm.train import PRESETS, TrainConfig, train  # noqa: E402


def run_train(corpus: Path, max_steps: int, args, tmp: Path) -> tuple[float, list[float], list[dict]]:
    """One call of train(); returns (wall seconds, timestamps after each optimizer step, metrics rows)."""
    out = tmp / f"run{max_steps}_{time.monotonic_ns()}"
    stamps: list[float] = []
    handle = register_optimizer_step_post_hook(lambda opt, a, kw: stamps.append(time.perf_counter()))
    try:
        t = time.perf_counter()
        train(corpus, out, progress=False, cache_dir=args.cache_dir, preset=args.preset, encoding=args.encoding,
              max_steps=max_steps, sample_tokens=0, windows=args.windows, device="cpu", precision="fp32", seed=0)
        wall = time.perf_counter() - t
    finally:
        handle.remove()
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines() if line.strip()]
    return wall, stamps, rows


def run_bare(stream: torch.Tensor, vocab: int, cfg: TrainConfig, warmup: int, steps: int,
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
    start = None
    for i in range(warmup + steps):
        if i == warmup:
            start = time.perf_counter()
        t = time.perf_counter()
        j = i % per_epoch
        x, y = xs[:, j * T:(j + 1) * T], ys[:, j * T:(j + 1) * T]
        if j == 0:
            state = None
        out, state = lstm(drop(emb(x)), state)
        loss = F.cross_entropy(head(drop(out)).flatten(0, 1), y.flatten())
        opt.zero_grad(set_to_none=True)
        loss.backward()
        if clip is not None:
            torch.nn.utils.clip_grad_norm_(params, clip)
        opt.step()
        state = tuple(s.detach() for s in state)
        times.append(time.perf_counter() - t)
    return time.perf_counter() - start, times[warmup:]


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
          f"seq_len {T} ({tokens_per_step:,} tokens/step), dropout {cfg.dropout}, windows {cfg.windows}, fp32, "
          f"{threads} threads; {args.warmup} warmup + {args.steps} timed steps, {args.repeats} repeats")

    res: dict[str, list[float]] = {k: [] for k in ("train_diff", "train_med", "train_metric", "bare", "bare_med",
                                                   "bare_plus", "bare_plus_med")}
    with tempfile.TemporaryDirectory(prefix="musiclstm-bench-") as tmp:
        tmp = Path(tmp)

        def measure_train() -> str:
            wall_a, _, _ = run_train(corpus, args.warmup, args, tmp)
            wall_b, stamps, rows = run_train(corpus, args.warmup + args.steps, args, tmp)
            steady = [b - a for a, b in zip(stamps[args.warmup - 1:-1], stamps[args.warmup:], strict=True)]
            res["train_diff"].append(args.steps * tokens_per_step / (wall_b - wall_a))
            res["train_med"].append(tokens_per_step / statistics.median(steady))
            res["train_metric"].append(rows[-1]["tokens_per_s"])
            return f"train() runs of {wall_a:.1f} s and {wall_b:.1f} s"

        def measure_bare(plus: bool) -> str:
            extra = (cfg.dropout, cfg.grad_clip) if plus else ()
            secs, times = run_bare(stream, tok.vocab_size, cfg, args.warmup, args.steps, *extra)
            key = "bare_plus" if plus else "bare"
            res[key].append(args.steps * tokens_per_step / secs)
            res[f"{key}_med"].append(tokens_per_step / statistics.median(times))
            return ""

        t = time.perf_counter()
        run_train(corpus, 1, args, tmp)  # first call in the process: imports, pools, file cache (not counted)
        print(f"  warm-up train() call of 1 step: {time.perf_counter() - t:.1f} s (not counted)", flush=True)
        order = [measure_train, lambda: measure_bare(False), lambda: measure_bare(True)]
        for r in range(args.repeats):
            k = r % len(order)  # rotate, so a drift in the machine's load does not always hit the same one
            note = "".join(f() for f in order[k:] + order[:k])  # only measure_train returns text
            print(f"  repeat {r + 1}: median step: train() {res['train_med'][-1]:7,.0f} tok/s, bare "
                  f"{res['bare_med'][-1]:7,.0f} ({res['train_med'][-1] / res['bare_med'][-1]:.3f}), bare+dropout+clip "
                  f"{res['bare_plus_med'][-1]:7,.0f}; differenced: train() {res['train_diff'][-1]:7,.0f} tok/s "
                  f"({note}), bare {res['bare'][-1]:7,.0f} ({res['train_diff'][-1] / res['bare'][-1]:.3f}); "
                  f"load {os.getloadavg()[0]:.2f}", flush=True)

    med = {k: statistics.median(v) for k, v in res.items() if v}
    load1 = os.getloadavg()
    print(f"\nload average (1 min) at start {load0[0]:.2f}, at end {load1[0]:.2f} on {os.cpu_count()} cores"
          + ("  -- machine busy: figures are unreliable" if max(load0[0], load1[0]) > 0.5 + threads else ""))
    print(f"{'':58}{'tokens/s':>10}  {'vs bare':>8}")
    rows = [
        ("musiclstm train(), median step (optimizer-hook stamps)", med["train_med"], med["bare_med"]),
        ("bare Embedding+LSTM+Linear + CE + AdamW, median step", med["bare_med"], med["bare_med"]),
        (f"bare + dropout {cfg.dropout} + grad clip {cfg.grad_clip}, median step", med["bare_plus_med"],
         med["bare_med"]),
        ("musiclstm train(), differenced wall time", med["train_diff"], med["bare"]),
        ("bare loop, wall time of the timed steps", med["bare"], med["bare"]),
        ("bare + dropout + grad clip, wall time", med["bare_plus"], med["bare"]),
        ("musiclstm train(), metrics.jsonl tokens_per_s (all steps)", med["train_metric"], med["bare"]),
    ]
    for name, v, anchor in rows:
        if v is not None:
            print(f"{name:58}{v:10,.0f}  {v / anchor:8.3f}")
    per_med = [a / b for a, b in zip(res["train_med"], res["bare_med"], strict=True)]
    per_diff = [a / b for a, b in zip(res["train_diff"], res["bare"], strict=True)]
    per_plus = [a / b for a, b in zip(res["train_med"], res["bare_plus_med"], strict=True)]
    ratio, diff_ratio, plus_ratio = (statistics.median(v) for v in (per_med, per_diff, per_plus))
    print(f"\nper-repeat ratios train()/bare, median step: {', '.join(f'{x:.3f}' for x in per_med)}; "
          f"differenced: {', '.join(f'{x:.3f}' for x in per_diff)}; "
          f"train()/(bare+dropout+clip): {', '.join(f'{x:.3f}' for x in per_plus)}")
    print(f"goal: musiclstm >= 90% of bare -> {ratio:.1%} by median step ({'met' if ratio >= 0.9 else 'NOT met'}), "
          f"{diff_ratio:.1%} by differenced wall time ({'met' if diff_ratio >= 0.9 else 'NOT met'}) "
          f"[medians of the paired per-repeat ratios]; against bare + dropout + clip: {plus_ratio:.1%}")
    if (cfg.hidden, cfg.layers) == (256, 2):
        print("reference (PERFORMANCE.md, 2x256 nn.LSTM, ~400 tokens, 2 threads fp32): 18,400-24,200 tokens/s")


if __name__ == "__main__":
    main()
