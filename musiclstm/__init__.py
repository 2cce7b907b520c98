"""musiclstm: an LSTM music generator you can install, train, compose with and take apart.

Pipeline: read (`midi.read`) -> encode (`Tokenizer`) -> train -> generate -> decode -> write.
The functions below share names with their modules (`musiclstm.compose` is the function, in
musiclstm/generation/compose.py): importing them here keeps `musiclstm.compose(...)` callable.
"""

from .encodings.grammar import Controls
from .encodings.tokenizer import Tokenizer
from .errors import CheckpointError, ConfigError, MidiReadError, MusiclstmError
from .evaluation.evaluate import evaluate
from .evaluation.gates import gate_trace
from .generation.compose import compose
from .generation.harmonize import harmonize, infill
from .generation.sample import generate
from .io.midi import read, to_pretty_midi, write_midi
from .io.outputs import audio
from .io.score import Score, Track
from .models.checkpoint import Model, load
from .training.lm import train
from .version import __version__ as __version__

__all__ = ["Controls", "Model", "audio", "compose", "evaluate", "gate_trace", "generate", "harmonize", "infill",
           "load", "train",
           "CheckpointError", "ConfigError", "MidiReadError", "MusiclstmError", "Score", "Tokenizer", "Track",
           "read", "to_pretty_midi", "write_midi"]
