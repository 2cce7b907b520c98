"""Training configs: one base dataclass for what every model kind's training shares, one subclass per kind.

`BaseTrainConfig` holds the schedule, sizes, early stopping and seeds both kinds use (and `build`:
defaults, then a preset, then a TOML file, then explicit options); `TrainConfig` adds what only the
left-to-right LSTM uses (encoding, windows, styles, samples, the cache);
`HarmonizerTrainConfig` is the chorale harmonizer's. A config is stored in every checkpoint.
May import: errors. Not: any other room.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, fields
from pathlib import Path

from ..errors import ConfigError

PRESETS = {  # model sizes and schedules; any field can be overridden
    "tiny": dict(embed=64, hidden=128, layers=2, seq_len=128, batch_size=16, lr=3e-3),
    "small": dict(embed=256, hidden=256, layers=2, seq_len=256, batch_size=32, lr=2e-3),
    "medium": dict(embed=256, hidden=512, layers=3, seq_len=256, batch_size=64, lr=1e-3),
    "large": dict(embed=512, hidden=1024, layers=3, seq_len=512, batch_size=64, lr=5e-4),
}


@dataclass
class BaseTrainConfig:
    """What every training run needs besides the data and the model kind's own options."""

    preset: str = "small"  #: tiny, small, medium or large (see PRESETS)
    embed: int = 256  #: embedding width
    hidden: int = 256  #: LSTM state size per layer
    layers: int = 2  #: LSTM layers
    dropout: float = 0.1  #: dropout between layers and before the output
    seq_len: int = 256  #: tokens (or grid steps) per training window
    batch_size: int = 32  #: windows per step (per process under torchrun)
    lr: float = 2e-3  #: peak learning rate (AdamW)
    weight_decay: float = 0.01  #: AdamW weight decay
    warmup_steps: int = 100  #: linear warmup, then cosine decay to 10 % of `lr`
    grad_clip: float = 1.0  #: gradient norm clipping
    epochs: int = 20  #: passes over the training data
    max_steps: int | None = None  #: stop after this many optimizer steps
    max_time: float | None = None  #: stop after this many seconds of training
    anneal_by_time: bool = False  #: with max_time: the cosine decay follows the clock, so a run on a busy
    #: machine still ends at the lowest learning rate (a resumed run is then not bit-exact)
    val_fraction: float = 0.1  #: share of files held out, by content hash (a csv split wins)
    val_tokens: int | None = 250_000  #: validation scores the held-out pieces (in their fixed order) up to this
    #: many tokens, so its cost does not grow with the corpus (0 or None: every held-out piece)
    eval_every: int | None = None  #: steps between validations (default: once an epoch)
    patience: int = 5  #: stop after this many validations without improvement
    augment_transpose: int = 0  #: random transposition in [-n, n] semitones
    seed: int = 0  #: seeds initialisation, window order and samples
    jobs: int | None = None  #: worker processes for preparation (default: all cores)
    device: str = "auto"  #: auto, cpu, cuda, cuda:N or mps
    precision: str = "auto"  #: auto (bf16 on GPUs and CPUs with native bf16, else fp32), fp32, bf16 or fp16 (CUDA)

    @classmethod
    def build(cls, preset: str = "small", config_file: str | os.PathLike | None = None, **overrides):
        """Defaults, then the preset, then a TOML file, then explicit overrides (None = not given)."""
        if preset not in PRESETS:
            raise ConfigError(f"unknown preset {preset!r}; choose one of {', '.join(PRESETS)}")
        values = {**PRESETS[preset], "preset": preset}
        if config_file is not None:
            import tomllib

            try:
                values.update(tomllib.loads(Path(config_file).read_text()))
            except (OSError, tomllib.TOMLDecodeError) as e:
                raise ConfigError(f"cannot read config {config_file}: {e}") from e
        values.update({k: v for k, v in overrides.items() if v is not None})
        names = {f.name for f in fields(cls)}
        unknown = set(values) - names
        if unknown:
            raise ConfigError(f"unknown training option(s): {', '.join(sorted(unknown))}")
        cfg = cls(**values)
        cfg.check()
        return cfg

    def check(self) -> None:
        if min(self.seq_len, self.batch_size, self.epochs) < 1 or self.lr <= 0:
            raise ConfigError("seq_len, batch_size and epochs must be >= 1 and lr > 0")
        if not 0 <= self.val_fraction < 1:
            raise ConfigError("val_fraction must be in [0, 1)")
        if self.precision not in ("auto", "fp32", "bf16", "fp16"):
            raise ConfigError("precision must be auto, fp32, bf16 or fp16")


@dataclass
class TrainConfig(BaseTrainConfig):
    """The left-to-right LSTM's training (`musiclstm train`): the base plus its data, windows and devices."""

    encoding: str = "remi"  #: performance, remi or grid
    cell: str = "lstm"  #: lstm, gru or rnn
    tie_weights: bool = False  #: share embedding and output weights (needs embed == hidden)
    windows: str = "pieces"  #: pieces (each piece from a fresh state, carried within it), tbptt (one stream) or random
    augment_stretch: float = 0.0  #: random tempo stretch by a factor in [1/(1+s), 1+s], per lane and epoch
    styles: str = "none"  #: conditioning: none, folder (top sub-folder name) or corpus (corpus name)
    sample_tokens: int = 256  #: length of the sample MIDI written at each validation (0: none)
    cache: bool = True  #: at the end, tune the continuous cache (musiclstm.models.cache) on up to 40 validation pieces

    def check(self) -> None:
        super().check()
        if self.windows not in ("pieces", "tbptt", "random"):
            raise ConfigError("windows must be pieces, tbptt or random")
        if self.styles not in ("none", "folder", "corpus"):
            raise ConfigError("styles must be none, folder or corpus")


@dataclass
class HarmonizerTrainConfig(BaseTrainConfig):
    """The chorale harmonizer's training (`musiclstm train --model harmonizer`): the base alone.
    `augment_transpose` moves a chorale only to keys the voice ranges allow."""


# what the command line refuses for --model harmonizer: the LM's own options
HARMONIZER_UNUSED = tuple(f.name for f in fields(TrainConfig)
                          if f.name not in {g.name for g in fields(HarmonizerTrainConfig)})
