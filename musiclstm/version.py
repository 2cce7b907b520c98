"""The package version (a bottom room: it imports nothing, so a sidecar can name it)."""

__version__ = "0.1.0"
