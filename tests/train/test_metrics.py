"""Ranking metrics, AUC and gAUC against plain brute-force definitions."""

from __future__ import annotations

import itertools
import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from seminar.train.metrics import (
    MetricIdentityError,
    RankingAccumulator,
    auc,
    check_identities,
    gauc,
    ranking_metric_names,
    ranking_metrics,
    ranking_metrics_per_row,
)

KS = (1, 5, 10, 50)


def metrics_at_rank(rank: int) -> dict[str, float]:
    out = {}
    for k in KS:
        out[f"hr@{k}"] = float(rank < k)
        out[f"ndcg@{k}"] = 1.0 / math.log2(rank + 2) if rank < k else 0.0
    out["mrr"] = 1.0 / (rank + 1)
    return out


def permutation_reference(row: list[float]) -> dict[str, float]:
    """Average over every order of the candidates, each stably sorted by score: a random tie-break."""
    totals = dict.fromkeys(metrics_at_rank(0), 0.0)
    perms = list(itertools.permutations(range(len(row))))
    for perm in perms:
        ranked = sorted(perm, key=lambda i: -row[i])
        for key, value in metrics_at_rank(ranked.index(0)).items():
            totals[key] += value
    return {key: value / len(perms) for key, value in totals.items()}


def position_reference(row: list[float]) -> dict[str, float]:
    """The positive is equally likely at each place of its tie block."""
    higher = sum(s > row[0] for s in row[1:])
    ties = sum(s == row[0] for s in row[1:])
    totals = dict.fromkeys(metrics_at_rank(0), 0.0)
    for rank in range(higher, higher + ties + 1):
        for key, value in metrics_at_rank(rank).items():
            totals[key] += value / (ties + 1)
    return totals


def mean_reference(rows: list[list[float]], reference) -> dict[str, float]:
    per_row = [reference(row) for row in rows]
    return {key: sum(r[key] for r in per_row) / len(rows) for key in per_row[0]}


def score_rows(max_candidates: int, values: st.SearchStrategy) -> st.SearchStrategy:
    return st.integers(1, max_candidates).flatmap(
        lambda c: st.lists(st.lists(values, min_size=c, max_size=c), min_size=1, max_size=5)
    )


@settings(max_examples=60, deadline=None)
@given(score_rows(6, st.integers(0, 3)))
def test_metrics_match_random_tie_break_over_all_permutations(rows: list[list[int]]) -> None:
    got = ranking_metrics(torch.tensor(rows, dtype=torch.float32))
    want = mean_reference([[float(s) for s in r] for r in rows], permutation_reference)
    for key, value in want.items():
        assert got[key] == pytest.approx(value, abs=1e-12), key


@settings(max_examples=60, deadline=None)
@given(
    score_rows(
        70,
        st.one_of(st.integers(0, 4).map(float), st.floats(-5, 5, allow_nan=False, allow_infinity=False)),
    )
)
def test_metrics_match_reference_on_long_candidate_lists(rows: list[list[float]]) -> None:
    got = ranking_metrics(torch.tensor(rows, dtype=torch.float64))
    want = mean_reference(rows, position_reference)
    for key, value in want.items():
        assert got[key] == pytest.approx(value, abs=1e-12), key


@settings(max_examples=60, deadline=None)
@given(st.integers(1, 8), st.integers(1, 120), st.integers(0, 2**31 - 1), st.integers(1, 10))
def test_identities_hold_on_random_scores(batch: int, candidates: int, seed: int, levels: int) -> None:
    generator = torch.Generator().manual_seed(seed)
    scores = torch.randint(0, levels, (batch, candidates), generator=generator).float()
    scores += torch.rand(batch, candidates, generator=generator) * (seed % 2)
    metrics = ranking_metrics(scores)
    check_identities(metrics)
    assert metrics["ndcg@1"] == metrics["hr@1"]


def test_constant_scores_are_chance_not_perfect() -> None:
    metrics = ranking_metrics(torch.zeros(7, 100))
    assert metrics["hr@1"] == pytest.approx(0.01)
    assert metrics["hr@10"] == pytest.approx(0.10)
    assert metrics["hr@50"] == pytest.approx(0.50)
    assert metrics["mrr"] == pytest.approx(sum(1 / r for r in range(1, 101)) / 100)
    assert all(value < 0.6 for value in metrics.values())


def test_perfect_and_worst_rankings() -> None:
    scores = torch.arange(100, 0, -1, dtype=torch.float32).repeat(3, 1)
    assert all(v == 1.0 for v in ranking_metrics(scores).values())
    worst = ranking_metrics(-scores)
    assert worst["hr@50"] == 0.0 and worst["ndcg@50"] == 0.0
    assert worst["mrr"] == pytest.approx(1 / 100)


def test_nan_scores_are_refused() -> None:
    scores = torch.zeros(2, 5)
    scores[1, 0] = float("nan")
    with pytest.raises(ValueError, match="NaN"):
        ranking_metrics(scores)


def test_accumulator_sums_batches_and_merges_like_an_all_reduce() -> None:
    generator = torch.Generator().manual_seed(3)
    scores = torch.randint(0, 6, (37, 30), generator=generator).float()
    whole = ranking_metrics(scores)
    parts = [RankingAccumulator(), RankingAccumulator()]
    for i, chunk in enumerate(scores.split(5)):
        parts[i % 2].update(chunk)
    merged = RankingAccumulator()
    merged.totals = parts[0].totals + parts[1].totals
    assert merged.count == 37
    got = merged.compute()
    for key in whole:
        assert got[key] == pytest.approx(whole[key], abs=1e-12)
    assert tuple(got) == ranking_metric_names(KS)


