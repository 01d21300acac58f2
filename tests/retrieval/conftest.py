"""Small trained quantizers shared by the retrieval tests (trained once: k-means is the slow part).

Also selects Triton's interpreter on machines without CUDA, before any test imports a Triton kernel.
"""

from __future__ import annotations

import functools
import os

import numpy as np
import torch

from seminar.retrieval.pq import MultiModalPQ, PQConfig

if not torch.cuda.is_available():
    # Without a GPU the Triton kernels are checked on CPU tensors by Triton's interpreter, which
    # @triton.jit selects from this variable when seminar.retrieval.triton_pq is imported.
    os.environ.setdefault("TRITON_INTERPRET", "1")


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
