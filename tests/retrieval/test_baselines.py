from __future__ import annotations

import numpy as np
import pytest
import torch

from seminar.retrieval.baselines import CascadeHNSW, CascadeLSH, RQVAEConfig, RQVAERetriever, exact_topk
from seminar.retrieval.common import recall_at_k

M, D, L, K = 2, 16, 400, 10
GAMMAS = np.array([0.4, 0.6], dtype=np.float32)


def _easy_case(seed: int) -> tuple[np.ndarray, np.ndarray, list[np.ndarray]]:
    """A sequence with K planted behaviours close to the target: any sensible method finds them."""
    rng = np.random.default_rng(seed)
    seq = rng.standard_normal((L, M, D)).astype(np.float32)
    target = rng.standard_normal((M, D)).astype(np.float32)
    planted = rng.choice(L, K, replace=False)
    seq[planted] = target[None] + 0.3 * rng.standard_normal((K, M, D)).astype(np.float32)
    tables = [rng.standard_normal((3000, D)).astype(np.float32) for _ in range(M)]
    return seq, target, tables


def _check(indices: np.ndarray, seq: np.ndarray, target: np.ndarray) -> float:
    assert indices.dtype.kind == "i"
    assert len(indices) == K and len(set(indices.tolist())) == K
    assert ((indices >= 0) & (indices < L)).all()
    return recall_at_k(indices, exact_topk(seq, target, GAMMAS, K), K)


@pytest.mark.parametrize(
    "retriever", [CascadeHNSW(m=8, ef_construction=32, ef_search=32), CascadeLSH(n_bits=64)]
)
def test_cascades_valid_and_better_than_random(retriever) -> None:
    seq, target, _ = _easy_case(0)
    build_s = retriever.build(seq)
    assert build_s >= 0
    assert retriever.bytes_per_behaviour > 0
    assert _check(retriever.search(target, GAMMAS, K), seq, target) > 0.5  # random would be K/L = 0.025


def test_cascade_search_before_build() -> None:
    with pytest.raises(RuntimeError, match="build"):
        CascadeLSH().search(np.zeros((M, D)), GAMMAS, K)


def test_lsh_rejects_odd_bits() -> None:
    with pytest.raises(ValueError, match="multiple of 8"):
        CascadeLSH(n_bits=12)


@pytest.fixture
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def test_rqvae_trains_and_retrieves(one_thread) -> None:
    seq, target, tables = _easy_case(1)
    model = RQVAERetriever(
        RQVAEConfig(latent_dim=16, hidden_dim=64, n_quantizers=5, codebook_size=32, steps=100, batch_size=128)
    )
    losses = model.fit(tables)
    assert len(losses) == M and all(np.isfinite(losses))
    assert max(losses) < 0.8  # unit-variance data: the autoencoder must explain part of it
    codes = model.encode(seq[:5])
    assert codes.shape == (5, M, 5) and codes.max() < 32
    model.build(seq)
    assert model.bytes_per_behaviour == M * 4  # 5 quantizers × 5 bits = 25 bits -> 4 bytes per channel
    assert _check(model.search(target, GAMMAS, K), seq, target) > 0.2


def test_exact_topk_sorted() -> None:
    seq, target, _ = _easy_case(2)
    idx = exact_topk(seq, target, GAMMAS, K)
    merged = (seq * GAMMAS[None, :, None]).sum(1) @ (target * GAMMAS[:, None]).sum(0)
    assert np.all(np.diff(merged[idx]) <= 0)
    assert set(idx.tolist()) == set(np.argsort(-merged)[:K].tolist())


def test_recall_counts_ties_up_to_float_rounding_only() -> None:
    scores = np.array([5.0, 3.0, 2.0, 2.0, np.nextafter(np.float32(2.0), np.float32(0.0)), 1.0], np.float32)
    truth = np.array([0, 1, 2])
    assert recall_at_k(np.array([0, 1, 3]), truth, 3, scores) == 1.0  # an exact tie
    assert recall_at_k(np.array([0, 1, 4]), truth, 3, scores) == 1.0  # one ulp below: rounding
    assert recall_at_k(np.array([0, 1, 5]), truth, 3, scores) == 2 / 3  # a real miss
    assert recall_at_k(np.array([0, 1, 4]), truth, 3) == 2 / 3  # without scores: ids only
    assert recall_at_k(np.array([0, -1, 1]), truth, 3, scores) == 2 / 3  # padding never counts
