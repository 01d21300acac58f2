"""Baselines for multi-modal top-K retrieval: exact, cascading HNSW, cascading LSH, RQ-VAE.

Every retriever follows the same two steps: ``build(vectors)`` once per user (timed separately,
because HNSW and LSH pay it per sequence) and ``search(target, gammas, k)`` per target.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import dataclass

import faiss
import numpy as np
import torch
from torch import nn
from vector_quantize_pytorch import ResidualVQ

from seminar.retrieval.common import (
    ArrayLike,
    as_gammas,
    as_sequence,
    as_target,
    exact_scores,
    merge,
    to_numpy,
    topk_indices,
)

__all__ = [
    "CascadeHNSW",
    "CascadeLSH",
    "ExactRetriever",
    "RQVAEConfig",
    "RQVAERetriever",
    "exact_scores",
    "exact_topk",
]


def exact_topk(
    vectors: ArrayLike, target: ArrayLike, gammas: ArrayLike | Sequence[float], k: int
) -> np.ndarray:
    """Ground truth: indices of the k best behaviours under the exact float32 merged score."""
    x = as_sequence(vectors, *to_numpy(vectors).shape[1:])
    t = as_target(target, x.shape[1], x.shape[2])
    return topk_indices(exact_scores(x, t, as_gammas(gammas, x.shape[1])), k)


def _rerank(
    vectors: np.ndarray, candidates: np.ndarray, target: np.ndarray, g: np.ndarray, k: int
) -> np.ndarray:
    cand = np.unique(candidates[candidates >= 0])
    scores = merge(vectors[cand], g) @ merge(target, g)
    return cand[topk_indices(scores, k)]


class ExactRetriever:
    """Exact float32 scoring of the whole sequence (the ground truth)."""

    name = "exact"

    def build(self, vectors: ArrayLike) -> float:
        start = time.perf_counter()
        self.vectors = as_sequence(vectors, *to_numpy(vectors).shape[1:])
        return time.perf_counter() - start

    @property
    def bytes_per_behaviour(self) -> int:
        return 4 * self.vectors.shape[1] * self.vectors.shape[2]

    def search(self, target: ArrayLike, gammas: ArrayLike | Sequence[float], k: int) -> np.ndarray:
        return exact_topk(self.vectors, target, gammas, k)


class _Cascade:
    """Shared cascade: M² channel-to-channel searches of top-K' each, union, exact re-rank to top-K."""

    def __init__(self, k_prime: int | None = None) -> None:
        self.k_prime = k_prime
        self.vectors: np.ndarray | None = None

    def _channel_search(self, i_query: np.ndarray, j: int, k: int) -> np.ndarray:
        raise NotImplementedError

    def search(self, target: ArrayLike, gammas: ArrayLike | Sequence[float], k: int) -> np.ndarray:
        if self.vectors is None:
            raise RuntimeError("call build() before search()")
        n_channels, dim = self.vectors.shape[1:]
        t = as_target(target, n_channels, dim)
        g = as_gammas(gammas, n_channels)
        kp = min(self.k_prime or k, self.vectors.shape[0])
        cands = [self._channel_search(t[i], j, kp) for i in range(n_channels) for j in range(n_channels)]
        return _rerank(self.vectors, np.concatenate(cands), t, g, k)


