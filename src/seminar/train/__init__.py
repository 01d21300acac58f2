"""Training, evaluation metrics and verified checkpoints for the recommendation models."""

from seminar.train.checkpoint import (
    CheckpointError,
    load_checkpoint,
    load_weights,
    save_checkpoint,
    verify_checkpoint,
)
from seminar.train.metrics import (
    MetricIdentityError,
    RankingAccumulator,
    auc,
    check_identities,
    gauc,
    ranking_metrics,
)
from seminar.train.trainer import StaleRun, TrainConfig, Trainer

__all__ = [
    "CheckpointError",
    "MetricIdentityError",
    "RankingAccumulator",
    "StaleRun",
    "TrainConfig",
    "Trainer",
    "auc",
    "check_identities",
    "gauc",
    "load_checkpoint",
    "load_weights",
    "ranking_metrics",
    "save_checkpoint",
    "verify_checkpoint",
]
