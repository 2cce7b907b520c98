"""Training speed of `musiclstm.train.train` against a bare PyTorch loop, same shapes, same run.

    python bench/train_speed.py [--preset small] [--encoding remi] [--data ../shared/data/nottingham]
                                [--warmup 5] [--steps 30] [--repeats 3] [--threads N]

Figure: steady-state training tokens/s of `musiclstm.train.train(...)` (the function the CLI
calls), on the prepared token stream of the corpus (default: Nottingham, REMI), fp32, CPU.
It is measured by differencing: train() is run twice in a fresh temporary folder, with
`max_steps = warmup` and `max_steps = warmup + steps`, and the extra `steps` optimizer steps are
divided by the extra wall time, so preparation (reading the cache), model building, the final
validation, checkpoints and the plot cancel out. A global optimizer step hook also timestamps
every step of the longer run: the median step time after the warmup is printed as a cross-check.

Anchor: a bare loop of nn.Embedding + nn.LSTM + nn.Linear forward, cross-entropy, backward and an
AdamW step on identical shapes (vocabulary, embed, hidden, layers, batch, seq_len), fp32, the same
thread count, on windows of the same token stream with the state carried as in TBPTT, timed in
this process. A second, informative loop adds what the model itself does beyond the bare one
(dropout at the preset's rate, gradient-norm clipping), to tell model work from loop overhead.

Preparation (tokenizing into the cache) is run, and timed, before anything is measured.
Goal: musiclstm >= 90 % of bare. Medians over --repeats are reported; the machine is noisy
(about +-10 % on compute-bound numbers, see ../shared/docs/PERFORMANCE.md).
"""

from __future__ import annotations

import argparse
import json
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
    ap.add_argument("--windows", default="tbptt", choices=["tbptt", "random"])
    ap.add_argument("--warmup", type=int, default=5, help="steps before timing starts (default 5)")
    ap.add_argument("--steps", type=int, default=30, help="timed steps (default 30)")
    ap.add_argument("--repeats", type=int, default=3, help="measurements of each; medians reported (default 3)")
    ap.add_argument("--threads", type=int, default=None, help="torch threads for both (default: torch's default)")
    ap.add_argument("--cache-dir", default=None, help="token cache (default: musiclstm's, ~/.cache/musiclstm)")
    args = ap.parse_args()
    corpus = Path(args.data)
    if not corpus.exists():
        sys.exit(f"no corpus at {corpus}")
    if args.threads:
        torch.set_num_threads(args.threads)
    threads = torch.get_num_threads()

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
        for r in range(args.repeats):
            wall_a, _, _ = run_train(corpus, args.warmup, args, tmp)
            wall_b, stamps, rows = run_train(corpus, args.warmup + args.steps, args, tmp)
            steady = [b - a for a, b in zip(stamps[args.warmup - 1:], stamps[args.warmup:])] if args.warmup else []
            res["train_diff"].append(args.steps * tokens_per_step / (wall_b - wall_a))
            if steady:
                res["train_med"].append(tokens_per_step / statistics.median(steady))
            res["train_metric"].append(rows[-1]["tokens_per_s"])
            secs, times = run_bare(stream, tok.vocab_size, cfg, args.warmup, args.steps)
            res["bare"].append(args.steps * tokens_per_step / secs)
            res["bare_med"].append(tokens_per_step / statistics.median(times))
            secs, times = run_bare(stream, tok.vocab_size, cfg, args.warmup, args.steps, cfg.dropout, cfg.grad_clip)
            res["bare_plus"].append(args.steps * tokens_per_step / secs)
            res["bare_plus_med"].append(tokens_per_step / statistics.median(times))
            print(f"  repeat {r + 1}: train() {res['train_diff'][-1]:8,.0f} tok/s (runs of {wall_a:.1f} s and "
                  f"{wall_b:.1f} s)   bare {res['bare'][-1]:8,.0f} tok/s   ratio {res['train_diff'][-1] / res['bare'][-1]:.3f}")

    med = {k: statistics.median(v) for k, v in res.items() if v}
    print()
    print(f"{'':58}{'tokens/s':>10}  {'vs bare':>8}")
    rows = [
        ("musiclstm train(), steady state (differenced wall time)", med["train_diff"], med["bare"]),
        ("musiclstm train(), median step (optimizer-hook stamps)", med.get("train_med"), med["bare_med"]),
        ("musiclstm train(), metrics.jsonl tokens_per_s (all steps)", med["train_metric"], med["bare"]),
        ("bare Embedding+LSTM+Linear + CE + AdamW (anchor)", med["bare"], med["bare"]),
        ("bare, median step", med["bare_med"], med["bare_med"]),
        (f"bare + dropout {cfg.dropout} + grad clip {cfg.grad_clip} (informative)", med["bare_plus"], med["bare"]),
        ("bare + dropout + grad clip, median step", med["bare_plus_med"], med["bare_med"]),
    ]
    for name, v, anchor in rows:
        if v is not None:
            print(f"{name:58}{v:10,.0f}  {v / anchor:8.3f}")
    ratio = med["train_diff"] / med["bare"]
    per_repeat = [a / b for a, b in zip(res["train_diff"], res["bare"], strict=True)]
    print(f"\nper-repeat ratios: {', '.join(f'{x:.3f}' for x in per_repeat)}")
    print(f"goal: musiclstm >= 90% of bare -> {ratio:.1%} ({'met' if ratio >= 0.9 else 'NOT met'}); "
          f"against bare + dropout + clip: {med['train_diff'] / med['bare_plus']:.1%}")
    print("reference (PERFORMANCE.md, 2x256 nn.LSTM, ~400 tokens, 2 threads fp32): 18,400-24,200 tokens/s")


if __name__ == "__main__":
    main()
