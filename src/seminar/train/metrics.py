"""Ranking metrics on sampled candidates, AUC/gAUC on labelled data, and checks of their identities.

Ranking metrics read a [B, C] score matrix whose column 0 is the positive. The positive's rank is
``higher + u`` where ``higher`` counts negatives scoring strictly above it and ``u`` is uniform over
``0..ties`` (``ties`` = negatives scoring exactly the same): every metric is its **expected value
under a uniformly random tie-break**. Ties therefore never favour the positive (a constant model
scores what a random ranking scores, never a perfect one) and never punish it beyond chance. The
expectation is exact and vectorised: for a gain ``g(r)`` it is ``(G[higher+ties+1] - G[higher]) /
(ties+1)`` with ``G`` the prefix sums of ``g`` over ranks ``0..C-1``.

Gains per rank ``r`` (0-based): HR@K ``[r < K]``, NDCG@K ``[r < K] / log2(r + 2)``, MRR ``1 / (r + 1)``.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Mapping, Sequence

import torch
from torch import Tensor

from seminar.train.metric_names import DEFAULT_KS as DEFAULT_KS
from seminar.train.metric_names import normalise_ks
from seminar.train.metric_names import ranking_metric_names as ranking_metric_names

IDENTITY_TOLERANCE = 1e-9


class MetricIdentityError(AssertionError):
    """Metrics that violate an identity every correct implementation satisfies (a bug, not noise)."""


def _gain_prefix_table(n_candidates: int, ks: tuple[int, ...], device: torch.device) -> Tensor:
    """[n_metrics, C + 1] prefix sums of each metric's gain over ranks 0..C-1 (float64)."""
    ranks = torch.arange(n_candidates, dtype=torch.float64, device=device)
    discount = 1.0 / torch.log2(ranks + 2.0)
    rows = [torch.where(ranks < k, discount, 0.0) for k in ks]
    rows += [(ranks < k).to(torch.float64) for k in ks]
    rows.append(1.0 / (ranks + 1.0))
    gains = torch.stack(rows)
    return torch.cat([gains.new_zeros(gains.shape[0], 1), gains.cumsum(dim=1)], dim=1)


def ranking_metrics_per_row(scores: Tensor, ks: Sequence[int] = DEFAULT_KS) -> Tensor:
    """[n_metrics, B] expected metric of each row (see the module docstring), float64.

    Rows follow :func:`ranking_metric_names`. NaN scores are refused: a NaN positive would
    compare false against everything and look perfect.
    """
    if scores.ndim != 2 or scores.shape[1] < 1:
        raise ValueError(f"scores must be [batch, candidates >= 1], got shape {tuple(scores.shape)}")
    if torch.isnan(scores).any():
        raise ValueError("scores contain NaN; refusing to rank them")
    ks = normalise_ks(ks)
    positive = scores[:, :1]
    negatives = scores[:, 1:]
    higher = (negatives > positive).sum(dim=1)
    ties = (negatives == positive).sum(dim=1)
    table = _gain_prefix_table(scores.shape[1], ks, scores.device)
    upper = table[:, higher + ties + 1]
    lower = table[:, higher]
    return (upper - lower) / (ties + 1).to(torch.float64)


def ranking_metrics(scores: Tensor, ks: Sequence[int] = DEFAULT_KS) -> dict[str, float]:
    """Mean ranking metrics of one score matrix, identities checked."""
    acc = RankingAccumulator(ks, device=scores.device)
    acc.update(scores)
    return acc.compute()


class RankingAccumulator:
    """Sums per-row ranking metrics over batches; :attr:`totals` is what DDP ranks all-reduce.

    ``totals`` is a float64 tensor ``[n_metrics + 1]``: the metric sums in the order of
    :attr:`names`, then the number of rows. Summing it across ranks (``all_reduce``) and calling
    :meth:`compute` gives every rank the metrics of the whole evaluation set.
    """

    def __init__(self, ks: Sequence[int] = DEFAULT_KS, device: torch.device | str | None = None) -> None:
        self.ks = normalise_ks(ks)
        self.names = ranking_metric_names(self.ks)
        self.totals = torch.zeros(len(self.names) + 1, dtype=torch.float64, device=device)

    @property
    def count(self) -> int:
        return round(float(self.totals[-1]))

    def update(self, scores: Tensor) -> None:
        per_row = ranking_metrics_per_row(scores.to(self.totals.device), self.ks)
        self.totals[:-1] += per_row.sum(dim=1)
        self.totals[-1] += per_row.shape[1]

    def compute(self) -> dict[str, float]:
        """Means over every row seen; raises if nothing was seen or an identity fails."""
        count = float(self.totals[-1])
        if count <= 0:
            raise ValueError("no evaluation rows were accumulated; metrics are undefined")
        means = (self.totals[:-1] / count).tolist()
        metrics = dict(zip(self.names, means, strict=True))
        check_identities(metrics)
        return metrics


def _cutoffs(metrics: Mapping[str, float], prefix: str) -> dict[int, float]:
    out = {}
    for key, value in metrics.items():
        if key.startswith(prefix + "@"):
            out[int(key.split("@", 1)[1])] = float(value)
    return dict(sorted(out.items()))


