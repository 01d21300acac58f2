"""Errors shared across layers, kept in a module that imports nothing so any layer may raise them."""

from __future__ import annotations


class InvalidValue(ValueError):
    """A value a config dataclass rejects; the parser adds where in the file it sits."""

    def __init__(self, key: str, message: str) -> None:
        super().__init__(f"{key}: {message}")
        self.key, self.message = key, message


class ConfigError(ValueError):
    """A reproduce config that cannot run; the message names the file and the key."""


class NoPretrainingTask(ValueError):
    """None of the asked-for PSU tasks can run on this dataset."""


class CheckpointError(RuntimeError):
    """A checkpoint that is missing, incomplete or does not match its manifest."""


class StaleRun(ValueError):
    """A run that cannot be resumed: its configuration or its dataset changed since it was saved."""
