"""Sampling speed of `musiclstm.generate` against its anchors, in one run.

    python bench/sample_speed.py [--layers 3] [--hidden 512] [--tokens 2000] [--threads 1]

Model: an untrained `MusicLSTM` of the given shape (weights do not change the speed), fp32, CPU,
with the remi vocabulary (the encoding of the bundled models; `--vocab` overrides it, and then the
grammar rows are skipped). Figures, each printed beside its goal (issue 4):

1. Batch-1 latency: ms per generated token of `generate(model, max_tokens=--tokens, temperature=1,
   top_p=0.95)` (the primer is one BOS token), against the bare matrix-vector work of one step for
   the same weights: per layer one (1, E+H) x (E+H, 4H) matmul for all four gates, plus the
   (1, H) x (H, V) output matmul, timed in a loop with nothing else. Goal: <= 1.5x that floor.
   `nn.LSTM` stepped one token at a time (its default kernel path) is printed beside them.
   Timed twice: bare `generate`, and with the remi grammar that `compose` always applies (the same
   constraint and clock update per token as `compose`, which is what a user waits for).
2. Batch 32 vs batch 1: generated tokens/s of `generate(..., batch=32)` over batch 1, both without
   and with the grammar. Goal: >= 8x.
3. Against re-running the whole window every step (the tutorial way): generating N tokens that way
   costs sum over n = 1..N of one forward pass over n tokens. That total is EXTRAPOLATED, not run:
   forward passes at 8 lengths up to N are timed, a straight line is fitted (cost grows linearly
   with n), and the sum is taken of the fitted line; it is compared with generate()'s measured time
   for N tokens, with and without the grammar. Goal: >= 50x. The per-token cost at the full window
   (one forward over N tokens, which is what the tutorial pays for token N+1) is measured.
4. `compose()` itself with the bundled folk model (2x512 remi, its continuous cache): wall time of
   `compose(model, tokens=--compose-tokens)` (grammar, clock, decode, everything a user waits for)
   beside bare `generate()` of as many tokens on the same model and the floor of its matmuls.
   `--compose-only` runs this part alone (a few seconds).

Medians of --repeats runs. One thread by default, the setting of the issue's anchor (a floor of
about 0.9 ms for 3x512); `--threads 2` measures both cores (the floor, nn.LSTM and generate()
always run with the same thread count). About 2 minutes.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

import numpy as np
import torch

from musiclstm.encodings.registry import grammar_for
from musiclstm.encodings.tokenizer import BOS, EOS, Tokenizer
from musiclstm.generation.compose import compose
from musiclstm.generation.sample import generate
from musiclstm.models.checkpoint import load
from musiclstm.models.lstm import ModelConfig, MusicLSTM


def timed(fn, repeats: int) -> float:
    """Median wall seconds of fn() over `repeats` calls, after one warm-up call."""
    fn()
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def floor_ms(net: MusicLSTM, inner: int, repeats: int) -> float:
    """ms of just the gate and output matmuls of one batch-1 step, on the model's own weights."""
    c = net.config
    ws = [torch.cat([getattr(net.rnn, f"weight_ih_l{k}"), getattr(net.rnn, f"weight_hh_l{k}")], 1).t().contiguous()
          for k in range(c.layers)]
    xs = [torch.randn(1, w.shape[0]) for w in ws]
    head, hx = net.head.weight.t().contiguous(), torch.randn(1, c.hidden)

    def run():
        for _ in range(inner):
            for x, w in zip(xs, ws, strict=True):
                torch.mm(x, w)
            torch.mm(hx, head)

    return timed(run, repeats) / inner * 1e3


