"""musiclstm: an LSTM music generator you can install, train, compose with and take apart.

Pipeline: read (`midi.read`) -> encode (`Tokenizer`) -> train -> generate -> decode -> write.
The functions below share names with their modules (`musiclstm.compose` is the function, in
musiclstm/compose.py): importing them here keeps `musiclstm.compose(...)` callable.
"""

from .checkpoint import Model, load
from .chorale import harmonize, infill
from .compose import audio, compose
from .errors import CheckpointError, ConfigError, MidiReadError, MusiclstmError
from .evaluate import evaluate
from .gates import gate_trace
from .grammar import Controls
from .midi import read, to_pretty_midi, write_midi
from .sample import generate
from .score import Score, Track
from .tokenizer import Tokenizer
from .train import train

__version__ = "0.1.0"

__all__ = ["Controls", "Model", "audio", "compose", "evaluate", "gate_trace", "generate", "harmonize", "infill",
           "load", "train",
           "CheckpointError", "ConfigError", "MidiReadError", "MusiclstmError", "Score", "Tokenizer", "Track",
           "read", "to_pretty_midi", "write_midi"]
