"""bf16 autocast against fp32 for CPU training: tokens/s and validation NLL on the same budget.

    OMP_NUM_THREADS=1 nice -n 10 python bench/precision.py [--data ../shared/data/nottingham]
        [--presets small,medium] [--steps 60,12] [--time-steps 75,20] [--threads 1]

For each preset, `musiclstm.training.lm.train(...)` (the function the CLI calls) runs from the same seed,
data order and schedule with `precision="fp32"` and with `precision="bf16"` on two budgets:
* the same number of optimizer steps (warmup a tenth of them, then the cosine decay): bf16's
  cost in quality per step, and its speed: the median interval between optimizer steps after
  the first three (an optimizer step hook), as nominal tokens/s (batch x seq_len; the same for both);
* the same seconds of training at the speeds just measured: fp32 runs --time-steps steps and bf16
  that many times its measured speed-up, each with its schedule over its own length (as a run
  with `--max-time --anneal-by-time` gets): what a user with a time budget gets. (Wall-clock
  budgets were tried first; on this shared machine a load spike during one run decided them.)
Quality is the last weights' NLL on the corpus's validation pieces, scored in fp32 for both (as
`compose` and `evaluate` run the model); the run's own validation in its training precision is
printed beside it.

Decision rule (the one musiclstm.training.loop.resolve_precision applies with CPU_BF16_AUTO): `--precision
auto` is bf16 on CPUs with native bf16 (AVX512-BF16 or AMX) when, on every preset, bf16 is at least
10 % faster, its NLL on the same seconds is no worse than fp32's, and on the same steps no more than
1 % worse; fp32 elsewhere (without native bf16, PyTorch emulates it, slower than fp32). The bench
prints the decision and whether the code's constant agrees. On a shared machine use --threads 1
under nice; the load average is printed.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402
from torch.optim.optimizer import register_optimizer_step_post_hook  # noqa: E402

from musiclstm import data  # noqa: E402
from musiclstm.encodings.tokenizer import Tokenizer  # noqa: E402
from musiclstm.models import checkpoint
from musiclstm.training.config import PRESETS, TrainConfig  # noqa: E402
from musiclstm.training.lm import evaluate_nll, train  # noqa: E402
from musiclstm.training.loop import CPU_BF16_AUTO, native_bf16  # noqa: E402

FASTER, SAME_STEPS_WORSE = 1.10, 0.01  # bf16: >= 10 % faster; NLL no worse on equal seconds, <= 1 % on equal steps


def run(corpus: Path, preset: str, precision: str, tmp: Path, cache_dir, steps: int) -> dict:
    """One training run of `steps` steps; returns its median step tokens/s, steps, wall time and validation NLLs."""
    stamps: list[float] = []
    handle = register_optimizer_step_post_hook(lambda opt, a, kw: stamps.append(time.perf_counter()))
    out = tmp / f"{preset}-{precision}-{steps}"
    t = time.perf_counter()
    try:
        train(corpus, out, progress=False, cache_dir=cache_dir, preset=preset, sample_tokens=0, cache=False,
              device="cpu", precision=precision, seed=0, max_steps=steps, warmup_steps=max(1, steps // 10),
              eval_every=steps)
    finally:
        handle.remove()
    wall = time.perf_counter() - t
    cfg = TrainConfig.build(preset)
    blob = checkpoint.read(out / "last.pt")
    model = checkpoint.load(out / "last.pt")
    steady = [b - a for a, b in zip(stamps[3:-1], stamps[4:], strict=True)]
    return {"tok_s": cfg.batch_size * cfg.seq_len / statistics.median(steady), "wall": wall, "steps": len(stamps),
            "val_own": blob["meta"]["metrics"]["val_nll"], "recorded": blob["meta"]["precision"],
            "model": model}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default=str(Path(__file__).resolve().parents[2] / "shared" / "data" / "nottingham"))
    ap.add_argument("--presets", default="small,medium")
    ap.add_argument("--steps", default="60,12", help="optimizer steps per preset, comma-separated (default 60,12)")
    ap.add_argument("--time-steps", default="75,20",
                    help="fp32 steps of the same-seconds budget per preset (default 75,20)")
    ap.add_argument("--threads", type=int, default=1, help="torch threads (default 1: the machine is shared)")
    ap.add_argument("--cache-dir", default=None, help="token cache (default: musiclstm's)")
    args = ap.parse_args()
    presets, steps = args.presets.split(","), [int(s) for s in args.steps.split(",")]
    time_steps = [int(s) for s in args.time_steps.split(",")]
    if len(steps) != len(presets) or len(time_steps) != len(presets) or any(p not in PRESETS for p in presets) \
            or min(steps + time_steps) < 8:
        sys.exit("--presets from tiny,small,medium,large, and one --steps and one --time-steps (>= 8) each")
    corpus = Path(args.data)
    torch.set_num_threads(args.threads)
    load0 = os.getloadavg()[0]
    print(f"CPU: torch capability {torch.backends.cpu.get_cpu_capability()}, native bf16 (AVX512-BF16 or AMX): "
          f"{native_bf16()}; {torch.get_num_threads()} thread(s) (OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS')}"
          f"); torch {torch.__version__}; load average {load0:.2f} on {os.cpu_count()} cores")
    tok = Tokenizer(TrainConfig.build("small").encoding)
    prepared = data.prepare([corpus], tok, val_fraction=TrainConfig().val_fraction, cache_dir=args.cache_dir,
                            progress=False)
    valid = [data.sequence(p, tok) for p in prepared.split("valid")]
    print(f"corpus {corpus}: {len(prepared.pieces)} files, {sum(len(s) for s in valid):,} validation tokens in "
          f"{len(valid)} pieces")
    fp32_cfg = TrainConfig.build("small", precision="fp32")
    results = {}
    with tempfile.TemporaryDirectory(prefix="musiclstm-precision-") as tmp:
        for preset, n, m in zip(presets, steps, time_steps, strict=True):
            cfg = TrainConfig.build(preset)
            print(f"\n{preset}: {cfg.layers}x{cfg.hidden}, embed {cfg.embed}, batch {cfg.batch_size} x "
                  f"{cfg.seq_len}: {n} steps each, then the time of {m} fp32 steps each", flush=True)
            for budget in ("steps", "seconds"):
                for precision in ("fp32", "bf16"):
                    if budget == "steps":
                        k = n
                    else:  # the time of m fp32 steps, at the speeds of the same-steps runs
                        up = results[preset, "steps", "bf16"]["tok_s"] / results[preset, "steps", "fp32"]["tok_s"]
                        k = m if precision == "fp32" else max(1, round(m * up))
                    r = run(corpus, preset, precision, Path(tmp), args.cache_dir, k)
                    r["val_fp32"] = evaluate_nll(r.pop("model").net, valid, fp32_cfg, torch.device("cpu"))
                    results[preset, budget, precision] = r
                    print(f"  {precision}, same {budget}: {r['steps']:4d} steps, {r['tok_s']:8,.0f} tokens/s (median "
                          f"step), run {r['wall']:6.1f} s; validation NLL scored in fp32 {r['val_fp32']:.4f}, in its "
                          f"own precision {r['val_own']:.4f} (checkpoint records {r['recorded']})", flush=True)
    print("\ntokens/s: the same-steps runs' median steps; speed-up also their ratio")
    print(f"{'preset':8}{'fp32 tok/s':>12}{'bf16 tok/s':>12}{'speed-up':>10}  {'NLL fp32 -> bf16, same steps':>30}"
          f"  {'same seconds (steps fp32/bf16)':>40}")
    ok = True
    for preset in presets:
        a, b = results[preset, "steps", "fp32"], results[preset, "steps", "bf16"]
        ta, tb = results[preset, "seconds", "fp32"], results[preset, "seconds", "bf16"]
        speed32, speed16 = a["tok_s"], b["tok_s"]
        up = speed16 / speed32
        per_step, per_second = b["val_fp32"] / a["val_fp32"] - 1, tb["val_fp32"] / ta["val_fp32"] - 1
        ok &= up >= FASTER and per_second <= 0 and per_step <= SAME_STEPS_WORSE
        print(f"{preset:8}{speed32:12,.0f}{speed16:12,.0f}{up:9.2f}x  "
              f"{a['val_fp32']:.4f} -> {b['val_fp32']:.4f} ({per_step:+6.2%})"
              f"  {ta['val_fp32']:.4f} -> {tb['val_fp32']:.4f} ({per_second:+6.2%}) ({ta['steps']}/{tb['steps']})")
    load1 = os.getloadavg()[0]
    print(f"load average at start {load0:.2f}, at end {load1:.2f}"
          + ("  -- machine busy: speeds are unreliable" if max(load0, load1) > 0.5 + args.threads else ""))
    rule = (f"bf16 >= {FASTER:.2f}x as fast on every preset, its NLL no worse on the same seconds and no more than "
            f"{SAME_STEPS_WORSE:.0%} worse on the same steps")
    if not native_bf16():
        print(f"decision: this CPU has no native bf16 -> --precision auto is fp32 here ({rule} is not asked)")
    else:
        verdict = "bf16" if ok else "fp32"
        agree = "agrees" if (verdict == "bf16") == CPU_BF16_AUTO else "DISAGREES; change CPU_BF16_AUTO"
        print(f"decision: {rule}: {'yes' if ok else 'no'} -> --precision auto on CPUs with native bf16: {verdict} "
              f"(musiclstm.training.loop.CPU_BF16_AUTO = {CPU_BF16_AUTO}: {agree})")


if __name__ == "__main__":
    main()