def check_identities(metrics: Mapping[str, float], tol: float = IDENTITY_TOLERANCE) -> None:
    """Raise :class:`MetricIdentityError` unless the ranking metrics are mutually consistent.

    Checked: every ``ndcg@K``/``hr@K``/``mrr`` is finite and in [0, 1]; ``ndcg@1 == hr@1``;
    ``hr@K >= ndcg@K``; ``mrr >= hr@1``; HR and NDCG non-decreasing in K. Other keys are ignored.
    """
    hr, ndcg = _cutoffs(metrics, "hr"), _cutoffs(metrics, "ndcg")
    problems: list[str] = []
    named = {f"hr@{k}": v for k, v in hr.items()} | {f"ndcg@{k}": v for k, v in ndcg.items()}
    if "mrr" in metrics:
        named["mrr"] = float(metrics["mrr"])
    for key, value in named.items():
        if not math.isfinite(value) or value < -tol or value > 1 + tol:
            problems.append(f"{key}={value} is outside [0, 1]")
    if 1 in hr and 1 in ndcg and abs(hr[1] - ndcg[1]) > tol:
        problems.append(f"ndcg@1={ndcg[1]} differs from hr@1={hr[1]}")
    for k in sorted(hr.keys() & ndcg.keys()):
        if hr[k] < ndcg[k] - tol:
            problems.append(f"hr@{k}={hr[k]} is below ndcg@{k}={ndcg[k]}")
    if "mrr" in named and 1 in hr and named["mrr"] < hr[1] - tol:
        problems.append(f"mrr={named['mrr']} is below hr@1={hr[1]}")
    for prefix, values in (("hr", hr), ("ndcg", ndcg)):
        ks = list(values)
        for small, large in itertools.pairwise(ks):
            if values[large] < values[small] - tol:
                problems.append(f"{prefix}@{large}={values[large]} is below {prefix}@{small}={values[small]}")
    if problems:
        raise MetricIdentityError("ranking metrics violate their identities: " + "; ".join(problems))


def _check_labelled(scores: Tensor, labels: Tensor) -> tuple[Tensor, Tensor]:
    scores = torch.as_tensor(scores).detach().reshape(-1).to(torch.float64)
    labels = torch.as_tensor(labels).detach().reshape(-1)
    if scores.shape != labels.shape:
        raise ValueError(f"{scores.numel()} scores but {labels.numel()} labels")
    if torch.isnan(scores).any():
        raise ValueError("scores contain NaN")
    if not bool(((labels == 0) | (labels == 1)).all()):
        raise ValueError("labels must be 0 or 1")
    return scores, labels.to(torch.float64)


def _group_auc(scores: Tensor, labels: Tensor, groups: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """Per group: (AUC, impressions, positives). AUC is NaN where a group has one class only.

    Mann-Whitney form with average ranks inside tie blocks, so a tied positive/negative pair
    counts one half, all in one sort (by group, then score) for every group at once.
    """
    _, group_index = torch.unique(groups, return_inverse=True)
    by_score = torch.argsort(scores, stable=True)
    order = by_score[torch.argsort(group_index[by_score], stable=True)]
    g, s = group_index[order], scores[order]
    n = g.numel()
    position = torch.arange(n, device=scores.device)
    new_group = torch.ones(n, dtype=torch.bool, device=scores.device)
    new_group[1:] = g[1:] != g[:-1]
    group_start = torch.cummax(torch.where(new_group, position, 0), dim=0).values
    within = position - group_start
    new_block = new_group.clone()
    new_block[1:] |= s[1:] != s[:-1]
    block = torch.cumsum(new_block.to(torch.int64), dim=0) - 1
    n_blocks = int(block[-1]) + 1
    first = torch.full((n_blocks,), n, dtype=torch.int64, device=scores.device)
    first = first.scatter_reduce(0, block, within, reduce="amin")
    last = torch.zeros(n_blocks, dtype=torch.int64, device=scores.device)
    last = last.scatter_reduce(0, block, within, reduce="amax")
    avg_rank = (first + last).to(torch.float64)[block] / 2.0 + 1.0
    n_groups = int(g[-1]) + 1
    y = labels[order]
    impressions = torch.bincount(g, minlength=n_groups).to(torch.float64)
    positives = torch.zeros(n_groups, dtype=torch.float64, device=scores.device).index_add_(0, g, y)
    rank_sum = torch.zeros(n_groups, dtype=torch.float64, device=scores.device).index_add_(0, g, y * avg_rank)
    negatives = impressions - positives
    auc_values = (rank_sum - positives * (positives + 1) / 2) / (positives * negatives)
    return auc_values, impressions, positives


def auc(scores: Tensor, labels: Tensor) -> float:
    """Exact ROC AUC: P(positive scores above negative), ties counting one half."""
    scores, labels = _check_labelled(scores, labels)
    if scores.numel() == 0:
        raise ValueError("AUC of an empty set is undefined")
    values, impressions, positives = _group_auc(scores, labels, torch.zeros_like(labels, dtype=torch.int64))
    if positives[0] == 0 or positives[0] == impressions[0]:
        raise ValueError("AUC needs both positive and negative labels")
    return float(values[0])


def gauc(scores: Tensor, labels: Tensor, users: Tensor) -> float:
    """Group AUC: per-user AUC averaged with weights = the user's impressions.

    Users whose impressions are all positive or all negative have no AUC and are skipped (their
    impressions do not count in the weights either).
    """
    scores, labels = _check_labelled(scores, labels)
    users = torch.as_tensor(users).detach().reshape(-1).to(scores.device)
    if users.shape != scores.shape:
        raise ValueError(f"{scores.numel()} scores but {users.numel()} user ids")
    if scores.numel() == 0:
        raise ValueError("gAUC of an empty set is undefined")
    values, impressions, positives = _group_auc(scores, labels, users)
    valid = (positives > 0) & (positives < impressions)
    if not bool(valid.any()):
        raise ValueError("gAUC needs at least one user with both positive and negative labels")
    weights = impressions[valid]
    return float((values[valid] * weights).sum() / weights.sum())
