"""The serving's exact GSU against its plain reference: all scores, then a stable sort per target."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from seminar.retrieval.topk import reference_top_k_latest
from seminar.serving.gsu_search import CodeTables, ExactSearch
from seminar.serving.store import History


def random_tables(rng: np.random.Generator, n_queries: int, n_items: int, dim: int) -> CodeTables:
    """Exact keys on a coarse grid (multiples of 1/4), so that sums are exact in float32 and equal
    pairs, or different pairs with equal sums, tie exactly whichever way they are computed."""
    return CodeTables(
        np.zeros((n_queries, 0), np.uint8),
        np.zeros((n_items, 1, 0), np.uint8),
        (rng.integers(-4, 5, (n_queries, dim)) / 4).astype(np.float32),
        (rng.integers(-4, 5, (n_items, dim)) / 4).astype(np.float32),
    )


def random_history(rng: np.random.Generator, tables: CodeTables, n: int) -> History:
    return History(
        np.zeros((n, 0), np.uint8),
        rng.integers(0, tables.exact_items.shape[0], n).astype(np.int32),
        rng.integers(0, tables.exact_query.shape[0], n).astype(np.int32),
        np.arange(n, dtype=np.int64),
    )


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    n=st.integers(1, 2500),
    targets=st.integers(1, 40),
    k=st.integers(1, 80),
    per_id=st.booleans(),
    seed=st.integers(0, 2**31 - 1),
)
def test_exact_selection_equals_the_reference(n: int, targets: int, k: int, per_id: bool, seed: int) -> None:
    rng = np.random.default_rng(seed)
    tables = random_tables(rng, n_queries=5, n_items=int(rng.integers(2, 300)), dim=8)
    history = random_history(rng, tables, n)
    u = (rng.integers(-4, 5, (targets, 8)) / 4).astype(np.float32)
    search = ExactSearch(tables)
    search.per_id_max_targets = 10**9 if per_id else 0
    assert search.uses_id_tables(history, targets) == (per_id and 5 + tables.exact_items.shape[0] <= n)
    scores = search.scores(history, u)
    selection = search.select(history, u, k)
    np.testing.assert_array_equal(selection.positions, reference_top_k_latest(scores, k))
    np.testing.assert_array_equal(selection.exact, np.take_along_axis(scores, selection.positions, axis=1))
    assert selection.adc is None and selection.by == "exact"


def test_a_non_finite_target_is_refused() -> None:
    rng = np.random.default_rng(0)
    tables = random_tables(rng, 3, 10, 4)
    u = np.zeros((2, 4), np.float32)
    u[1, 2] = np.nan
    with pytest.raises(ValueError, match="not finite"):
        ExactSearch(tables).select(random_history(rng, tables, 20), u, 3)


def test_serve_refuses_an_unknown_gsu_before_loading(tmp_path) -> None:
    from seminar.cli import main

    with pytest.raises(SystemExit) as exit_info:
        main(["serve", str(tmp_path), "--gsu", "hnsw"])
    assert exit_info.value.code == 2


@settings(max_examples=60, deadline=None)
@given(
    n=st.integers(1, 300), rows=st.integers(1, 20), width=st.integers(1, 30), seed=st.integers(0, 2**31 - 1)
)
def test_union_of_kept_positions_equals_numpy_unique(n: int, rows: int, width: int, seed: int) -> None:
    from seminar.serving.service import _union_and_slots

    kept = np.random.default_rng(seed).integers(0, n, (rows, width))
    union, slots = _union_and_slots(kept, n)
    expected_union, expected_slots = np.unique(kept, return_inverse=True)
    np.testing.assert_array_equal(union, expected_union)
    np.testing.assert_array_equal(slots, expected_slots.reshape(kept.shape))


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(n=st.integers(2, 600), r=st.integers(1, 80), seed=st.integers(0, 2**31 - 1))
def test_the_biased_adc_shortlist_is_the_top_r_of_adc_plus_bias(n: int, r: int, seed: int) -> None:
    """Scanned once per run of equal bias (a log2-distance bucket), the shortlist holds the r best
    ADC + bias scores of the whole history, and reports those sums."""
    from seminar.retrieval.pq import MultiModalPQ, PQConfig
    from seminar.serving.gsu_search import CodeSearch

    rng = np.random.default_rng(seed)
    dim, channels = 8, 2
    train = [rng.standard_normal((64, dim)).astype(np.float32) for _ in range(channels)]
    pq = MultiModalPQ.train(train, PQConfig(channels, dim, 2, 16, n_iter=3, seed=0))
    tables = CodeTables(
        np.zeros((1, 2), np.uint8), np.zeros((1, 1, 2), np.uint8), np.zeros((1, dim), np.float32),
        np.zeros((1, dim), np.float32),
    )
    recency = (rng.standard_normal(16) * 2).astype(np.float32)
    search = CodeSearch(pq, tables, backend="numpy", recency=recency)
    codes = rng.integers(0, 16, (n, channels * 2)).astype(np.uint8)
    u = rng.standard_normal((3, dim)).astype(np.float32)
    bias = search.bias(n)
    everything = np.broadcast_to(np.arange(n), (3, n))
    full = search.adc_at(u, codes, everything) + bias
    positions, scores = search.shortlist(u, codes, min(r, n), bias)
    assert positions.shape == (3, min(r, n))
    np.testing.assert_allclose(scores, np.take_along_axis(full, positions, axis=1), rtol=1e-5, atol=1e-5)
    best = -np.sort(-full, axis=1)[:, : min(r, n)]
    np.testing.assert_allclose(np.sort(scores, axis=1)[:, ::-1], best, rtol=1e-5, atol=1e-5)