class CascadeHNSW(_Cascade):
    """Cascading cross-modal HNSW (faiss IndexHNSWFlat, inner product), one index per channel per user.

    bytes_per_behaviour counts the float vectors only; the graph adds ~2·m neighbour ids per vector.
    """

    name = "hnsw"

    def __init__(
        self, m: int = 32, ef_construction: int = 64, ef_search: int = 128, k_prime: int | None = None
    ):
        super().__init__(k_prime)
        self.m, self.ef_construction, self.ef_search = m, ef_construction, ef_search
        self.indexes: list[faiss.IndexHNSWFlat] = []

    def build(self, vectors: ArrayLike) -> float:
        x = as_sequence(vectors, *to_numpy(vectors).shape[1:])
        start = time.perf_counter()
        self.indexes = []
        for j in range(x.shape[1]):
            index = faiss.IndexHNSWFlat(x.shape[2], self.m, faiss.METRIC_INNER_PRODUCT)
            index.hnsw.efConstruction = self.ef_construction
            index.add(np.ascontiguousarray(x[:, j]))
            self.indexes.append(index)
        self.vectors = x
        return time.perf_counter() - start

    @property
    def bytes_per_behaviour(self) -> int:
        assert self.vectors is not None
        return self.vectors.shape[1] * (4 * self.vectors.shape[2] + 4 * 2 * self.m)

    def _channel_search(self, query: np.ndarray, j: int, k: int) -> np.ndarray:
        params = faiss.SearchParametersHNSW(efSearch=max(self.ef_search, k))
        _, idx = self.indexes[j].search(query[None].astype(np.float32), k, params=params)
        return idx[0]


class CascadeLSH(_Cascade):
    """Cascading sign-random-projection LSH: packed sign bits, Hamming ranking, then exact re-rank.

    One projection matrix is shared by all channels so a query of channel i can be compared with
    behaviours of channel j. Sign bits estimate angles, not inner products, which is the method's
    known weakness when norms differ across channels.
    """

    name = "lsh"

    def __init__(self, n_bits: int = 256, seed: int = 0, k_prime: int | None = None) -> None:
        super().__init__(k_prime)
        if n_bits % 8:
            raise ValueError(f"n_bits must be a multiple of 8, got {n_bits}")
        self.n_bits, self.seed = n_bits, seed
        self.planes: np.ndarray | None = None

    def _hash(self, x: np.ndarray) -> np.ndarray:
        assert self.planes is not None
        return np.packbits((x @ self.planes.T) > 0, axis=-1)

    def build(self, vectors: ArrayLike) -> float:
        x = as_sequence(vectors, *to_numpy(vectors).shape[1:])
        start = time.perf_counter()
        if self.planes is None or self.planes.shape[1] != x.shape[2]:
            rng = np.random.default_rng(self.seed)
            self.planes = rng.standard_normal((self.n_bits, x.shape[2])).astype(np.float32)
        self.codes = self._hash(x)  # [L, M, n_bits/8]
        self.vectors = x
        return time.perf_counter() - start

    @property
    def bytes_per_behaviour(self) -> int:
        assert self.vectors is not None
        return self.vectors.shape[1] * self.n_bits // 8

    def _channel_search(self, query: np.ndarray, j: int, k: int) -> np.ndarray:
        hamming = np.bitwise_count(self.codes[:, j] ^ self._hash(query)[None]).sum(axis=1, dtype=np.int32)
        return topk_indices(-hamming.astype(np.float32), k)


# ---------------------------------------------------------------------------- RQ-VAE


@dataclass(frozen=True)
class RQVAEConfig:
    """Small MLP autoencoder around a residual VQ; code size = n_quantizers·log2(codebook_size) bits."""

    latent_dim: int = 32
    hidden_dim: int = 128
    n_quantizers: int = 8
    codebook_size: int = 256
    steps: int = 800
    batch_size: int = 256
    lr: float = 2e-3
    commitment_weight: float = 0.25
    seed: int = 0


class _RQVAE(nn.Module):
    def __init__(self, dim: int, cfg: RQVAEConfig, mean: torch.Tensor, std: torch.Tensor) -> None:
        super().__init__()
        self.register_buffer("mean", mean)
        self.register_buffer("std", std)
        self.encoder = nn.Sequential(
            nn.Linear(dim, cfg.hidden_dim), nn.GELU(), nn.Linear(cfg.hidden_dim, cfg.latent_dim)
        )
        self.decoder = nn.Sequential(
            nn.Linear(cfg.latent_dim, cfg.hidden_dim), nn.GELU(), nn.Linear(cfg.hidden_dim, dim)
        )
        self.rvq = ResidualVQ(
            dim=cfg.latent_dim,
            num_quantizers=cfg.n_quantizers,
            codebook_size=cfg.codebook_size,
            kmeans_init=True,
            kmeans_iters=10,
            commitment_weight=cfg.commitment_weight,
            rotation_trick=False,  # ~10x slower on CPU and not needed for a reconstruction baseline
        )

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        z = self.encoder((x - self.mean) / self.std)
        quantized, indices, commit = self.rvq(z[:, None, :])
        recon = self.decoder(quantized[:, 0]) * self.std + self.mean
        return recon, indices[:, 0], commit.sum()

    @torch.no_grad()
    def decode_indices(self, indices: torch.Tensor) -> torch.Tensor:
        quantized = self.rvq.get_output_from_indices(indices[:, None, :])
        return self.decoder(quantized[:, 0]) * self.std + self.mean


