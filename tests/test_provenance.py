"""Identities: a composed file's sidecar names the weights that made it, not the data they came from."""

from __future__ import annotations

import torch

from musiclstm.encodings.tokenizer import Tokenizer
from musiclstm.io.outputs import sidecar
from musiclstm.models import checkpoint
from musiclstm.models.lstm import ModelConfig, MusicLSTM


def _model(seed: int, tmp_path, name: str) -> checkpoint.Model:
    tok = Tokenizer("grid")
    torch.manual_seed(seed)
    net = MusicLSTM(ModelConfig(tok.vocab_size, embed=8, hidden=8, layers=1))
    # the same data and the same step: what the old fingerprint (data hash @ step) was made of
    path = checkpoint.save(tmp_path / name, net, tok, {"fingerprint": "0123456789abcdef", "step": 40})
    return checkpoint.load(path)


def test_two_models_from_the_same_data_and_step_have_different_fingerprints(tmp_path):
    a, b = _model(1, tmp_path, "a.pt"), _model(2, tmp_path, "b.pt")
    assert a.meta["fingerprint"] == b.meta["fingerprint"] and a.meta["step"] == b.meta["step"]
    assert a.fingerprint != b.fingerprint
    side_a, side_b = sidecar(a, {}, ids=[1, 2]), sidecar(b, {}, ids=[1, 2])
    assert side_a["model_fingerprint"] != side_b["model_fingerprint"]
    assert side_a["data_fingerprint"] == "0123456789abcdef" and side_a["step"] == 40


def test_the_same_weights_have_the_same_fingerprint(tmp_path):
    a = _model(1, tmp_path, "a.pt")
    again = checkpoint.load(a.path)
    assert a.fingerprint == again.fingerprint and len(a.fingerprint) == 16
    with torch.no_grad():
        next(again.net.parameters()).view(-1)[0] += 1e-3  # one weight moves: a different model
    assert a.fingerprint != again.fingerprint