def test_empty_accumulator_refuses_to_compute() -> None:
    with pytest.raises(ValueError, match="no evaluation rows"):
        RankingAccumulator().compute()


def test_per_row_values_lie_in_unit_interval() -> None:
    rows = ranking_metrics_per_row(torch.randn(50, 20))
    assert rows.shape == (len(ranking_metric_names(KS)), 50)
    assert bool(((rows >= 0) & (rows <= 1)).all())


VALID = {
    "ndcg@1": 0.2, "ndcg@5": 0.3, "ndcg@10": 0.35, "ndcg@50": 0.4,
    "hr@1": 0.2, "hr@5": 0.4, "hr@10": 0.5, "hr@50": 0.8, "mrr": 0.3,
}  # fmt: skip


def test_identity_check_accepts_consistent_metrics_and_ignores_other_keys() -> None:
    check_identities({**VALID, "users": 40, "loss": 3.2})


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"ndcg@1": 0.25}, "ndcg@1"),
        ({"ndcg@10": 0.55, "ndcg@50": 0.56}, "hr@10"),
        ({"mrr": 0.1}, "mrr"),
        ({"hr@10": 0.35}, "hr@10"),
        ({"hr@50": 1.2}, "outside"),
        ({"ndcg@5": -0.1}, "outside"),
        ({"mrr": float("nan")}, "outside"),
        ({"ndcg@50": 0.33}, "ndcg@50"),
    ],
)
def test_identity_check_raises_on_violations(change: dict[str, float], message: str) -> None:
    with pytest.raises(MetricIdentityError, match=message):
        check_identities({**VALID, **change})
    assert issubclass(MetricIdentityError, AssertionError)


def pairwise_auc(scores: list[float], labels: list[int]) -> float:
    pos = [s for s, y in zip(scores, labels, strict=True) if y == 1]
    neg = [s for s, y in zip(scores, labels, strict=True) if y == 0]
    wins = sum(1.0 if p > n else 0.5 if p == n else 0.0 for p in pos for n in neg)
    return wins / (len(pos) * len(neg))


labelled = st.lists(
    st.tuples(st.integers(-3, 3), st.integers(0, 1), st.integers(0, 4)), min_size=1, max_size=60
)


@settings(max_examples=100, deadline=None)
@given(labelled)
def test_auc_matches_pairwise_reference(rows: list[tuple[int, int, int]]) -> None:
    scores = [float(s) / 2 for s, _, _ in rows]
    labels = [y for _, y, _ in rows]
    if len(set(labels)) < 2:
        with pytest.raises(ValueError, match="both"):
            auc(torch.tensor(scores), torch.tensor(labels))
        return
    assert auc(torch.tensor(scores), torch.tensor(labels)) == pytest.approx(
        pairwise_auc(scores, labels), abs=1e-12
    )


@settings(max_examples=100, deadline=None)
@given(labelled)
def test_gauc_matches_impression_weighted_pairwise_reference(rows: list[tuple[int, int, int]]) -> None:
    by_user: dict[int, tuple[list[float], list[int]]] = {}
    for s, y, u in rows:
        by_user.setdefault(u * 17 - 5, ([], []))
        by_user[u * 17 - 5][0].append(float(s))
        by_user[u * 17 - 5][1].append(y)
    valid = {u: v for u, v in by_user.items() if len(set(v[1])) == 2}
    scores = torch.tensor([float(s) for s, _, _ in rows])
    labels = torch.tensor([y for _, y, _ in rows])
    users = torch.tensor([u * 17 - 5 for _, _, u in rows])
    if not valid:
        with pytest.raises(ValueError, match="at least one user"):
            gauc(scores, labels, users)
        return
    weight = sum(len(v[0]) for v in valid.values())
    want = sum(len(v[0]) * pairwise_auc(*v) for v in valid.values()) / weight
    assert gauc(scores, labels, users) == pytest.approx(want, abs=1e-12)


def test_auc_known_values_and_label_checks() -> None:
    labels = torch.tensor([1, 0, 1, 0])
    assert auc(torch.tensor([4.0, 1.0, 3.0, 2.0]), labels) == 1.0
    assert auc(torch.tensor([1.0, 4.0, 2.0, 3.0]), labels) == 0.0
    assert auc(torch.zeros(4), labels) == 0.5
    with pytest.raises(ValueError, match="0 or 1"):
        auc(torch.zeros(2), torch.tensor([0, 2]))
    with pytest.raises(ValueError, match="NaN"):
        auc(torch.tensor([float("nan"), 1.0]), torch.tensor([0, 1]))


def test_gauc_skips_single_class_users() -> None:
    scores = torch.tensor([0.9, 0.1, 0.8, 0.2, 0.5, 0.4])
    labels = torch.tensor([1, 0, 0, 1, 1, 1])
    users = torch.tensor([7, 7, 3, 3, 9, 9])
    # user 7: AUC 1 (2 impressions); user 3: AUC 0 (2 impressions); user 9: only positives, skipped
    assert gauc(scores, labels, users) == pytest.approx(0.5)