class RQVAERetriever:
    """Per-channel RQ-VAE trained on the channel embedding tables; sequences scored with decoded vectors."""

    name = "rqvae"

    def __init__(self, config: RQVAEConfig | None = None) -> None:
        self.config = config or RQVAEConfig()
        self.models: list[_RQVAE] = []
        self.decoded: np.ndarray | None = None

    def fit(self, tables: Sequence[ArrayLike]) -> list[float]:
        """Train one model per channel (reconstruction MSE + commitment); returns final recon MSEs."""
        cfg = self.config
        self.models, losses = [], []
        for m, table in enumerate(tables):
            x = torch.from_numpy(np.ascontiguousarray(to_numpy(table), dtype=np.float32))
            if x.ndim != 2 or not torch.isfinite(x).all():
                raise ValueError(f"embedding table of channel {m} must be a finite [N, d] array")
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(cfg.seed + 101 * m)
                model = _RQVAE(x.shape[1], cfg, x.mean(0), x.std(0).clamp_min(1e-6))
                gen = torch.Generator().manual_seed(cfg.seed + 101 * m)
                opt = torch.optim.Adam(model.parameters(), lr=cfg.lr)
                sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, cfg.steps)
                model.train()
                for _ in range(cfg.steps):
                    batch = x[torch.randint(0, x.shape[0], (cfg.batch_size,), generator=gen)]
                    recon, _, commit = model(batch)
                    loss = nn.functional.mse_loss(recon, batch) + commit
                    opt.zero_grad(set_to_none=True)
                    loss.backward()
                    opt.step()
                    sched.step()
                model.eval()
                with torch.no_grad():
                    sample = x[: min(x.shape[0], 4096)]
                    losses.append(float(nn.functional.mse_loss(model(sample)[0], sample)))
            self.models.append(model)
        return losses

    @torch.no_grad()
    def encode(self, vectors: ArrayLike) -> np.ndarray:
        """Codes [L, M, n_quantizers]."""
        x = as_sequence(vectors, len(self.models), *to_numpy(vectors).shape[2:])
        return np.stack(
            [self.models[m](torch.from_numpy(x[:, m]))[1].numpy() for m in range(x.shape[1])], axis=1
        )

    @torch.no_grad()
    def decode(self, codes: np.ndarray) -> np.ndarray:
        parts = [
            self.models[m].decode_indices(torch.from_numpy(codes[:, m]).long()) for m in range(codes.shape[1])
        ]
        return torch.stack(parts, dim=1).numpy()

    def build(self, vectors: ArrayLike) -> float:
        if not self.models:
            raise RuntimeError("call fit() on the embedding tables before build()")
        start = time.perf_counter()
        self.decoded = self.decode(self.encode(vectors))
        return time.perf_counter() - start

    @property
    def bytes_per_behaviour(self) -> int:
        bits = self.config.n_quantizers * math.ceil(math.log2(self.config.codebook_size))
        return len(self.models) * math.ceil(bits / 8)

    def search(self, target: ArrayLike, gammas: ArrayLike | Sequence[float], k: int) -> np.ndarray:
        if self.decoded is None:
            raise RuntimeError("call build() before search()")
        n_channels, dim = self.decoded.shape[1:]
        t = as_target(target, n_channels, dim)
        return topk_indices(exact_scores(self.decoded, t, as_gammas(gammas, n_channels)), k)
