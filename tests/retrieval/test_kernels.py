from __future__ import annotations

import faiss
import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from seminar.retrieval.common import exact_scores, topk_indices
from seminar.retrieval.kernels import (
    PQSearcher,
    batched_adc_topk,
    batched_tables,
    gather_adc_scores,
    masked_topk,
    pack_codes,
    reference_adc_scores,
    reference_decoded_scores,
)

from .conftest import trained_pq

SETTINGS = settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
# (3, 9, 3, 16): an odd number of 4-bit sub-quantizers, which the FastScan indexes pad
SHAPES = [(3, 16, 4, 16), (2, 8, 2, 256), (4, 8, 4, 16), (2, 8, 4, 32), (3, 9, 3, 16)]


def _inputs(seed: int, shape: tuple[int, int, int, int], length: int):
    pq = trained_pq(*shape)
    m, d, n_sub, c = shape
    rng = np.random.default_rng(seed)
    codes = rng.integers(0, c, (length, m, n_sub)).astype(pq.config.code_dtype)
    target = (rng.standard_normal((m, d)) * rng.uniform(0.1, 3)).astype(np.float32)
    gammas = rng.dirichlet(np.ones(m)).astype(np.float32)
    gammas /= gammas.sum()
    return pq, codes, target, gammas


def _assert_same_topk(scores: np.ndarray, indices: np.ndarray, reference: np.ndarray, k: int) -> None:
    """Same top-k up to ties: the returned scores are the reference scores and the k best values match."""
    k = min(k, reference.shape[0])
    assert len(set(indices.tolist())) == len(indices) == k
    np.testing.assert_allclose(scores, reference[indices], rtol=1e-4, atol=1e-3)
    np.testing.assert_allclose(np.sort(scores)[::-1], np.sort(reference)[::-1][:k], rtol=1e-4, atol=1e-3)


@SETTINGS
@given(seed=st.integers(0, 2**31), shape=st.sampled_from(SHAPES), length=st.integers(1, 300))
def test_adc_equals_decoded_inner_product(seed: int, shape, length: int) -> None:
    pq, codes, target, g = _inputs(seed, shape, length)
    tables = torch.from_numpy(pq.adc_tables(target, g))
    adc = reference_adc_scores(torch.from_numpy(codes.astype(np.int64)), tables)
    decoded = reference_decoded_scores(
        torch.from_numpy(pq.decode(codes)), torch.from_numpy(target), torch.from_numpy(g)
    )
    np.testing.assert_allclose(adc.numpy(), decoded.numpy(), rtol=1e-4, atol=1e-3)
    np.testing.assert_allclose(gather_adc_scores(codes, tables.numpy()), adc.numpy(), rtol=1e-4, atol=1e-3)


@SETTINGS
@given(
    seed=st.integers(0, 2**31),
    shape=st.sampled_from(SHAPES),
    length=st.integers(1, 400),
    k=st.integers(1, 50),
    backend=st.sampled_from(["faiss", "numpy", "fastscan"]),
    mode=st.sampled_from(["adc", "sdc"]),
)
def test_fast_paths_equal_reference(seed: int, shape, length: int, k: int, backend: str, mode: str) -> None:
    pq, codes, target, g = _inputs(seed, shape, length)
    if backend == "fastscan" and pq.config.nbits != 4:
        backend = "faiss"
    target_codes = pq.encode(target[None])[0]
    tables = pq.adc_tables(target, g) if mode == "adc" else pq.sdc_tables(target_codes, g)
    ref = reference_adc_scores(torch.from_numpy(codes.astype(np.int64)), torch.from_numpy(tables)).numpy()
    searcher = PQSearcher(pq, codes, backend=backend, fastscan_oversample=4.0)
    res = searcher.search(target, g, k, mode=mode)
    if backend != "fastscan" or k * searcher.fastscan_oversample >= length:
        # with a shortlist covering everything the FastScan path rescans all codes with float tables
        _assert_same_topk(res.scores, res.indices, ref, k)
    else:
        # FastScan ranks with 8-bit look-up tables; returned scores are the float ADC scores and
        # the k-th best found is within the LUT quantization error of the true k-th best.
        np.testing.assert_allclose(res.scores, ref[res.indices], rtol=1e-4, atol=1e-3)
        kk = min(k, length)
        assert len(set(res.indices.tolist())) == kk
        spread = float(np.abs(tables).max()) * tables.shape[0] * tables.shape[1]
        assert res.scores[-1] >= np.sort(ref)[::-1][kk - 1] - 0.05 * spread


