"""The sequence model: embedding -> multi-layer LSTM (or GRU / plain RNN) -> output layer.

Training runs whole windows through `nn.LSTM` (oneDNN / cuDNN kernels); generation calls
`step`, a fused cell that does one matmul per layer for all four gates, because the library
kernel costs ~2.8 ms per layer call at batch 1 on CPU (see docs/measurements.md).
May import: errors. Not: encodings, data, training, generation, evaluation, app.
"""

from __future__ import annotations

import threading
from dataclasses import asdict, dataclass

import torch
from torch import nn

from ..errors import ConfigError

_FUSE_LOCK = threading.Lock()  # one for every model (a lock attribute would stop deepcopy and pickling)
CELLS = {"lstm": nn.LSTM, "gru": nn.GRU, "rnn": nn.RNN}


@dataclass
class ModelConfig:
    """Sizes of the network. Stored in every checkpoint."""

    vocab_size: int  #: number of token ids (from the tokenizer)
    embed: int = 256  #: embedding width (must equal `hidden` when `tie_weights`)
    hidden: int = 512  #: recurrent state size per layer
    layers: int = 3  #: stacked recurrent layers
    dropout: float = 0.1  #: dropout between layers and before the output
    cell: str = "lstm"  #: lstm, gru or rnn (tanh)
    tie_weights: bool = False  #: share the input embedding with the output layer

    def __post_init__(self) -> None:
        if self.cell not in CELLS:
            raise ConfigError(f"unknown cell {self.cell!r}; choose lstm, gru or rnn")
        if self.tie_weights and self.embed != self.hidden:
            raise ConfigError("tie_weights needs embed == hidden")
        if min(self.vocab_size, self.embed, self.hidden, self.layers) < 1 or not 0 <= self.dropout < 1:
            raise ConfigError(f"invalid model sizes: {asdict(self)}")


State = tuple[torch.Tensor, torch.Tensor] | torch.Tensor


class MusicLSTM(nn.Module):
    """Token ids (B, T) -> next-token logits (B, T, V), carrying the recurrent state."""

    def __init__(self, config: ModelConfig):
        super().__init__()
        self.config = config
        c = config
        self.embed = nn.Embedding(c.vocab_size, c.embed)
        kw = {"nonlinearity": "tanh"} if c.cell == "rnn" else {}
        self.rnn = CELLS[c.cell](c.embed, c.hidden, c.layers, batch_first=True,
                                 dropout=c.dropout if c.layers > 1 else 0.0, **kw)
        self.drop = nn.Dropout(c.dropout)
        self.head = nn.Linear(c.hidden, c.vocab_size)
        if c.tie_weights:
            self.head.weight = self.embed.weight
        # (fused weights, fused biases) per layer for `step`, built once on first use; one assignment, under
        # a lock, so that threads sharing the model (the studio) never see half of it
        self._fused: tuple[list[torch.Tensor], list[torch.Tensor]] | None = None

    def forward(self, ids: torch.Tensor, state: State | None = None) -> tuple[torch.Tensor, State]:
        y, state = self.hidden(ids, state)  # (B, T, H)
        return self.head(self.drop(y)), state  # (B, T, V)

    def hidden(self, ids: torch.Tensor, state: State | None = None) -> tuple[torch.Tensor, State]:
        """Token ids (B, T) -> the top layer's outputs (B, T, H) and the state (what the cache remembers)."""
        return self.rnn(self.drop(self.embed(ids)), state)

    @staticmethod
    def top(state: State) -> torch.Tensor:
        """The top layer's hidden state (B, H) from a recurrent state."""
        return state[0][-1] if isinstance(state, tuple) else state[-1]

    def zero_state(self, batch: int, device=None) -> State:
        c = self.config
        h = torch.zeros(c.layers, batch, c.hidden, device=device or self.head.weight.device)
        return (h, h.clone()) if c.cell == "lstm" else h

    def train(self, mode: bool = True):
        self._fused = None  # weights may change: rebuild the fused matrices on the next step
        return super().train(mode)

    @torch.no_grad()
    def step(self, ids: torch.Tensor, state: State) -> tuple[torch.Tensor, State]:
        """One token per sequence: ids (B,) -> logits (B, V). Inference only (no dropout)."""
        if self.config.cell != "lstm":
            logits, state = self.forward(ids[:, None], state)
            return logits[:, 0], state
        fused = self._fused
        if fused is None:
            with _FUSE_LOCK:
                if self._fused is None:
                    weights = [torch.cat([getattr(self.rnn, f"weight_ih_l{k}"), getattr(self.rnn, f"weight_hh_l{k}")],
                                         1).t().contiguous() for k in range(self.config.layers)]
                    biases = [getattr(self.rnn, f"bias_ih_l{k}") + getattr(self.rnn, f"bias_hh_l{k}")
                              for k in range(self.config.layers)]
                    self._fused = (weights, biases)
                fused = self._fused
        h0, c0 = state
        x = self.embed(ids)  # (B, E)
        hs, cs = [], []
        for k, (w, b) in enumerate(zip(*fused, strict=True)):
            gates = torch.addmm(b, torch.cat([x, h0[k]], 1), w)  # (B, 4H): i, f, g, o as in nn.LSTM
            i, f, g, o = gates.chunk(4, 1)
            c = torch.sigmoid(f) * c0[k] + torch.sigmoid(i) * torch.tanh(g)
            x = torch.sigmoid(o) * torch.tanh(c)
            hs.append(x)
            cs.append(c)
        return self.head(x), (torch.stack(hs), torch.stack(cs))

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())
