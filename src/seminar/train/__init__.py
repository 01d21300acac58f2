"""Training, evaluation metrics and verified checkpoints for the recommendation models.

The names below are imported on first use: the settings read the metric names
(:mod:`seminar.train.metric_names`) without loading torch.
"""

from __future__ import annotations

from seminar.lazy import lazy_attributes

_EXPORTS = {
    **dict.fromkeys(
        ("CheckpointError", "load_checkpoint", "load_weights", "save_checkpoint", "verify_checkpoint"),
        "seminar.train.checkpoint",
    ),
    **dict.fromkeys(
        ("MetricIdentityError", "RankingAccumulator", "auc", "check_identities", "gauc", "ranking_metrics"),
        "seminar.train.metrics",
    ),
    **dict.fromkeys(("StaleRun", "TrainConfig", "Trainer"), "seminar.train.trainer"),
}
__getattr__ = lazy_attributes(__name__, _EXPORTS)
__all__ = sorted(_EXPORTS)
