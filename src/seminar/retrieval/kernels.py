"""Scoring and top-K over PQ codes: a plain reference, a fast CPU path (faiss), a batched torch path.

The fast CPU path rests on one identity: multi-modal ADC is inner-product PQ over the concatenation
of the channels. With M·n_sub sub-quantizers whose codebooks are the per-channel codebooks stacked,
and the query concat_j γ_j·q (q = Σ_i γ_i x_t(i)), faiss computes exactly Σ_j Σ_b T_j[b, code], so its
SIMD scanners (IndexPQ, and IndexPQFastScan for 4-bit codes) do the work. SDC is the same search with
the decoded target in place of the exact one.

Padding convention (batched path): positions where ``mask`` is False are never returned. When k is
larger than the number of real positions, the tail of the result holds index -1 and score -inf, so
results always have shape [B, k].
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import faiss
import numpy as np
import torch

from seminar.retrieval.common import (
    ArrayLike,
    as_gammas,
    as_sequence,
    as_target,
    merge,
    to_numpy,
    topk_indices,
)
from seminar.retrieval.pq import MultiModalPQ

# ---------------------------------------------------------------------------- reference (torch, simple)


def reference_adc_scores(codes: torch.Tensor, tables: torch.Tensor) -> torch.Tensor:
    """Σ_j Σ_b tables[j, b, codes[l, j, b]] with one loop per (channel, sub-vector); codes [L, M, n_sub]."""
    n_channels, n_sub, _ = tables.shape
    scores = torch.zeros(codes.shape[0], dtype=tables.dtype, device=tables.device)
    for j in range(n_channels):
        for b in range(n_sub):
            scores = scores + tables[j, b, codes[:, j, b].long()]
    return scores


def reference_sdc_scores(
    pair_table: torch.Tensor, codes: torch.Tensor, target_codes: torch.Tensor, gammas: torch.Tensor
) -> torch.Tensor:
    """The paper's formula: Σ_i Σ_j γ_i γ_j Σ_b dist(c_b(i)_t, c_b(j)_l), dist from the centroid table."""
    n_channels, _, n_sub = pair_table.shape[:3]
    scores = torch.zeros(codes.shape[0], dtype=pair_table.dtype, device=pair_table.device)
    for i in range(n_channels):
        for j in range(n_channels):
            for b in range(n_sub):
                dist = pair_table[i, j, b, int(target_codes[i, b]), codes[:, j, b].long()]
                scores = scores + gammas[i] * gammas[j] * dist
    return scores


def reference_decoded_scores(
    decoded: torch.Tensor, target: torch.Tensor, gammas: torch.Tensor
) -> torch.Tensor:
    """Exact merged inner product of a (decoded) sequence [L, M, d] with a target [M, d]."""
    behaviours = (decoded * gammas[None, :, None]).sum(dim=1)
    query = (target * gammas[:, None]).sum(dim=0)
    return behaviours @ query


# ---------------------------------------------------------------------------- vectorised numpy


def flat_code_index(codes: np.ndarray, n_centroids: int) -> np.ndarray:
    """Codes [..., M, n_sub] -> indices into the flattened [M·n_sub·C] table, shape [..., M·n_sub]."""
    flat = codes.reshape(*codes.shape[:-2], -1).astype(np.int64)
    return flat + np.arange(flat.shape[-1], dtype=np.int64) * n_centroids


def gather_adc_scores(codes: np.ndarray, tables: np.ndarray) -> np.ndarray:
    """Vectorised table look-up: scores [...] of codes [..., M, n_sub] against tables [M, n_sub, C]."""
    idx = flat_code_index(codes, tables.shape[-1])
    return tables.reshape(-1)[idx].sum(axis=-1, dtype=np.float32)


def pack_codes(flat_codes: np.ndarray, nbits: int) -> np.ndarray:
    """Pack codes [L, S] into faiss's bit layout (little-endian bit stream), uint8 [L, ceil(S·nbits/8)]."""
    flat = np.asarray(flat_codes, dtype=np.int64)
    bits = ((flat[..., None] >> np.arange(nbits)) & 1).astype(np.uint8)
    return np.packbits(bits.reshape(flat.shape[0], -1), axis=1, bitorder="little")


# ---------------------------------------------------------------------------- top-K helpers


