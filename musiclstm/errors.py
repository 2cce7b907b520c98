"""The project's errors: one clear exception per kind of bad input.

The command line turns any of these into one line on stderr and a non-zero exit.
May import: nothing in musiclstm (the bottom room). Not: any other room (every room imports this one).
"""


class MusiclstmError(Exception):
    """Base class of every error musiclstm raises on purpose."""


class MidiReadError(MusiclstmError):
    """A music file could not be read. The message names the file and the reason."""

    def __init__(self, source: str, reason: str):
        self.source = source
        self.reason = reason
        super().__init__(f"cannot read {source}: {reason}")


class CheckpointError(MusiclstmError):
    """A checkpoint is missing, truncated, foreign or incompatible."""


class ConfigError(MusiclstmError):
    """An option or configuration value is invalid."""
