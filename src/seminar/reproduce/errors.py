"""Errors of a reproduce config.

Both live in :mod:`seminar.errors` (a module that imports nothing, so the CLI and the dataset
sources can raise and catch them without importing the grid); they are re-exported here so existing
imports keep working.
"""

from __future__ import annotations

from seminar.errors import ConfigError, InvalidValue

__all__ = ["ConfigError", "InvalidValue"]