def masked_topk(
    scores: torch.Tensor, k: int, mask: torch.Tensor | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Row-wise top-k of scores [B, L] that never returns a padded position (see module docstring)."""
    if k <= 0:
        raise ValueError(f"k must be positive, got {k}")
    batch, length = scores.shape
    if mask is not None:
        if mask.shape != scores.shape:
            raise ValueError(f"mask shape {tuple(mask.shape)} != scores shape {tuple(scores.shape)}")
        mask = mask.to(device=scores.device, dtype=torch.bool)
        scores = scores.masked_fill(~mask, float("-inf"))
    kk = min(k, length)
    if kk > 0:
        values, indices = torch.topk(scores, kk, dim=1)
        valid = mask.gather(1, indices) if mask is not None else torch.ones_like(indices, dtype=torch.bool)
        indices = indices.masked_fill(~valid, -1)
        values = values.masked_fill(~valid, float("-inf"))
    else:
        values = scores.new_empty((batch, 0))
        indices = torch.empty((batch, 0), dtype=torch.long, device=scores.device)
    if kk < k:
        values = torch.cat([values, values.new_full((batch, k - kk), float("-inf"))], dim=1)
        indices = torch.cat([indices, indices.new_full((batch, k - kk), -1)], dim=1)
    return values, indices


# ---------------------------------------------------------------------------- batched torch (GPU or CPU)


def batched_adc_scores(
    codes: torch.Tensor, tables: torch.Tensor, max_elements: int = 1 << 26
) -> torch.Tensor:
    """Scores [B, L] of codes [B, L, M, n_sub] against per-user tables [B, M, n_sub, C].

    One gather from the flattened per-user tables, chunked along L to bound the index memory;
    device-agnostic, so it runs wherever the tensors live.
    """
    batch, length = codes.shape[:2]
    n_centroids = tables.shape[-1]
    n_codes = tables.shape[1] * tables.shape[2]
    if codes.shape[2:] != tables.shape[1:3] or tables.shape[0] != batch:
        raise ValueError(f"codes {tuple(codes.shape)} do not match tables {tuple(tables.shape)}")
    flat_tables = tables.reshape(batch, n_codes * n_centroids)
    offsets = torch.arange(n_codes, device=codes.device, dtype=torch.long) * n_centroids
    flat_codes = codes.reshape(batch, length, n_codes)
    chunk = max(1, max_elements // max(1, batch * n_codes))
    out = torch.empty((batch, length), dtype=tables.dtype, device=tables.device)
    for start in range(0, length, chunk):
        idx = flat_codes[:, start : start + chunk].long() + offsets
        got = torch.gather(flat_tables, 1, idx.reshape(batch, -1)).reshape(batch, -1, n_codes)
        out[:, start : start + chunk] = got.sum(dim=-1)
    return out


def batched_adc_topk(
    codes: torch.Tensor, tables: torch.Tensor, k: int, mask: torch.Tensor | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Top-k per user of padded code sequences; padded positions are never returned (index -1)."""
    return masked_topk(batched_adc_scores(codes, tables), k, mask)


def batched_tables(pq: MultiModalPQ, targets: ArrayLike, gammas: ArrayLike | Sequence[float]) -> torch.Tensor:
    """ADC tables for B targets [B, M, d] at once, as a float32 tensor [B, M, n_sub, C]."""
    cfg = pq.config
    t = as_sequence(targets, cfg.n_channels, cfg.dim)
    g = as_gammas(gammas, cfg.n_channels)
    q = merge(t, g).reshape(t.shape[0], cfg.n_sub, cfg.dsub)
    inner = np.einsum("mbcs,nbs->nmbc", pq.codebooks, q) * g[None, :, None, None]
    return torch.from_numpy(np.ascontiguousarray(inner, dtype=np.float32))


# ---------------------------------------------------------------------------- fast CPU searcher


@dataclass
class SearchResult:
    """Top-k of one target: scores (best first) and positions in the sequence."""

    scores: np.ndarray
    indices: np.ndarray


class PQSearcher:
    """One user's code sequence, held for repeated top-K queries on the CPU.

    backend: "fastscan" (faiss IndexPQFastScan, 4-bit codes only), "faiss" (faiss IndexPQ, any bit
    width), "numpy" (vectorised gather) or "auto" (fastscan for 4-bit codes, else faiss).
    FastScan quantizes its look-up tables to 8 bits, so by default it fetches
    ``fastscan_oversample``·k candidates and rescores them with the float tables.
    Exact re-rank needs the float vectors of the sequence (``vectors``).
    """

    def __init__(
        self,
        pq: MultiModalPQ,
        codes: ArrayLike,
        backend: str = "auto",
        vectors: ArrayLike | None = None,
        fastscan_oversample: float = 2.0,
    ) -> None:
        cfg = pq.config
        self.pq = pq
        self.codes = pq.check_codes(codes).astype(cfg.code_dtype)
        if self.codes.ndim != 3:
            raise ValueError(f"codes must be [L, M, n_sub], got {self.codes.shape}")
        self.length = self.codes.shape[0]
        self.vectors = None if vectors is None else as_sequence(vectors, cfg.n_channels, cfg.dim)
        if self.vectors is not None and self.vectors.shape[0] != self.length:
            raise ValueError(f"{self.vectors.shape[0]} vectors for {self.length} codes")
        if backend == "auto":
            backend = "fastscan" if cfg.nbits == 4 else "faiss"
        if backend not in {"fastscan", "faiss", "numpy"}:
            raise ValueError(f"unknown backend {backend!r}")
        if backend == "fastscan" and cfg.nbits != 4:
            raise ValueError(f"fastscan needs 4-bit codes (≤16 centroids), got {cfg.n_centroids} centroids")
        self.backend = backend
        self.fastscan_oversample = fastscan_oversample
        self._index = None if backend == "numpy" else self._build_index()
        n_codes = cfg.n_channels * cfg.n_sub
        self._offsets = np.arange(n_codes, dtype=np.int32) * cfg.n_centroids

    def _build_index(self) -> faiss.Index:
        cfg = self.pq.config
        n_codes = cfg.n_channels * cfg.n_sub
        ksub = 1 << cfg.nbits
        centroids = np.zeros((n_codes, ksub, cfg.dsub), dtype=np.float32)  # unused slots stay zero
        centroids[:, : cfg.n_centroids] = self.pq.codebooks.reshape(n_codes, cfg.n_centroids, cfg.dsub)
        index = faiss.IndexPQ(cfg.n_channels * cfg.dim, n_codes, cfg.nbits, faiss.METRIC_INNER_PRODUCT)
        faiss.copy_array_to_vector(centroids.ravel(), index.pq.centroids)
        index.is_trained = True
        if self.length:
            index.add_sa_codes(pack_codes(self.codes.reshape(self.length, n_codes), cfg.nbits))
        if self.backend == "fastscan":
            index = faiss.IndexPQFastScan(index)
        return index

    # -------------------------------------------------------------- scoring
    def approximate_scores(self, query: np.ndarray, gammas: np.ndarray) -> np.ndarray:
        """Float ADC scores of every behaviour for a merged query vector q [d]."""
        return gather_adc_scores(self.codes, self.pq._tables_for_query(query, gammas))

    def _query(self, target: ArrayLike, gammas: ArrayLike | Sequence[float], mode: str) -> np.ndarray:
        cfg = self.pq.config
        g = as_gammas(gammas, cfg.n_channels)
        t = as_target(target, cfg.n_channels, cfg.dim)
        if mode == "sdc":
            t = self.pq.decode(self.pq.encode(t[None]))[0]
        elif mode != "adc":
            raise ValueError(f"mode must be 'adc' or 'sdc', got {mode!r}")
        return merge(t, g)

    def search(
        self,
        target: ArrayLike,
        gammas: ArrayLike | Sequence[float],
        k: int,
        mode: str = "adc",
        rerank: int | None = None,
    ) -> SearchResult:
        """Top-k behaviours for one target [M, d]; optional exact re-rank of the top-``rerank`` shortlist.

        Returns at most min(k, L) results; with re-rank the scores are exact, otherwise approximate.
        """
        if k <= 0:
            raise ValueError(f"k must be positive, got {k}")
        g = as_gammas(gammas, self.pq.config.n_channels)
        query = self._query(target, g, mode)
        shortlist = k if rerank is None else max(k, rerank)
        scores, indices = self._approx_topk(query, g, shortlist)
        if rerank is None:
            return SearchResult(scores[:k], indices[:k])
        if self.vectors is None:
            raise ValueError("exact re-rank needs the sequence's float vectors (pass vectors=...)")
        exact_target = as_target(target, self.pq.config.n_channels, self.pq.config.dim)
        exact = merge(self.vectors[indices], g) @ merge(exact_target, g)
        order = topk_indices(exact, k)
        return SearchResult(exact[order], indices[order])

    def _approx_topk(self, query: np.ndarray, g: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        k = min(k, self.length)
        if k == 0:
            return np.empty(0, np.float32), np.empty(0, np.int64)
        if self._index is None:
            scores = self.approximate_scores(query, g)
            order = topk_indices(scores, k)
            return scores[order], order
        concat = np.ascontiguousarray((g[:, None] * query[None, :]).reshape(1, -1), dtype=np.float32)
        if self.backend == "fastscan" and self.fastscan_oversample > 1:
            fetch = min(self.length, int(np.ceil(k * self.fastscan_oversample)))
            _, cand = self._index.search(concat, fetch)
            cand = cand[0][cand[0] >= 0]
            tables = self.pq._tables_for_query(query, g).reshape(-1)
            exact_adc = tables[self.codes[cand].reshape(len(cand), -1) + self._offsets].sum(axis=1)
            order = topk_indices(exact_adc, k)
            return exact_adc[order], cand[order]
        dist, idx = self._index.search(concat, k)
        keep = idx[0] >= 0
        return dist[0][keep], idx[0][keep].astype(np.int64)


def adc_topk(
    pq: MultiModalPQ,
    codes: ArrayLike,
    target: ArrayLike,
    gammas: ArrayLike | Sequence[float],
    k: int,
    backend: str = "auto",
) -> SearchResult:
    """One-shot convenience: build a searcher over ``codes`` and return the ADC top-k for ``target``."""
    return PQSearcher(pq, codes, backend=backend).search(target, gammas, k)


def codes_to_tensor(codes: ArrayLike, device: torch.device | str = "cpu") -> torch.Tensor:
    """Codes as a tensor for the batched path (uint8 stays uint8; uint16 becomes int32)."""
    arr = to_numpy(codes)
    if arr.dtype == np.uint16:
        arr = arr.astype(np.int32)
    return torch.from_numpy(np.ascontiguousarray(arr)).to(device)
