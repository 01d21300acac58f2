"""The ranking metrics' names and cut-offs, without torch: settings and a reproduce config check a
``monitor`` or a table's metric against them before any model is loaded."""

from __future__ import annotations

from collections.abc import Sequence

__all__ = ["DEFAULT_KS", "normalise_ks", "ranking_metric_names"]

DEFAULT_KS: tuple[int, ...] = (1, 5, 10, 50)


def normalise_ks(ks: Sequence[int]) -> tuple[int, ...]:
    """Sorted distinct cut-offs, 1 always among them (``ndcg@1`` is always reported)."""
    if any(int(k) < 1 for k in ks):
        raise ValueError(f"cut-offs must be positive, got {tuple(ks)}")
    return tuple(sorted({1, *(int(k) for k in ks)}))


def ranking_metric_names(ks: Sequence[int] = DEFAULT_KS) -> tuple[str, ...]:
    """Names in the order :class:`~seminar.train.metrics.RankingAccumulator` keeps them; ``ndcg@1``
    is always present."""
    ks = normalise_ks(ks)
    return (*(f"ndcg@{k}" for k in ks), *(f"hr@{k}" for k in ks), "mrr")