@SETTINGS
@given(
    seed=st.integers(0, 2**31),
    shape=st.sampled_from([SHAPES[0], SHAPES[1], SHAPES[4]]),
    length=st.integers(1, 200),
    k=st.integers(1, 40),
    mode=st.sampled_from(["adc", "sdc"]),
)
def test_rerank_with_full_shortlist_is_exact(seed: int, shape, length: int, k: int, mode: str) -> None:
    pq, _, target, g = _inputs(seed, shape, length)
    rng = np.random.default_rng(seed + 1)
    seq = rng.standard_normal((length, shape[0], shape[1])).astype(np.float32)
    searcher = PQSearcher(pq, pq.encode(seq), vectors=seq)
    res = searcher.search(target, g, k, mode=mode, rerank=length)
    exact = exact_scores(seq, target, g)
    truth = topk_indices(exact, k)
    _assert_same_topk(res.scores, res.indices, exact, k)
    assert len(set(res.indices.tolist()) & set(truth.tolist())) >= len(truth) - 1  # only exact ties may swap


@SETTINGS
@given(
    seed=st.integers(0, 2**31),
    shape=st.sampled_from(SHAPES),
    length=st.integers(1, 300),
    k=st.integers(1, 50),
    backend=st.sampled_from(["faiss", "numpy", "fastscan"]),
    mode=st.sampled_from(["adc", "sdc"]),
    oversample=st.sampled_from([1.0, 2.0, 4.0]),
)
def test_prepared_query_path_equals_search(
    seed: int, shape, length: int, k: int, backend: str, mode: str, oversample: float
) -> None:
    pq, codes, target, g = _inputs(seed, shape, length)
    if backend == "fastscan" and pq.config.nbits != 4:
        backend = "faiss"
    searcher = PQSearcher(pq, codes, backend=backend, fastscan_oversample=oversample)
    query = searcher.prepare_query(target, g, mode)
    assert query.shape == (1, searcher.query_dim) and query.dtype == np.float32
    res, again = searcher.search(target, g, k, mode=mode), searcher.search_prepared(query[0], k)
    np.testing.assert_array_equal(res.indices, again.indices)
    np.testing.assert_array_equal(res.scores, again.scores)
    # the prepared query holds the ADC (or SDC) tables: its slices against the stacked codebooks
    cfg = pq.config
    n_codes = cfg.n_channels * cfg.n_sub
    x = query[0, : n_codes * cfg.dsub].reshape(n_codes, cfg.dsub)
    books = pq.codebooks.reshape(n_codes, cfg.n_centroids, cfg.dsub)
    tables = pq.adc_tables(target, g) if mode == "adc" else pq.sdc_tables(pq.encode(target[None])[0], g)
    np.testing.assert_allclose(
        np.einsum("scd,sd->sc", books, x).reshape(tables.shape), tables, rtol=1e-5, atol=1e-5
    )
    assert not query[0, n_codes * cfg.dsub :].any()  # padding of an odd FastScan index stays zero


