"""Stateful truncated BPTT against random windows, by validation NLL, on a real corpus, in one run.

    python bench/windows.py [--preset tiny] [--steps 1500] [--seeds 0 1 2] [--encoding remi]
                            [--data ../shared/data/nottingham] [--evals 5] [--threads N]

Trains the same model twice with `musiclstm.training.lm.train` (the function the CLI calls), once with
`windows="tbptt"` (contiguous lanes, LSTM state carried and detached between windows) and once
with `windows="random"` (windows at random offsets, zero initial state), with the same preset, the
same number of optimizer steps, the same seed (same initial weights), the same learning-rate
schedule and no early stopping, and reads `best_val_nll` from each run's best.pt and the curve
from its metrics.jsonl. Validation is musiclstm's own `evaluate_nll` on the held-out files: the
whole validation stream in 16 lanes with the state carried (nats/token). That reading favours a
model used to carried state, so a second column scores each best.pt with a fresh zero state at
every `seq_len` window (the context random windows train for). Both are reported per seed and on
average, each with its own verdict (winner, gap, seeds won); the default is chosen by the first
because generation carries the state.

Figure: tbptt validation NLL; anchor: random-window validation NLL; lower wins. Each run is
printed beside the other, with the difference, for each seed (seed noise is visible beside the
gap). The defaults (tiny preset, 1500 steps = 2 epochs, seeds 0 1 2: six runs of ~65 s) take
about 6.5 minutes on the idle 2-core machine. Shorter runs are cheaper but do not decide: at 500
steps the validation NLL is still falling fast and differed by up to 0.19 nats between seeds for
the same mode, more than the gap between the modes (tbptt won on 2 of 3 seeds). Preparation
(tokenizing into the cache) runs first and is not counted.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from musiclstm import data  # noqa: E402
from musiclstm.encodings.tokenizer import Tokenizer  # noqa: E402
from musiclstm.models import checkpoint
from musiclstm.training.config import PRESETS, TrainConfig  # noqa: E402
from musiclstm.training.lm import train  # noqa: E402

MODES = ("tbptt", "random")


@torch.no_grad()
def fresh_state_nll(net, ids: torch.Tensor, seq_len: int, lanes: int = 16) -> float:
    """NLL (nats/token) of a stream scored in windows of seq_len, each from a zero state."""
    net.eval()
    n = (len(ids) - 1) // lanes
    x, y = ids[: n * lanes].view(lanes, n), ids[1: n * lanes + 1].view(lanes, n)
    total, count = 0.0, 0
    for s in range(0, n, seq_len):
        logits, _ = net(x[:, s: s + seq_len], None)
        yy = y[:, s: s + seq_len]
        total += F.cross_entropy(logits.float().flatten(0, 1), yy.flatten(), reduction="sum").item()
        count += yy.numel()
    return total / count


def verdict(results: dict, seeds: list[int], key: str) -> str:
    """Which mode has the lower mean `key` NLL, by how much, on how many seeds."""
    mean = {m: statistics.fmean(results[m, s][key] for s in seeds) for m in MODES}
    win = min(MODES, key=lambda m: mean[m])
    other = next(m for m in MODES if m != win)
    wins = sum(results[win, s][key] < results[other, s][key] for s in seeds)
    gap = mean[other] - mean[win]
    return (f"{win} by {gap:.4f} nats/token ({gap / math.log(2):.4f} bits, {gap / mean[other]:.1%} lower), "
            f"lower on {wins} of {len(seeds)} seeds")


def summary(results: dict, seeds: list[int]) -> str:
    """The table of both scorings per seed and on average, and a verdict for each scoring.

    `results[mode, seed]` holds "best" (best_val_nll, carried state) and "fresh" (best.pt scored
    from a zero state at every window)."""
    lines = [f"{'validation NLL, nats/token (lower is better)':48}{'tbptt':>9}{'random':>9}{'tbptt-random':>14}"]
    for seed in seeds:
        a, b = results["tbptt", seed], results["random", seed]
        lines.append(f"{f'seed {seed}: best_val_nll (carried state)':48}{a['best']:9.4f}{b['best']:9.4f}"
                     f"{a['best'] - b['best']:+14.4f}")
        lines.append(f"{f'seed {seed}: best.pt, fresh state per window':48}{a['fresh']:9.4f}{b['fresh']:9.4f}"
                     f"{a['fresh'] - b['fresh']:+14.4f}")
    for key, label in (("best", "best_val_nll"), ("fresh", "fresh state per window")):
        mean = {m: statistics.fmean(results[m, s][key] for s in seeds) for m in MODES}
        lines.append(f"{f'mean over seeds, {label}':48}{mean['tbptt']:9.4f}{mean['random']:9.4f}"
                     f"{mean['tbptt'] - mean['random']:+14.4f}")
    lines.append("")
    lines.append(f"winner, carried state (best_val_nll, what training selects on): {verdict(results, seeds, 'best')}")
    lines.append(f"winner, fresh state per window:                                 {verdict(results, seeds, 'fresh')}")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default=str(Path(__file__).resolve().parents[2] / "shared" / "data" / "nottingham"))
    ap.add_argument("--preset", default="tiny", choices=list(PRESETS))
    ap.add_argument("--encoding", default="remi", choices=["remi", "performance", "grid"])
    ap.add_argument("--steps", type=int, default=1500, help="optimizer steps per run (default 1500)")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2],
                    help="seeds, each trains both modes with that seed (default 0 1 2)")
    ap.add_argument("--evals", type=int, default=5, help="validations per run (default 5)")
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's default)")
    ap.add_argument("--cache-dir", default=None, help="token cache (default: musiclstm's, ~/.cache/musiclstm)")
    ap.add_argument("--keep", default=None, help="keep the run folders here instead of a temporary folder")
    args = ap.parse_args()
    corpus = Path(args.data)
    if not corpus.exists():
        sys.exit(f"no corpus at {corpus}")
    if args.threads:
        torch.set_num_threads(args.threads)
    load0 = os.getloadavg()

    cfg = TrainConfig.build(args.preset, encoding=args.encoding)
    tok = Tokenizer(cfg.encoding)
    t = time.perf_counter()
    prepared = data.prepare([corpus], tok, val_fraction=cfg.val_fraction, cache_dir=args.cache_dir, progress=False)
    prep_s = time.perf_counter() - t
    train_ids = data.stream(prepared.split("train"), tok)
    valid_ids = data.stream(prepared.split("valid"), tok)
    per_epoch = {m: data.Windows(train_ids, cfg.batch_size, cfg.seq_len, m).batches_per_epoch for m in MODES}
    eval_every = max(1, math.ceil(args.steps / args.evals))
    print(f"corpus {corpus} ({cfg.encoding}): {len(prepared.split('train'))} train files ({len(train_ids):,} tokens), "
          f"{len(prepared.split('valid'))} valid files ({len(valid_ids):,} tokens); preparation {prep_s:.1f} s "
          "(not counted)")
    print(f"preset {args.preset}: embed {cfg.embed}, hidden {cfg.hidden}, layers {cfg.layers}, batch {cfg.batch_size}, "
          f"seq_len {cfg.seq_len}, lr {cfg.lr}, warmup {cfg.warmup_steps}; {args.steps} steps per run "
          f"({args.steps / per_epoch['tbptt']:.2f} epochs tbptt, {args.steps / per_epoch['random']:.2f} random), "
          f"validation every {eval_every} steps, seeds {args.seeds}, {torch.get_num_threads()} threads, fp32")

    results: dict[tuple[str, int], dict] = {}
    with tempfile.TemporaryDirectory(prefix="musiclstm-windows-") as tmp:
        root = Path(args.keep) if args.keep else Path(tmp)
        for seed in args.seeds:
            for mode in MODES:
                out = root / f"{mode}-seed{seed}"
                t = time.perf_counter()
                best = train(corpus, out, force=True, progress=False, cache_dir=args.cache_dir, preset=args.preset,
                             encoding=args.encoding, windows=mode, max_steps=args.steps, eval_every=eval_every,
                             patience=10**9, seed=seed, sample_tokens=0, device="cpu", precision="fp32")
                secs = time.perf_counter() - t
                meta = checkpoint.read(best)["meta"]
                rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines() if line.strip()]
                fresh = fresh_state_nll(checkpoint.load(best).net, valid_ids, cfg.seq_len)
                results[mode, seed] = dict(best=meta["best_val_nll"], step=meta["step"], last=rows[-1]["val_nll"],
                                           train=rows[-1]["train_nll"], fresh=fresh, secs=secs, rows=rows)
                curve = "  ".join(f"{r['step']}:{r['val_nll']:.3f}" for r in rows)
                print(f"  seed {seed} {mode:6}: best val NLL {meta['best_val_nll']:.4f} at step {meta['step']}, "
                      f"fresh-state {fresh:.4f}, last train NLL {rows[-1]['train_nll']:.4f}, {secs:.0f} s; "
                      f"val curve {curve}", flush=True)

    load1 = os.getloadavg()
    print()
    print(summary(results, args.seeds))
    print(f"wall time: tbptt {sum(results['tbptt', s]['secs'] for s in args.seeds):.0f} s, random "
          f"{sum(results['random', s]['secs'] for s in args.seeds):.0f} s; load average (1 min) {load0[0]:.2f} "
          f"at start, {load1[0]:.2f} at end on {os.cpu_count()} cores")


if __name__ == "__main__":
    main()
