"""ADCEngine: every shortlist backend (numpy reference, faiss, torch) against the plain reference.

On a coarse grid (codebooks and queries multiples of 1/4) every table entry and every sum is exact
in float32, so all backends must agree exactly and shortlists may differ only among exact ties.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from seminar.retrieval.kernels import SHORTLIST_BACKENDS, ADCEngine, reference_adc_scores
from seminar.retrieval.pq import MultiModalPQ, PQConfig

DEVICES = ["cpu", "cuda"] if torch.cuda.is_available() else ["cpu"]


def random_pq(rng: np.random.Generator, m: int, n_sub: int, dsub: int, k: int, grid: bool) -> MultiModalPQ:
    shape = (m, n_sub, k, dsub)
    books = rng.integers(-4, 5, shape) / 4 if grid else rng.standard_normal(shape)
    return MultiModalPQ(PQConfig(m, n_sub * dsub, n_sub, k), books.astype(np.float32))


def assert_same_shortlist(
    positions: np.ndarray, values: np.ndarray, reference: np.ndarray, r: int, tol: float
) -> None:
    """The r best of one target's reference scores, up to ties at the r-th place (within ``tol``)."""
    r = min(r, reference.shape[0])
    assert positions.shape == values.shape == (r,)
    assert len(set(positions.tolist())) == r and ((positions >= 0) & (positions < reference.shape[0])).all()
    np.testing.assert_allclose(values, reference[positions], rtol=0, atol=tol)
    kth = np.sort(reference)[::-1][r - 1]
    assert (reference[positions] >= kth - tol).all()
    assert set(np.flatnonzero(reference > kth + tol).tolist()) <= set(positions.tolist())


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    m=st.integers(1, 4),
    n_sub=st.integers(1, 4),
    dsub=st.integers(1, 4),
    k=st.sampled_from([2, 5, 16, 200, 256]),
    length=st.integers(1, 300),
    targets=st.integers(1, 6),
    r=st.integers(1, 320),
    weighted=st.booleans(),
    grid=st.booleans(),
    seed=st.integers(0, 2**31 - 1),
)
def test_every_backend_equals_the_reference(
    m: int,
    n_sub: int,
    dsub: int,
    k: int,
    length: int,
    targets: int,
    r: int,
    weighted: bool,
    grid: bool,
    seed: int,
) -> None:
    rng = np.random.default_rng(seed)
    pq = random_pq(rng, m, n_sub, dsub, k, grid)
    d = n_sub * dsub
    codes = rng.integers(0, k, (length, m * n_sub)).astype(np.uint8)
    if grid:  # few distinct codes, so that exact ties are common
        codes = codes % min(k, 3)
    q = rng.integers(-4, 5, (targets, d)) / 4 if grid else rng.standard_normal((targets, d))
    q = q.astype(np.float32)
    gammas = (np.array([1, 1, 2, 4][:m]) / sum([1, 1, 2, 4][:m])) if weighted else None
    engine = ADCEngine(pq)
    x = engine.queries(q, gammas)
    scores = engine.scores(x, codes)
    assert scores.shape == (targets, length) and scores.dtype == np.float32

    # the reference equals the per-(channel, sub-vector) loops and the decoded inner product
    g = np.ones(m, np.float32) if gammas is None else gammas.astype(np.float32)
    decoded = pq.decode(codes.reshape(length, m, n_sub))  # L M d
    by_decoding = np.einsum("lmd,m,cd->cl", decoded, g, q)
    tables = engine.tables(x)
    split = torch.from_numpy(codes.reshape(length, m, n_sub))
    loops = torch.stack([reference_adc_scores(split, torch.from_numpy(t)) for t in tables]).numpy()
    scale = 1.0 + float(np.abs(by_decoding).max())
    tol = 0.0 if grid else 1e-5 * scale * m * n_sub
    np.testing.assert_allclose(scores, loops, rtol=0, atol=tol)
    np.testing.assert_allclose(scores, by_decoding, rtol=0, atol=1e-5 * scale * m * d)

    positions = rng.integers(0, length, (targets, 7))
    np.testing.assert_allclose(
        engine.scores_at(x, codes, positions), np.take_along_axis(scores, positions, axis=1), rtol=0, atol=tol
    )

    runs = [(backend, "cpu") for backend in SHORTLIST_BACKENDS] + [("torch", dev) for dev in DEVICES[1:]]
    for backend, device in runs:
        found, values = ADCEngine(pq, device).shortlist(x, codes, r, backend, threads=1)
        assert found.shape == values.shape == (targets, min(r, length)), backend
        for c in range(targets):
            assert_same_shortlist(found[c], values[c], scores[c], r, tol)


def test_weighted_tables_are_the_quantizers_adc_tables() -> None:
    rng = np.random.default_rng(0)
    pq = random_pq(rng, 3, 4, 2, 16, grid=False)
    engine = ADCEngine(pq)
    targets = rng.standard_normal((5, 3, 8)).astype(np.float32)
    g = np.array([0.2, 0.3, 0.5], np.float32)
    tables = engine.tables(engine.queries(np.einsum("m,cmd->cd", g, targets), g))
    for t, target in zip(tables, targets, strict=True):
        np.testing.assert_allclose(t, pq.adc_tables(target, g), rtol=1e-5, atol=1e-5)


def test_uint16_codes_score_but_faiss_refuses_them() -> None:
    rng = np.random.default_rng(1)
    pq = random_pq(rng, 2, 2, 2, 300, grid=False)
    codes = rng.integers(0, 300, (50, 4)).astype(np.uint16)
    engine = ADCEngine(pq)
    x = engine.queries(rng.standard_normal((2, 4)).astype(np.float32))
    scores = engine.scores(x, codes)
    found, values = engine.shortlist(x, codes, 5, "torch")
    for c in range(2):
        assert_same_shortlist(found[c], values[c], scores[c], 5, 1e-4)
    with pytest.raises(ValueError, match="uint8 codes"):
        engine.shortlist(x, codes, 5, "faiss")
    with pytest.raises(ValueError, match="unknown backend"):
        engine.shortlist(x, codes, 5, "hnsw")


def test_empty_sequence_gives_empty_shortlists() -> None:
    rng = np.random.default_rng(2)
    engine = ADCEngine(random_pq(rng, 2, 2, 2, 16, grid=False))
    x = engine.queries(np.ones((3, 4), np.float32))
    for backend in SHORTLIST_BACKENDS:
        found, values = engine.shortlist(x, np.zeros((0, 4), np.uint8), 5, backend)
        assert found.shape == values.shape == (3, 0)