def test_prepared_query_is_validated() -> None:
    pq, codes, target, g = _inputs(0, SHAPES[0], 30)
    searcher = PQSearcher(pq, codes)
    query = searcher.prepare_query(target, g)
    with pytest.raises(ValueError, match="prepared query of shape"):
        searcher.search_prepared(query[:, :-1], 3)
    bad = query.copy()
    bad[0, 5] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        searcher.search_prepared(bad, 3)
    with pytest.raises(ValueError, match="k must be positive"):
        searcher.search_prepared(query, 0)
    with pytest.raises(ValueError, match="mode must be"):
        searcher.prepare_query(target, g, mode="pq")
    with pytest.raises(ValueError, match="sum to 1"):
        searcher.search(target, g * 2, 3)
    with pytest.raises(ValueError, match=r"target of shape"):
        searcher.search(target[:2], g, 3)
    nan_target = target.copy()
    nan_target[1, 1] = np.inf
    with pytest.raises(ValueError, match="NaN or infinite"):
        searcher.search(nan_target, g, 3)
    with pytest.raises(ValueError, match="non-negative"):
        searcher.search(target, np.array([1.5, -0.5, 0.0]), 3)


@pytest.mark.parametrize("mode", ["adc", "sdc"])
@pytest.mark.parametrize("bad_value", [np.nan, np.inf, -np.inf])
def test_bad_target_rejected_even_in_a_zero_weight_channel(mode: str, bad_value: float) -> None:
    pq, codes, target, _ = _inputs(1, SHAPES[0], 30)
    searcher = PQSearcher(pq, codes)
    g = np.array([0.0, 0.4, 0.6], dtype=np.float32)
    searcher.search(target, g, 3, mode=mode)  # fine, and caches γγᵀ for these weights
    bad = target.copy()
    bad[0, 2] = bad_value  # channel 0 has weight 0: 0·inf and 0·NaN are NaN, so the query shows it
    with pytest.raises(ValueError, match="NaN or infinite"):
        searcher.search(bad, g, 3, mode=mode)


def test_cached_channel_weights_follow_in_place_changes() -> None:
    """γγᵀ is cached per γ; changing γ in place (or its dtype) must not reuse the old weights."""
    pq, codes, target, _ = _inputs(2, SHAPES[0], 60)
    searcher = PQSearcher(pq, codes, backend="numpy")
    g = np.array([0.2, 0.3, 0.5], dtype=np.float32)
    first = searcher.prepare_query(target, g).copy()
    g[:] = [0.5, 0.3, 0.2]
    second = searcher.prepare_query(target, g)
    fresh = PQSearcher(pq, codes, backend="numpy").prepare_query(target, g.copy())
    np.testing.assert_array_equal(second, fresh)
    assert not np.allclose(first, second)
    g[:] = [0.7, 0.7, -0.4]
    with pytest.raises(ValueError, match="non-negative"):
        searcher.prepare_query(target, g)
    as_list = searcher.prepare_query(target, [0.5, 0.3, 0.2])
    np.testing.assert_allclose(as_list, fresh, rtol=1e-6)


def test_rerank_recall_is_one() -> None:
    pq = trained_pq()
    rng = np.random.default_rng(11)
    seq = rng.standard_normal((500, 3, 16)).astype(np.float32)
    target = rng.standard_normal((3, 16)).astype(np.float32)
    g = np.array([0.2, 0.3, 0.5], dtype=np.float32)
    res = PQSearcher(pq, pq.encode(seq), vectors=seq).search(target, g, 20, rerank=500)
    assert set(res.indices.tolist()) == set(topk_indices(exact_scores(seq, target, g), 20).tolist())


def test_rerank_needs_vectors() -> None:
    pq, codes, target, g = _inputs(0, SHAPES[0], 20)
    with pytest.raises(ValueError, match="needs the sequence's float vectors"):
        PQSearcher(pq, codes).search(target, g, 3, rerank=10)


