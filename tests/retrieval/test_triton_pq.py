"""The Triton batched kernel against the torch references (interpreted on CPU without CUDA)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from seminar.retrieval.kernels import batched_adc_topk, batched_tables, codes_to_tensor, reference_adc_scores

from .conftest import trained_pq

triton_pq = pytest.importorskip("seminar.retrieval.triton_pq", reason="triton is not installed")

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
pytestmark = pytest.mark.skipif(
    DEVICE == "cpu" and not triton_pq.INTERPRETED,
    reason="no CUDA and triton_pq was imported without TRITON_INTERPRET=1",
)
SETTINGS = settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@st.composite
def problems(draw: st.DrawFn) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """Random codes, tables and mask (prefix padding, arbitrary holes, all-padding rows, or none)."""
    seed = draw(st.integers(0, 2**31))
    batch = draw(st.integers(1, 3))
    length = draw(st.integers(0, 70))
    n_channels = draw(st.integers(1, 4))
    n_sub = draw(st.sampled_from([1, 2, 3, 8, 20]))  # 4·20 = 80 codes spans two blocks of 64
    n_centroids = draw(st.sampled_from([2, 5, 16, 256]))
    mask_kind = draw(st.sampled_from(["none", "prefix", "random", "empty"]))
    rng = np.random.default_rng(seed)
    codes = rng.integers(0, n_centroids, (batch, length, n_channels, n_sub)).astype(np.uint8)
    tables = rng.standard_normal((batch, n_channels, n_sub, n_centroids)).astype(np.float32)
    if mask_kind == "none":
        mask = None
    elif mask_kind == "prefix":
        mask = np.arange(length)[None, :] < rng.integers(0, length + 1, batch)[:, None]
    elif mask_kind == "random":
        mask = rng.random((batch, length)) < rng.uniform(0, 1)
    else:
        mask = np.zeros((batch, length), dtype=bool)
    return (
        torch.from_numpy(codes).to(DEVICE),
        torch.from_numpy(tables).to(DEVICE),
        None if mask is None else torch.from_numpy(mask).to(DEVICE),
    )


def _real(mask: torch.Tensor | None, batch: int, length: int) -> torch.Tensor:
    return torch.ones((batch, length), dtype=torch.bool) if mask is None else mask.cpu()


@SETTINGS
@given(problem=problems(), block_l=st.sampled_from([16, 128]))
def test_scores_equal_reference(problem, block_l: int) -> None:
    codes, tables, mask = problem
    scores = triton_pq.triton_adc_scores(codes, tables, mask, block_l=block_l).cpu()
    batch, length = codes.shape[:2]
    assert scores.shape == (batch, length) and scores.dtype == torch.float32
    real = _real(mask, batch, length)
    for u in range(batch):
        ref = reference_adc_scores(codes[u].cpu(), tables[u].cpu())
        torch.testing.assert_close(scores[u][real[u]], ref[real[u]], rtol=1e-5, atol=1e-5)
        assert torch.isneginf(scores[u][~real[u]]).all()


@SETTINGS
@given(problem=problems(), k=st.integers(1, 90))
def test_topk_equals_batched_reference(problem, k: int) -> None:
    codes, tables, mask = problem
    values, indices = triton_pq.triton_adc_topk(codes, tables, k, mask, block_l=16)
    cpu_mask = None if mask is None else mask.cpu()
    ref_values, ref_indices = batched_adc_topk(codes.cpu(), tables.cpu(), k, cpu_mask)
    values, indices = values.cpu(), indices.cpu()
    batch, length = codes.shape[:2]
    assert values.shape == indices.shape == (batch, k)
    real = _real(mask, batch, length)
    for u in range(batch):
        n_real = int(real[u].sum())
        got = indices[u][indices[u] >= 0]
        assert len(got) == min(k, n_real) and len(set(got.tolist())) == len(got)
        assert real[u][got].all(), "a padded position was returned"
        assert (indices[u][len(got) :] == -1).all() and torch.isneginf(values[u][len(got) :]).all()
        ref = reference_adc_scores(codes[u].cpu(), tables[u].cpu())
        # equal up to ties: the returned scores are the positions' scores, and the best values match
        torch.testing.assert_close(values[u][: len(got)], ref[got], rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(values[u][: len(got)], ref_values[u][: len(got)], rtol=1e-5, atol=1e-5)
        assert torch.equal(ref_indices[u] >= 0, indices[u] >= 0)


def test_matches_pq_tables_and_int32_codes() -> None:
    """Codes from a trained quantizer (uint8, or int32 as codes_to_tensor gives for uint16) and its tables."""
    pq = trained_pq(4, 16, 4, 16)
    rng = np.random.default_rng(3)
    codes = pq.encode(rng.standard_normal((2 * 50, 4, 16))).reshape(2, 50, 4, 4)
    tables = batched_tables(pq, rng.standard_normal((2, 4, 16)), np.full(4, 0.25)).to(DEVICE)
    mask = torch.from_numpy(np.arange(50)[None, :] < np.array([[50], [9]])).to(DEVICE)
    for c in (codes_to_tensor(codes, DEVICE), codes_to_tensor(codes.astype(np.int32), DEVICE)):
        values, indices = triton_pq.triton_adc_topk(c, tables, 12, mask)
        ref_values, ref_indices = batched_adc_topk(c.cpu(), tables.cpu(), 12, mask.cpu())
        torch.testing.assert_close(values.cpu(), ref_values, rtol=1e-5, atol=1e-5)
        assert torch.equal(indices.cpu() >= 0, ref_indices >= 0)


def test_bad_input_is_rejected() -> None:
    codes = torch.zeros((2, 5, 3, 4), dtype=torch.uint8, device=DEVICE)
    tables = torch.zeros((2, 3, 4, 16), device=DEVICE)
    with pytest.raises(ValueError, match="do not match"):
        triton_pq.triton_adc_scores(codes, tables[:1])
    with pytest.raises(ValueError, match="integer tensor"):
        triton_pq.triton_adc_scores(codes.float(), tables)
    with pytest.raises(ValueError, match="float32"):
        triton_pq.triton_adc_scores(codes, tables.double())
    with pytest.raises(ValueError, match="mask shape"):
        triton_pq.triton_adc_scores(codes, tables, torch.ones((2, 4), dtype=torch.bool, device=DEVICE))
    with pytest.raises(ValueError, match=r"codes must lie in \[0, 16\)"):
        triton_pq.triton_adc_scores(codes + 16, tables)
    with pytest.raises(ValueError, match="power of two"):
        triton_pq.triton_adc_scores(codes, tables, block_l=48)
    with pytest.raises(ValueError, match="k must be positive"):
        triton_pq.triton_adc_topk(codes, tables, 0)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA is not available")
def test_compiled_kernel_on_cuda_matches_cpu_reference() -> None:
    rng = np.random.default_rng(0)
    batch, length, n_channels, n_sub, n_centroids = 16, 5000, 4, 16, 16
    shape = (batch, length, n_channels, n_sub)
    codes = torch.from_numpy(rng.integers(0, n_centroids, shape).astype(np.uint8))
    tables = torch.from_numpy(rng.standard_normal((batch, n_channels, n_sub, n_centroids)).astype(np.float32))
    mask = torch.from_numpy(np.arange(length)[None, :] < rng.integers(0, length + 1, batch)[:, None])
    values, indices = triton_pq.triton_adc_topk(codes.cuda(), tables.cuda(), 200, mask.cuda())
    ref_values, ref_indices = batched_adc_topk(codes, tables, 200, mask)
    torch.testing.assert_close(values.cpu(), ref_values, rtol=1e-4, atol=1e-4)
    assert torch.equal(indices.cpu() >= 0, ref_indices >= 0)
    assert (indices.cpu() < mask.sum(1, keepdim=True)).all()
