"""Small trained quantizers shared by the retrieval tests (trained once: k-means is the slow part)."""

from __future__ import annotations

import functools

import numpy as np

from seminar.retrieval.pq import MultiModalPQ, PQConfig


def gaussian_tables(n_channels: int, dim: int, n: int, seed: int, mu: float = 0.5) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [(rng.standard_normal((n, dim)) + mu * (m + 1)).astype(np.float32) for m in range(n_channels)]


@functools.cache
def trained_pq(
    n_channels: int = 3, dim: int = 16, n_sub: int = 4, n_centroids: int = 16, seed: int = 0
) -> MultiModalPQ:
    tables = gaussian_tables(n_channels, dim, max(2000, 20 * n_centroids), seed)
    config = PQConfig(n_channels, dim, n_sub, n_centroids, n_iter=10, seed=seed)
    return MultiModalPQ.train(tables, config)
