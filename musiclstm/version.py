"""The package version (a bottom room: it imports nothing, so a sidecar can name it).

May import: nothing in musiclstm. Not: any room.
"""

__version__ = "0.1.0"