@pytest.mark.parametrize("nbits", [4, 8, 9, 12])
@pytest.mark.parametrize("n_sub", [5, 6])
def test_pack_codes_matches_faiss_layout(nbits: int, n_sub: int) -> None:
    rng = np.random.default_rng(nbits)
    dsub = 2
    pq = faiss.ProductQuantizer(n_sub * dsub, n_sub, nbits)
    cent = rng.standard_normal((n_sub, 1 << nbits, dsub)).astype(np.float32)
    faiss.copy_array_to_vector(cent.ravel(), pq.centroids)
    x = rng.standard_normal((50, n_sub * dsub)).astype(np.float32)
    ints = np.stack(
        [
            np.argmin(((x[:, None, b * dsub : (b + 1) * dsub] - cent[b][None]) ** 2).sum(-1), 1)
            for b in range(n_sub)
        ],
        1,
    )
    np.testing.assert_array_equal(pack_codes(ints, nbits), pq.compute_codes(x))


@SETTINGS
@given(
    seed=st.integers(0, 2**31),
    shape=st.sampled_from(SHAPES),
    batch=st.integers(1, 5),
    length=st.integers(1, 120),
    k=st.integers(1, 60),
)
def test_batched_with_padding_equals_per_user_reference(
    seed: int, shape, batch: int, length: int, k: int
) -> None:
    pq = trained_pq(*shape)
    m, d, n_sub, c = shape
    rng = np.random.default_rng(seed)
    codes = rng.integers(0, c, (batch, length, m, n_sub)).astype(pq.config.code_dtype)
    lengths = rng.integers(0, length + 1, batch)
    mask = np.arange(length)[None, :] < lengths[:, None]
    targets = rng.standard_normal((batch, m, d)).astype(np.float32)
    g = rng.dirichlet(np.ones(m)).astype(np.float32)
    g /= g.sum()
    tables = batched_tables(pq, targets, g)
    scores, idx = batched_adc_topk(
        torch.from_numpy(codes.astype(np.int64)), tables, k, torch.from_numpy(mask)
    )
    assert scores.shape == idx.shape == (batch, k)
    for u in range(batch):
        n = int(lengths[u])
        got = idx[u].numpy()
        real = got[got >= 0]
        assert len(real) == min(k, n)
        assert (real < n).all(), "a padded position was returned"
        assert (got[len(real) :] == -1).all() and torch.isinf(scores[u, len(real) :]).all()
        if n:
            ref = reference_adc_scores(
                torch.from_numpy(codes[u, :n].astype(np.int64)),
                torch.from_numpy(pq.adc_tables(targets[u], g)),
            ).numpy()
            _assert_same_topk(scores[u, : len(real)].numpy(), real, ref, k)


def test_masked_topk_never_returns_padding_even_with_huge_padded_scores() -> None:
    scores = torch.tensor([[1.0, 1e30, 2.0, 1e30], [5.0, 4.0, 3.0, 2.0]])
    mask = torch.tensor([[True, False, True, False], [True, True, True, True]])
    vals, idx = masked_topk(scores, 3, mask)
    assert idx.tolist() == [[2, 0, -1], [0, 1, 2]]
    assert vals[0, 2] == float("-inf")
    with pytest.raises(ValueError, match="k must be positive"):
        masked_topk(scores, 0, mask)


def test_search_k_larger_than_length() -> None:
    pq, codes, target, g = _inputs(3, SHAPES[0], 5)
    for backend in ("faiss", "fastscan", "numpy"):
        res = PQSearcher(pq, codes, backend=backend).search(target, g, 50)
        assert sorted(res.indices.tolist()) == [0, 1, 2, 3, 4]


def test_uint16_codes_fast_path() -> None:
    pq = trained_pq(2, 8, 2, 512)
    pq_codes = np.random.default_rng(0).integers(0, 512, (300, 2, 2)).astype(np.uint16)
    target = np.random.default_rng(1).standard_normal((2, 8)).astype(np.float32)
    g = np.array([0.5, 0.5], dtype=np.float32)
    res = PQSearcher(pq, pq_codes).search(target, g, 10)
    ref = gather_adc_scores(pq_codes, pq.adc_tables(target, g))
    _assert_same_topk(res.scores, res.indices, ref, 10)
