"""Errors of the serving layer, each carrying the HTTP status it maps to.

They subclass ``ValueError`` so Python callers can treat every bad-input case alike, while the
HTTP layer answers each with its own 4xx code and the message, never a 500.
"""

from __future__ import annotations


class ServingError(ValueError):
    """Bad input to the scoring service; ``status`` is the HTTP answer."""

    status: int = 422

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        if status is not None:
            self.status = status


class ExportError(ServingError):
    """An export directory that is missing, unfinished, tampered with or for an unsupported model."""


class UnknownItemError(ServingError):
    """An item id absent from the export's item map."""


class UnknownQueryError(ServingError):
    """A query string absent from the export's query vocabulary (when unknown queries are rejected)."""


class TimestampOrderError(ServingError):
    """Behaviours out of time order: within a request (422) or before the stored history (409)."""


class EmptyHistoryError(ServingError):
    """Scoring a user before any behaviour was appended."""

    status = 409
