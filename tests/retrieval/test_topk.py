"""The fast row-wise top-k equals the plain stable sort, ties (to the later position) included."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from seminar.models import threshold
from seminar.models.search import select_top_k
from seminar.retrieval.topk import reference_top_k_latest, top_k_latest


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    rows=st.integers(1, 12),
    n=st.integers(1, 3000),
    k=st.integers(1, 120),
    levels=st.sampled_from([0, 2, 7, 1000]),  # 0: continuous scores; else that many distinct values
    seed=st.integers(0, 2**31 - 1),
)
def test_fast_top_k_equals_the_reference(rows: int, n: int, k: int, levels: int, seed: int) -> None:
    rng = np.random.default_rng(seed)
    scores = rng.standard_normal((rows, n)).astype(np.float32)
    if levels:
        scores = rng.integers(0, levels, (rows, n)).astype(np.float32)
    expected = reference_top_k_latest(scores, k)
    got = top_k_latest(scores, k)
    assert got.shape == (rows, min(k, n))
    np.testing.assert_array_equal(got, expected)


def test_the_reference_is_the_rankers_selection() -> None:
    """Same positions as the ranker's ``select_top_k`` (torch), repeated scores included."""
    rng = np.random.default_rng(0)
    scores = rng.integers(0, 20, (5, 400)).astype(np.float32)
    indices, _ = select_top_k(torch.from_numpy(scores)[None], torch.ones(1, 400, dtype=torch.bool), 30)
    np.testing.assert_array_equal(reference_top_k_latest(scores, 30), np.sort(indices[0].numpy(), axis=1))


