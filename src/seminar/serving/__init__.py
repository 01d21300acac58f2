"""Online scoring: export a trained ranker, hold lifelong histories as PQ codes, score over HTTP.

``export`` writes a verified, self-contained directory; ``ScoringService`` appends behaviours and
scores candidates from it; ``app.create_app`` puts FastAPI in front (see docs/serving.md). The names
below are imported on first use: the command line reads the light modules (ids, schemas) without
loading the model.
"""

from __future__ import annotations

from seminar.lazy import lazy_attributes

_EXPORTS = {
    **dict.fromkeys(("Export", "load_export", "verify_export"), "seminar.serving.bundle"),
    **dict.fromkeys(
        (
            "EmptyHistoryError",
            "ExportError",
            "ServingError",
            "TimestampOrderError",
            "UnknownItemError",
            "UnknownQueryError",
        ),
        "seminar.serving.errors",
    ),
    "export_run": "seminar.serving.export",
    **dict.fromkeys(
        ("Behaviour", "KeptBehaviour", "ScoreResult", "ScoringService", "UserInfo"), "seminar.serving.service"
    ),
    **dict.fromkeys(("StateError", "load_histories", "save_histories"), "seminar.serving.state"),
}
__getattr__ = lazy_attributes(__name__, _EXPORTS)
__all__ = sorted(_EXPORTS)
