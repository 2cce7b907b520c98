"""The continuous cache: off is the plain LSTM, a repeat gets cheap, generation and scoring agree."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from musiclstm.encodings.tokenizer import Tokenizer
from musiclstm.generation.sample import generate
from musiclstm.models.cache import Cache, Memory, mix, piece_nlls
from musiclstm.models.checkpoint import Model
from musiclstm.models.lstm import ModelConfig, MusicLSTM


def _net(vocab: int = 40) -> MusicLSTM:
    torch.manual_seed(0)
    return MusicLSTM(ModelConfig(vocab, 16, 32, 2, 0.0)).eval()


def test_off_is_the_plain_model():
    logits = torch.randn(3, 10)
    scores, succ = torch.randn(3, 5), torch.randint(0, 10, (3, 5))
    assert torch.allclose(mix(logits, scores, succ, Cache(0.0)), F.log_softmax(logits, -1))
    out = mix(logits, scores, succ, Cache(0.3)).exp()
    assert torch.allclose(out.sum(-1), torch.ones(3), atol=1e-5)  # still a distribution


def test_a_repeated_phrase_is_nearly_free_with_the_cache():
    net = _net()
    rng = np.random.default_rng(1)
    phrase = rng.integers(3, 40, 30)
    ids = np.r_[1, phrase, phrase, 2]
    plain = piece_nlls(net, ids, Cache())
    cached = piece_nlls(net, ids, Cache(lam=0.5, theta=100.0))
    second = slice(len(phrase) + 5, 2 * len(phrase))  # the repeat, once its context has built up
    assert cached[second].mean() < 0.5 * plain[second].mean()
    first = slice(5, len(phrase))  # nothing to copy yet: the cache can only cost a little
    assert cached[first].mean() < plain[first].mean() + 0.7


def test_generation_uses_the_same_mixture_as_scoring():
    net = _net()
    cache = Cache(lam=0.4, theta=10.0, window=16, skip=3)  # a short window: the ring buffer wraps
    ids = np.r_[1, np.random.default_rng(2).integers(3, 40, 40)]
    want = piece_nlls(net, ids, cache)
    memory, state = Memory(1, 32, cache, "cpu"), net.zero_state(1)
    got = []
    for t in range(len(ids) - 1):
        logits, state = net.step(torch.tensor([ids[t]]), state)
        logp = memory.log_probs(logits, net.top(state))
        got.append(-float(logp[0, ids[t + 1]]))
        memory.chose(torch.tensor([ids[t + 1]]))
    assert np.allclose(got, want, atol=1e-4)


def test_generate_reads_the_cache_stored_with_a_model():
    tok = Tokenizer("grid")
    net = MusicLSTM(ModelConfig(tok.vocab_size, 8, 16, 1, 0.0)).eval()
    plain = generate(Model(net, tok, {}), max_tokens=60, seed=3)
    cached = generate(Model(net, tok, {"cache": {"lam": 0.9, "theta": 5.0}}), max_tokens=60, seed=3)
    assert Model(net, tok, {"cache": {"lam": 0.9, "theta": 5.0}}).cache == Cache(0.9, 5.0)
    # exactly the draw that the same cache passed by hand gives (not merely some change), which is not the plain one
    explicit = generate(Model(net, tok, {}), max_tokens=60, seed=3, cache=Cache(0.9, 5.0))
    assert cached == explicit and explicit != plain


def test_compose_samples_without_the_cache_unless_asked():
    """compose draws from the plain LSTM by default (the cache, fed its own output, copies silences); cache=True
    draws from the same mixture generate uses with the model's stored cache."""
    from musiclstm.generation.compose import compose

    tok = Tokenizer("remi")
    torch.manual_seed(0)
    net = MusicLSTM(ModelConfig(tok.vocab_size, 8, 16, 1, 0.0)).eval()
    meta = {"cache": {"lam": 0.9, "theta": 5.0}}
    kw = dict(tokens=80, seed=4, return_ids=True)
    _, default = compose(Model(net, tok, meta), **kw)
    _, plain = compose(Model(net, tok, {}), **kw)
    _, cached = compose(Model(net, tok, meta), cache=True, **kw)
    _, cached_again = compose(Model(net, tok, meta), cache=True, **kw)
    assert default == plain
    assert cached == cached_again and cached != plain


def test_tuning_holds_one_piece_of_logits_at_a_time_and_scores_every_token(monkeypatch):
    from musiclstm.models import cache as cache_mod

    net = _net()
    rng = np.random.default_rng(0)
    pieces = [np.r_[1, rng.integers(3, 40, n), 2] for n in (30, 80, 50)]
    live, peak, real_states = [0], [0], cache_mod.states

    class Pass(tuple):
        def __del__(self):
            live[0] -= 1

    def states(net, ids, *a, **k):
        live[0] += 1
        peak[0] = max(peak[0], live[0])
        return Pass(real_states(net, ids, *a, **k))

    monkeypatch.setattr(cache_mod, "states", states)
    best, results = cache_mod.tune(net, pieces, lams=(0.0, 0.5), thetas=(10.0, 40.0))
    assert peak[0] == 1  # never every validation piece's logits at once
    monkeypatch.setattr(cache_mod, "states", real_states)
    for (lam, theta), got in results.items():  # the mean NLL per token over all the pieces' tokens
        c = Cache(lam, theta, 2048, 12)
        want = np.concatenate([piece_nlls(net, p, c) for p in pieces]).astype(np.float64).mean()
        assert np.isclose(got, want, rtol=1e-6)
    assert results[(best.lam, best.theta)] == min(results.values())


def test_compose_command_cache_flag_draws_the_cached_mixture(tmp_path, monkeypatch):
    """`musiclstm compose --cache` writes exactly what compose(cache=True) draws, and records the option."""
    import json

    import pretty_midi
    from click.testing import CliRunner

    import musiclstm as ml
    from musiclstm.app.cli import cli
    from musiclstm.generation.compose import compose

    monkeypatch.chdir(tmp_path)
    res = CliRunner().invoke(cli, ["compose", "--tokens", "60", "--seed", "3", "--cache", "-o", "c.mid"])
    assert res.exit_code == 0, res.output
    folk = ml.load("folk")
    want = compose(folk, tokens=60, seed=3, cache=True)
    got = pretty_midi.PrettyMIDI("c.mid")
    notes = lambda pm: [(round(n.start, 3), n.pitch) for i in pm.instruments for n in i.notes]  # noqa: E731
    assert notes(got) == notes(want) and notes(got)
    assert json.loads((tmp_path / "c.json").read_text())["options"]["cache"] is True