def test_rows_whose_threshold_keeps_too_few_fall_back(monkeypatch: pytest.MonkeyPatch) -> None:
    """A sample that misses a row's best scores (they all lie between sampled columns) still gives
    the exact top-k: the row is recomputed on the plain path."""
    monkeypatch.setattr(threshold, "SAMPLE_MARGIN", 0)
    n, k = 4000, 40
    scores = np.zeros((3, n), dtype=np.float32)
    scores[0, 1::16] = np.arange(n // 16)  # the sampled columns (0, 16, ...) are all zero
    scores[1] = np.random.default_rng(1).standard_normal(n)
    scores[2, ::16] = 5.0  # the sample overstates: many equal scores at the threshold
    np.testing.assert_array_equal(top_k_latest(scores, k), reference_top_k_latest(scores, k))


@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_non_finite_scores_are_refused(bad: float) -> None:
    scores = np.zeros((2, 100), dtype=np.float32)
    scores[1, 5] = bad
    with pytest.raises(ValueError, match="finite"):
        top_k_latest(scores, 3)


def test_k_must_be_positive_and_scores_two_dimensional() -> None:
    with pytest.raises(ValueError, match="k must be"):
        top_k_latest(np.zeros((2, 5), dtype=np.float32), 0)
    with pytest.raises(ValueError, match=r"\[C, n\]"):
        top_k_latest(np.zeros(5, dtype=np.float32), 1)


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    lead=st.tuples(st.integers(0, 4), st.integers(1, 9)),
    n=st.one_of(st.integers(1, 600), st.integers(1500, 2500)),  # long rows: the sample threshold
    k=st.integers(0, 80),
    levels=st.sampled_from([0, 2, 7, 1000]),  # 0: continuous scores; else that many distinct values
    masked=st.floats(0.0, 1.0),  # share of -inf (masked) positions
    seed=st.integers(0, 2**31 - 1),
)
def test_torch_top_k_latest_first_equals_the_sort(lead, n, k, levels, masked, seed) -> None:
    """The ranker's selection (best first, ties to later positions, -inf padding last) equals the
    plain stable sort, order included, on rows with and without ties straddling the k-th place."""
    from seminar.models.search import (
        _ordered_keys,
        reference_top_k_latest_first,
        top_k_by_keys,
        top_k_latest_first,
    )

    rng = np.random.default_rng(seed)
    shape = (*lead, n)
    scores = rng.standard_normal(shape) if not levels else rng.integers(0, levels, shape) - levels // 2
    scores = scores.astype(np.float64)
    scores = np.where(rng.random(shape) < 0.5, scores, -scores)  # -0.0 beside 0.0: equal scores
    scores = np.where(rng.random(shape) < masked, -np.inf, scores).astype(np.float32)
    if seed % 7 == 0:  # a NaN here and there: the reference ranks it first
        scores[rng.random(shape) < 0.01] = np.nan
    if seed % 5 == 1:  # finite scores as low as the -inf stand-ins of the fast path
        scores[rng.random(shape) < 0.05] = rng.choice([-1e31, -1e30, np.finfo(np.float32).min])
    k = min(k, n)
    tensor = torch.from_numpy(scores)
    got = top_k_latest_first(tensor, k)
    assert got.shape == (*lead, k)
    expected = reference_top_k_latest_first(tensor, k)
    assert torch.equal(got, expected)
    if k:  # the key path alone (every row on an accelerator: torch.topk of the unique keys)
        flat = tensor.reshape(-1, n)
        assert torch.equal(top_k_by_keys(flat, k), expected.reshape(-1, k))
        on_accelerator = torch.topk(_ordered_keys(flat), k, dim=1, sorted=True).values & 0xFFFFFFFF
        assert torch.equal(on_accelerator, expected.reshape(-1, k))


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    rows=st.integers(1, 30),
    n=st.integers(800, 3000),
    k=st.integers(1, 60),
    levels=st.sampled_from([0, 3, 50]),
    seed=st.integers(0, 2**31 - 1),
)
def test_the_kth_largest_from_a_sample_threshold_equals_the_partition(rows, n, k, levels, seed) -> None:
    """Long rows (where the ranker's selection partitions only what passes a sample threshold):
    each row's k-th largest and its NaN flag equal a partition of the whole row, ties included."""
    from seminar.models.search import _kth_largest

    rng = np.random.default_rng(seed)
    values = rng.standard_normal((rows, n)) if not levels else rng.integers(0, levels, (rows, n))
    values = values.astype(np.float32)
    values[rng.random((rows, n)) < 0.2] = -1e30  # masked positions lifted below every score
    if seed % 3 == 0:
        values[rng.integers(0, rows), rng.integers(0, n)] = np.nan
    kth, has_nan, _ = _kth_largest(values, k)
    partitioned = np.partition(values, n - k, axis=1)
    np.testing.assert_array_equal(has_nan, np.isnan(values).any(axis=1))
    np.testing.assert_array_equal(kth[~has_nan], partitioned[~has_nan, n - k])


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    lead=st.tuples(st.integers(1, 4), st.one_of(st.integers(1, 9), st.integers(16, 40))),
    n=st.one_of(st.integers(1, 300), st.integers(1500, 2500)),
    k=st.integers(0, 80),
    levels=st.sampled_from([0, 3, 1000]),
    hidden=st.floats(0.0, 1.0),  # share of positions outside ``visible``
    per_target=st.booleans(),  # visible [B, C, L], else shared by the targets [B, 1, L]
    padding=st.floats(0.0, 1.2),  # each sequence's leading columns hidden in every row, up to this share
    seed=st.integers(0, 2**31 - 1),
)
def test_selection_with_a_visibility_mask_equals_the_sort_of_the_masked_scores(
    lead, n, k, levels, hidden, per_target, padding, seed
) -> None:
    """``visible`` masks positions to -inf inside the fast path (numpy, one pass; a sequence's left
    padding cut off): the same positions as the reference on the scores masked by torch, ties,
    fully hidden rows and sequences, and fewer visible columns than k included."""
    from seminar.models.search import _top_k_per_sequence, reference_top_k_latest_first, top_k_latest_first

    rng = np.random.default_rng(seed)
    shape = (*lead, n)
    scores = rng.standard_normal(shape) if not levels else rng.integers(0, levels, shape)
    scores = torch.from_numpy(scores.astype(np.float32))
    shown = rng.random((lead[0], lead[1] if per_target else 1, n)) >= hidden
    pads = (rng.random(lead[0]) * padding * n).astype(int)
    shown &= np.arange(n)[None, None, :] >= pads[:, None, None]
    visible = torch.from_numpy(shown)
    k = min(k, n)
    expected = reference_top_k_latest_first(scores.masked_fill(~visible, float("-inf")), k)
    assert torch.equal(top_k_latest_first(scores, k, visible=visible), expected)
    if k:  # sequence by sequence whatever the padding (the path long, padded windows take)
        by_sequence = _top_k_per_sequence(scores.numpy(), visible.numpy(), k)
        assert torch.equal(torch.from_numpy(by_sequence), expected)
    indices, valid = select_top_k(scores, visible if per_target else visible[:, 0], k)
    assert torch.equal(indices, expected)
    assert torch.equal(valid, torch.gather(visible.expand(*lead, n), 2, expected))
