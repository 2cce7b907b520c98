"""musiclstm: an LSTM music generator you can install, train, compose with and take apart.

Pipeline: read (`midi.read`) -> encode (`Tokenizer`) -> train -> generate -> decode -> write.
"""

from .errors import CheckpointError, ConfigError, MidiReadError, MusiclstmError
from .midi import read, to_pretty_midi, write_midi
from .score import Score, Track
from .tokenizer import Tokenizer

_LAZY = {"load": ("checkpoint", "load"), "Model": ("checkpoint", "Model"), "train": ("train", "train"),
         "generate": ("sample", "generate"), "compose": ("compose", "compose"), "Controls": ("grammar", "Controls"),
         "gate_trace": ("gates", "gate_trace"), "audio": ("compose", "audio"), "evaluate": ("evaluate", "evaluate")}


def __getattr__(name: str):
    """The torch-backed API (`load`, `train`, `generate`, `compose`, ...) imports torch on first use."""
    if name in _LAZY:
        import importlib

        module, attr = _LAZY[name]
        return getattr(importlib.import_module(f".{module}", __name__), attr)
    raise AttributeError(f"module 'musiclstm' has no attribute {name!r}")

__version__ = "0.1.0"

__all__ = ["Controls", "Model", "audio", "compose", "evaluate", "gate_trace", "generate", "load", "train",
           "CheckpointError", "ConfigError", "MidiReadError", "MusiclstmError", "Score", "Tokenizer", "Track",
           "read", "to_pretty_midi", "write_midi"]
