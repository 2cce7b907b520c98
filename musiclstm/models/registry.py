"""The model kinds by name: kind -> (config dataclass, network class).

A checkpoint records its kind in meta["model"]["kind"] ("lm" when absent: checkpoints from before the
harmonizer); `checkpoint.load` builds the network through this table, so adding a model kind is one
line here and one network module beside it.
May import: the network modules of this package (lstm, harmonizer). Not: anything above models.
"""

from __future__ import annotations

from .harmonizer import Harmonizer, HarmonizerConfig
from .lstm import ModelConfig, MusicLSTM

KINDS = {"lm": (ModelConfig, MusicLSTM), "harmonizer": (HarmonizerConfig, Harmonizer)}


def build(kind: str, config: dict):
    """The network of `kind` with the given config fields (from a checkpoint's meta["model"])."""
    config_cls, net_cls = KINDS[kind]
    return net_cls(config_cls(**config))
