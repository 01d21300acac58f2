"""Online scoring: export a trained ranker, hold lifelong histories as PQ codes, score over HTTP.

``export`` writes a verified, self-contained directory; ``ScoringService`` appends behaviours and
scores candidates from it; ``app.create_app`` puts FastAPI in front (see docs/serving.md).
"""

from seminar.serving.bundle import Export, load_export, verify_export
from seminar.serving.errors import (
    EmptyHistoryError,
    ExportError,
    ServingError,
    TimestampOrderError,
    UnknownItemError,
    UnknownQueryError,
)
from seminar.serving.export import export_run
from seminar.serving.service import Behaviour, KeptBehaviour, ScoreResult, ScoringService, UserInfo
from seminar.serving.state import StateError, load_histories, save_histories

__all__ = [
    "Behaviour",
    "EmptyHistoryError",
    "Export",
    "ExportError",
    "KeptBehaviour",
    "ScoreResult",
    "ScoringService",
    "ServingError",
    "StateError",
    "TimestampOrderError",
    "UnknownItemError",
    "UnknownQueryError",
    "UserInfo",
    "export_run",
    "load_export",
    "load_histories",
    "save_histories",
    "verify_export",
]
