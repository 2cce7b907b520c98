"""musiclstm: an LSTM music generator you can install, train, compose with and take apart.

Pipeline: read (`midi.read`) -> encode (`Tokenizer`) -> train -> generate -> decode -> write.
"""

from .errors import CheckpointError, ConfigError, MidiReadError, MusiclstmError
from .midi import read, to_pretty_midi, write_midi
from .score import Score, Track
from .tokenizer import Tokenizer

__version__ = "0.1.0"

__all__ = ["CheckpointError", "ConfigError", "MidiReadError", "MusiclstmError", "Score", "Tokenizer", "Track",
           "read", "to_pretty_midi", "write_midi"]