def nn_lstm_step_ms(net: MusicLSTM, inner: int, repeats: int) -> float:
    """ms per token of calling the model's nn.LSTM on one token at a time (state carried)."""
    ids = torch.zeros(1, 1, dtype=torch.long)

    @torch.no_grad()
    def run():
        state = net.zero_state(1)
        for _ in range(inner):
            _, state = net(ids, state)

    return timed(run, repeats) / inner * 1e3


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--layers", type=int, default=3)
    ap.add_argument("--hidden", type=int, default=512)
    ap.add_argument("--embed", type=int, default=512)
    ap.add_argument("--vocab", type=int, default=None, help="default: the remi vocabulary (with its grammar)")
    ap.add_argument("--tokens", type=int, default=2000)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--compose-tokens", type=int, default=400)
    ap.add_argument("--compose-only", action="store_true")
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    if a.compose_only:
        compose_row(a.compose_tokens, a.repeats)
        return
    torch.manual_seed(0)
    tok = Tokenizer("remi")
    with_grammar = a.vocab is None or a.vocab == tok.vocab_size
    a.vocab = tok.vocab_size if a.vocab is None else a.vocab
    net = MusicLSTM(ModelConfig(vocab_size=a.vocab, embed=a.embed, hidden=a.hidden, layers=a.layers, dropout=0.0))
    net.eval()
    print(f"model {a.layers}x{a.hidden} (embed {a.embed}, vocab {a.vocab}), {net.num_parameters() / 1e6:.2f} M "
          f"parameters, fp32, {a.threads} thread(s), torch {torch.__version__}, load average "
          f"{os.getloadavg()[0]:.2f}")

    def gen(batch: int, n: int, grammar: bool = False):
        def run():
            constraint = stop = None
            if grammar:  # what compose() does around generate(): the grammar, no early EOS, a clock
                g = grammar_for(tok)

                def constraint(ids, logits):
                    allowed = g(ids, logits)
                    allowed[:, EOS] = False
                    allowed[~allowed.any(1), EOS] = True
                    return allowed

                def stop(ids):
                    g.advance(ids)
                    return g.seconds() >= 1e9

            generate(net, [BOS], max_tokens=n, temperature=1.0, top_p=0.95, seed=0, batch=batch, eos=None,
                     constraint=constraint, stop=stop)
        return run

    n = a.tokens
    floor = floor_ms(net, 500, a.repeats)
    lstm = nn_lstm_step_ms(net, 200, a.repeats)
    t1 = timed(gen(1, n), a.repeats)
    ms1 = t1 / n * 1e3
    print("\n1. batch-1 latency")
    print(f"   bare gate + output matmuls (floor)      {floor:7.3f} ms/token")
    print(f"   nn.LSTM stepped one token at a time      {lstm:7.3f} ms/token")
    print(f"   musiclstm generate(), {n} tokens        {ms1:7.3f} ms/token = {ms1 / floor:.2f}x floor   "
          f"goal <= 1.50x: {'met' if ms1 <= 1.5 * floor else 'NOT met'}")
    t1g = timed(gen(1, n, True), a.repeats) if with_grammar else None
    if t1g is not None:
        msg = t1g / n * 1e3
        print(f"   with the remi grammar (as compose)       {msg:7.3f} ms/token = {msg / floor:.2f}x floor   "
              f"goal <= 1.50x: {'met' if msg <= 1.5 * floor else 'NOT met'}")

    n32 = max(n // 4, 100)
    t32 = timed(gen(32, n32), a.repeats)
    tps1, tps32 = n / t1, 32 * n32 / t32
    print("\n2. batch 32 vs batch 1")
    print(f"   batch 1 {tps1:9.0f} tokens/s;  batch 32 {tps32:9.0f} tokens/s ({n32} steps) = {tps32 / tps1:.1f}x   "
          f"goal >= 8x: {'met' if tps32 >= 8 * tps1 else 'NOT met'}")
    if t1g is not None:
        t32g = timed(gen(32, n32, True), a.repeats)
        g1, g32 = n / t1g, 32 * n32 / t32g
        print(f"   with the grammar: batch 1 {g1:9.0f} tokens/s;  batch 32 {g32:9.0f} tokens/s = {g32 / g1:.1f}x   "
              f"goal >= 8x: {'met' if g32 >= 8 * g1 else 'NOT met'}")

    lengths = np.unique(np.linspace(1, n, 8).astype(int))
    ids = torch.zeros(1, n, dtype=torch.long)

    def window(m: int):
        @torch.no_grad()
        def run():
            net(ids[:, :m])
        return run

    costs = np.array([timed(window(int(m)), max(2, a.repeats // 2)) for m in lengths])
    slope, intercept = np.polyfit(lengths, costs, 1)
    total = float(np.sum(intercept + slope * np.arange(1, n + 1)))
    print(f"\n3. against re-running the whole window every step ({n} tokens)")
    timings = ", ".join(f"n={m} {c * 1e3:.1f} ms" for m, c in zip(lengths, costs, strict=True))
    print("   forward over n tokens: " + timings)
    print(f"   window way, {n} tokens: {total:8.1f} s EXTRAPOLATED (the sum of a line fitted to the 8 timed "
          "forward passes; not run)")
    print(f"   musiclstm generate(): {t1:.2f} s measured = {total / t1:.0f}x   "
          f"goal >= 50x: {'met' if total >= 50 * t1 else 'NOT met'}")
    if t1g is not None:
        print(f"   with the remi grammar: {t1g:.2f} s measured = {total / t1g:.0f}x   "
              f"goal >= 50x: {'met' if total >= 50 * t1g else 'NOT met'}")
    print(f"   per token at the full {n}-token window: {costs[-1] * 1e3:.1f} ms vs {ms1:.2f} ms = "
          f"{costs[-1] * 1e3 / ms1:.0f}x")
    compose_row(a.compose_tokens, a.repeats)


def compose_row(n: int, repeats: int) -> None:
    """Part 4: compose() with its grammar against bare generate() and the floor, the bundled folk model."""
    torch.manual_seed(0)
    model = load("folk")
    floor = floor_ms(model.net, 500, repeats)
    bare = timed(lambda: generate(model, [BOS], max_tokens=n, temperature=1.0, top_p=0.95, seed=0, eos=None),
                 repeats)
    comp = timed(lambda: compose(model, tokens=n, seed=0), repeats)
    print(f"\n4. compose() with its grammar, bundled folk model ({model.net.config.layers}x{model.net.config.hidden}, "
          f"cache lam {model.cache.lam if model.cache else 0}), {n} tokens, load average {os.getloadavg()[0]:.2f}")
    print(f"   bare gate + output matmuls (floor)      {floor:7.3f} ms/token")
    ms_bare, ms_comp = bare / n * 1e3, comp / n * 1e3
    print(f"   generate() without grammar             {ms_bare:7.3f} ms/token = {ms_bare / floor:.2f}x floor"
          f"  ({bare:.2f} s)")
    print(f"   compose(tokens={n})                    {ms_comp:7.3f} ms/token = {ms_comp / floor:.2f}x floor"
          f"  ({comp:.2f} s; grammar and decode {comp - bare:+.2f} s)")


if __name__ == "__main__":
    main()
