"""Errors a user can act on. The command line prints them as one line plus a hint."""

from __future__ import annotations


class ConfigError(ValueError):
    """An unknown config key, a value of the wrong type, an unknown preset."""


class CheckpointError(ValueError):
    """A checkpoint that is missing, truncated, corrupt, or from another task."""


class DataError(ValueError):
    """Input data that cannot be used: a missing image, a mask of the wrong size, ..."""


class NonFiniteLossError(RuntimeError):
    """Training stopped after too many consecutive non-finite losses."""
