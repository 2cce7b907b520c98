"""Inside the LSTM: an explicit cell that records its gates at every step.

For layer l at step t, with x the layer's input (the token embedding, or the hidden state of the
layer below) and h, c the layer's previous state (zeros at t = 0):

    i = sigmoid(W_ii x + b_ii + W_hi h + b_hi)      input gate: how much of the candidate to write
    f = sigmoid(W_if x + b_if + W_hf h + b_hf)      forget gate: how much of the old cell to keep
    g = tanh(W_ig x + b_ig + W_hg h + b_hg)         candidate values
    o = sigmoid(W_io x + b_io + W_ho h + b_ho)      output gate: how much of the cell to show
    c' = f * c + i * g                              cell state (the memory)
    h' = o * tanh(c')                               hidden state (what the next layer and the output see)

These are the equations and the weights of `torch.nn.LSTM` (gate order i, f, g, o); the test suite
checks that the recorded hidden states match `nn.LSTM`'s outputs to 1e-5.
May import: errors, models. Not: data, training, generation, app.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from ..errors import ConfigError


@dataclass
class GateTrace:
    """Per layer and step: arrays shaped [layers, steps, hidden size] (the state starts from zeros)."""

    input_gate: np.ndarray
    forget_gate: np.ndarray
    output_gate: np.ndarray
    candidate: np.ndarray
    cell: np.ndarray
    hidden: np.ndarray
    ids: list[int]  #: the token fed at each step
    names: list[str]  #: its name (e.g. PITCH_60, BAR, TIME_SHIFT_10)


def _ids(model, music) -> list[int]:
    if isinstance(music, list | tuple | np.ndarray | torch.Tensor):
        return [int(i) for i in (music.tolist() if hasattr(music, "tolist") else music)]
    tok = getattr(model, "tokenizer", None)
    if tok is None:
        raise ConfigError("gate_trace needs a loaded model (with its tokenizer) to encode music; or pass ids")
    return tok.encode(music, eos=False)


@torch.no_grad()
def gate_trace(model, music, *, max_steps: int | None = None) -> GateTrace:
    """Run `music` (token ids, a MIDI/MusicXML path, PrettyMIDI or Score) through the model's LSTM
    one step at a time and record every gate. `model` is a loaded `Model` or a `MusicLSTM`."""
    net = getattr(model, "net", model)
    if net.config.cell != "lstm":
        raise ConfigError(f"gate_trace needs an LSTM; this model's cell is {net.config.cell}")
    ids = _ids(model, music)[:max_steps]
    if not ids:
        raise ConfigError("nothing to trace: no tokens")
    L, H, T = net.config.layers, net.config.hidden, len(ids)
    x = net.embed(torch.tensor(ids, device=net.head.weight.device)).float()  # (T, E)
    rec = {k: np.zeros((L, T, H), np.float32) for k in ("i", "f", "g", "o", "c", "h")}
    for layer in range(L):
        w_ih, w_hh = getattr(net.rnn, f"weight_ih_l{layer}").float(), getattr(net.rnn, f"weight_hh_l{layer}").float()
        b = (getattr(net.rnn, f"bias_ih_l{layer}") + getattr(net.rnn, f"bias_hh_l{layer}")).float()
        pre = x @ w_ih.t() + b  # (T, 4H): the input's part of every gate, for all steps at once
        h, c = torch.zeros(H, device=x.device), torch.zeros(H, device=x.device)
        out = []
        for t in range(T):
            gi, gf, gg, go = (pre[t] + w_hh @ h).chunk(4)
            i, f, g, o = torch.sigmoid(gi), torch.sigmoid(gf), torch.tanh(gg), torch.sigmoid(go)
            c = f * c + i * g
            h = o * torch.tanh(c)
            for k, v in zip("ifgoch", (i, f, g, o, c, h), strict=True):
                rec[k][layer, t] = v.cpu().numpy()
            out.append(h)
        x = torch.stack(out)  # the next layer's input (no dropout at inference)
    tok = getattr(model, "tokenizer", None)
    names = tok.names(ids) if tok is not None else [str(i) for i in ids]
    return GateTrace(rec["i"], rec["f"], rec["o"], rec["g"], rec["c"], rec["h"], ids, names)
