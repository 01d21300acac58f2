"""Scoring and top-K over PQ codes: a plain reference, a fast CPU path (faiss), a batched torch path.

The fast CPU path rests on one identity: multi-modal ADC is inner-product PQ over the concatenation
of the channels. With M·n_sub sub-quantizers whose codebooks are the per-channel codebooks stacked,
and the query concat_j γ_j·q (q = Σ_i γ_i x_t(i)), faiss computes exactly Σ_j Σ_b T_j[b, code], so its
SIMD scanners (IndexPQ, and IndexPQFastScan for 4-bit codes) do the work. SDC is the same search with
the decoded target in place of the exact one.

:class:`ADCEngine` is the one place that scores and shortlists codes for many targets at once (the
serving GSU's scan); :class:`PQSearcher` holds one sequence in a faiss index for many single queries.

Padding convention (batched path): positions where ``mask`` is False are never returned. When k is
larger than the number of real positions, the tail of the result holds index -1 and score -inf, so
results always have shape [B, k].
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

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
from seminar.retrieval.faiss_pq import build_index, pack_codes, padded_subquantizers
from seminar.retrieval.pq import MultiModalPQ

if TYPE_CHECKING:  # the CPU search (PQSearcher) imports it; the batched torch path runs without faiss
    import faiss

__all__ = [
    "FAISS_CENTROIDS",
    "SHORTLIST_BACKENDS",
    "ADCEngine",
    "PQSearcher",
    "SearchResult",
    "batched_adc_scores",
    "batched_adc_topk",
    "batched_tables",
    "codes_to_tensor",
    "flat_code_index",
    "gather_adc_scores",
    "masked_topk",
    "pack_codes",
    "reference_adc_scores",
    "reference_decoded_scores",
    "reference_sdc_scores",
]

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


# ---------------------------------------------------------------------------- top-K helpers


def masked_topk(
    scores: torch.Tensor, k: int, mask: torch.Tensor | None = None, premasked: bool = False
) -> tuple[torch.Tensor, torch.Tensor]:
    """Row-wise top-k of scores [B, L] that never returns a padded position (see module docstring).

    ``premasked``: the scorer already wrote -inf at padded positions (a fused kernel), so the
    masked fill is skipped; the mask is still used to mark padded picks with index -1.
    """
    if k <= 0:
        raise ValueError(f"k must be positive, got {k}")
    batch, length = scores.shape
    if mask is not None:
        if mask.shape != scores.shape:
            raise ValueError(f"mask shape {tuple(mask.shape)} != scores shape {tuple(scores.shape)}")
        mask = mask.to(device=scores.device, dtype=torch.bool)
        if not premasked:
            scores = scores.masked_fill(~mask, float("-inf"))
    kk = min(k, length)
    if kk > 0:
        values, indices = torch.topk(scores, kk, dim=1)
        if mask is not None:
            valid = mask.gather(1, indices)
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
    engine = ADCEngine(pq)
    return torch.from_numpy(engine.tables(engine.queries(merge(t, g), g)))


# ---------------------------------------------------------------------------- many targets, one sequence

SHORTLIST_BACKENDS = ("numpy", "faiss", "torch")
FAISS_CENTROIDS = 256  # the faiss scan reads one byte per code; unused centroid slots stay zero


class ADCEngine:
    """ADC scores and shortlists of one sequence's codes for C targets at once.

    A target enters as its query x = concat_j γ_j q [M·d] (:meth:`queries`): one form gives the
    γ-weighted tables and is what faiss scans with. Codes are [L, M·n_sub] (or [L, M, n_sub]).
    :meth:`scores` is the plain reference that every :meth:`shortlist` backend is held equal to.
    """

    def __init__(self, pq: MultiModalPQ, device: torch.device | str = "cpu") -> None:
        cfg = pq.config
        self.n_channels, self.dim, self.n_sub, self.dsub = cfg.n_channels, cfg.dim, cfg.n_sub, cfg.dsub
        self.n_centroids = cfg.n_centroids
        self.width = cfg.n_channels * cfg.n_sub
        self.books = pq.codebooks.reshape(self.width, cfg.n_centroids, cfg.dsub)  # channel-major, as codes
        self.device = torch.device(device)
        self._faiss_pq: faiss.ProductQuantizer | None = None

    def queries(self, q: np.ndarray, gammas: ArrayLike | Sequence[float] | None = None) -> np.ndarray:
        """x [C, M·d]: each merged query q [C, d] repeated over the channels, channel j scaled by γ_j
        (unit weights without ``gammas``), so <x, concatenated key> = Σ_j γ_j <q, key_j>."""
        q = np.asarray(q, dtype=np.float32)
        if q.ndim != 2 or q.shape[1] != self.dim:
            raise ValueError(f"expected queries [C, d={self.dim}], got {q.shape}")
        if gammas is None:
            return np.ascontiguousarray(np.tile(q, (1, self.n_channels)))
        g = as_gammas(gammas, self.n_channels)
        return np.ascontiguousarray((g[None, :, None] * q[:, None, :]).reshape(q.shape[0], -1))

    def tables(self, x: np.ndarray) -> np.ndarray:
        """Look-up tables [C, M, n_sub, n_centroids]: <slice s of x, centroid k of sub-quantizer s>."""
        x = np.asarray(x, dtype=np.float32).reshape(-1, self.width, self.dsub)
        inner = np.einsum("skd,csd->csk", self.books, x)
        return np.ascontiguousarray(inner).reshape(x.shape[0], self.n_channels, self.n_sub, self.n_centroids)

    def _codes(self, codes: np.ndarray) -> np.ndarray:
        return np.asarray(codes).reshape(-1, self.width)

    def scores(self, x: np.ndarray, codes: np.ndarray) -> np.ndarray:
        """ADC scores [C, L] of every behaviour for every target: the plain reference."""
        codes = self._codes(codes).reshape(-1, self.n_channels, self.n_sub)
        tables = self.tables(x)
        out = np.empty((tables.shape[0], codes.shape[0]), dtype=np.float32)
        for c, table in enumerate(tables):  # one target at a time bounds the gather's memory
            out[c] = gather_adc_scores(codes, table)
        return out

    def scores_at(self, x: np.ndarray, codes: np.ndarray, positions: np.ndarray) -> np.ndarray:
        """ADC scores [C, r] of each target's own positions [C, r]."""
        tables = self.tables(x).reshape(-1, self.width, self.n_centroids)
        picked = self._codes(codes)[positions].astype(np.int64)  # C r S
        rows = np.arange(tables.shape[0])[:, None, None]
        return tables[rows, np.arange(self.width)[None, None, :], picked].sum(axis=-1, dtype=np.float32)

    def shortlist(
        self, x: np.ndarray, codes: np.ndarray, r: int, backend: str = "numpy", threads: int | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """Positions [C, min(r, L)] of the r best ADC scores per target (in no set order), and those scores.

        ``numpy``: the reference; ``faiss``: ProductQuantizer.search_ip over the uint8 codes in place (no
        copy, no index; ``threads`` sets OpenMP's count in the calling thread); ``torch``: a batched
        gather on ``device``.
        """
        if backend not in SHORTLIST_BACKENDS:
            raise ValueError(f"unknown backend {backend!r}; choose one of {SHORTLIST_BACKENDS}")
        codes = self._codes(codes)
        n_targets, r = x.shape[0], min(r, codes.shape[0])
        if r <= 0 or n_targets == 0:
            return np.empty((n_targets, 0), dtype=np.int64), np.empty((n_targets, 0), dtype=np.float32)
        if backend == "faiss":
            return self._faiss_shortlist(x, codes, r, threads)
        if backend == "torch":
            codes_t = codes_to_tensor(codes.reshape(-1, self.n_channels, self.n_sub), self.device)
            tables = torch.from_numpy(self.tables(x)).to(self.device)
            scores = batched_adc_scores(codes_t.expand(n_targets, -1, -1, -1), tables)
            values, indices = masked_topk(scores, r)
            return indices.cpu().numpy(), values.cpu().numpy()
        scores = self.scores(x, codes)
        top = np.argpartition(-scores, r - 1, axis=1)[:, :r]
        return top, np.take_along_axis(scores, top, axis=1)

    def faiss_quantizer(self) -> faiss.ProductQuantizer:
        """The stacked codebooks as one 8-bit faiss ProductQuantizer, built on first use."""
        if self._faiss_pq is None:
            if self.n_centroids > FAISS_CENTROIDS:
                raise ValueError(
                    f"the faiss scan reads uint8 codes: ≤ {FAISS_CENTROIDS} centroids, got {self.n_centroids}"
                )
            import faiss

            books = np.zeros((self.width, FAISS_CENTROIDS, self.dsub), dtype=np.float32)
            books[:, : self.n_centroids] = self.books
            pq = faiss.ProductQuantizer(self.n_channels * self.dim, self.width, 8)
            faiss.copy_array_to_vector(books.ravel(), pq.centroids)
            self._faiss_pq = pq
        return self._faiss_pq

    def _faiss_shortlist(
        self, x: np.ndarray, codes: np.ndarray, r: int, threads: int | None
    ) -> tuple[np.ndarray, np.ndarray]:
        import faiss

        quantizer = self.faiss_quantizer()
        x = np.ascontiguousarray(x, dtype=np.float32)
        codes = np.ascontiguousarray(codes, dtype=np.uint8)
        values = np.empty((x.shape[0], r), dtype=np.float32)
        labels = np.empty((x.shape[0], r), dtype=np.int64)
        heap = faiss.float_minheap_array_t()
        heap.nh, heap.k = x.shape[0], r
        heap.val, heap.ids = faiss.swig_ptr(values), faiss.swig_ptr(labels)
        if threads is not None:  # OpenMP's thread count is per calling thread: set it in this one
            faiss.omp_set_num_threads(threads)
        ptr = faiss.swig_ptr
        quantizer.search_ip(ptr(x), x.shape[0], ptr(codes), codes.shape[0], heap, True)
        return labels, values


# ---------------------------------------------------------------------------- fast CPU searcher


@dataclass
class SearchResult:
    """Top-k of one target: scores (best first) and positions in the sequence."""

    scores: np.ndarray
    indices: np.ndarray


class PQSearcher:
    """One user's code sequence, held for repeated top-K queries on the CPU.

    backend: "fastscan" (faiss IndexPQFastScan, 4-bit codes only), "faiss" (faiss IndexPQ, any bit
    width), "numpy" (:class:`ADCEngine`'s reference) or "auto" (fastscan for 4-bit codes, else faiss).
    FastScan quantizes its look-up tables to 8 bits, so by default it fetches
    ``fastscan_oversample``·k candidates and faiss rescores them with float tables (see faiss_pq).
    1.25 returned the same Recall@K against exact scoring as 2 in every cell of the L=10^4 grid for
    4-bit codes; 1 (no rescoring) is faster still, with approximate (8-bit table) scores.
    Exact re-rank needs the float vectors of the sequence (``vectors``).

    Everything that does not depend on the target (indexes, flattened codebooks and vectors) is built
    here, so a query costs its validation, one small product for the query and one faiss call.
    """

    def __init__(
        self,
        pq: MultiModalPQ,
        codes: ArrayLike,
        backend: str = "auto",
        vectors: ArrayLike | None = None,
        fastscan_oversample: float = 1.25,
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
        if not np.isfinite(fastscan_oversample):
            raise ValueError(f"fastscan_oversample must be finite, got {fastscan_oversample}")
        self.backend = backend
        self.fastscan_oversample = fastscan_oversample
        n_codes = cfg.n_channels * cfg.n_sub
        self._dim = cfg.n_channels * cfg.dim
        padded = padded_subquantizers(n_codes, cfg.nbits) if backend == "fastscan" else n_codes
        self.query_dim = padded * cfg.dsub
        self._engine = ADCEngine(pq)  # the stacked codebooks, and the numpy backend's scan
        self._index: faiss.Index | None = None
        self._exhaustive: faiss.Index | None = None  # float-table scan of every code
        if backend != "numpy":
            import faiss

            self._swig_ptr = faiss.swig_ptr
            self._index = build_index(
                self._engine.books,
                self.codes.reshape(self.length, n_codes),
                cfg.nbits,
                fastscan=backend == "fastscan",
                oversample=fastscan_oversample,
            )
            if isinstance(self._index, faiss.IndexRefine):
                self._exhaustive = faiss.downcast_index(self._index.refine_index)
        self._flat_vectors = None if self.vectors is None else self.vectors.reshape(self.length, self._dim)
        self._weights_key: tuple | None = None  # the last γ seen, and its γγᵀ (see _pair_weights)
        self._weights = np.empty((cfg.n_channels, cfg.n_channels, 1), dtype=np.float32)

    # -------------------------------------------------------------- queries
    def prepare_query(
        self, target: ArrayLike, gammas: ArrayLike | Sequence[float], mode: str = "adc"
    ) -> np.ndarray:
        """Validated faiss query [1, query_dim]: concat_j γ_j q with q = Σ_i γ_i x_t(i) (zero-padded).

        Its inner product with a behaviour's concatenated channels [M·d] is the exact merged score,
        and with the stacked codebooks it gives the ADC tables. For ``mode="sdc"`` the target is
        quantized first.
        """
        if mode not in ("adc", "sdc"):
            raise ValueError(f"mode must be 'adc' or 'sdc', got {mode!r}")
        t = self._target(target)
        if mode == "sdc":
            cfg = self.pq.config
            t = self.pq.decode(self.pq.encode(as_target(t, cfg.n_channels, cfg.dim)[None]))[0]
        return self._concat(t, self._pair_weights(gammas))

    def _target(self, target: ArrayLike) -> np.ndarray:
        """The target [M, d] as float32; its finiteness is checked on the query it makes (_concat)."""
        cfg = self.pq.config
        shape = (cfg.n_channels, cfg.dim)
        if type(target) is np.ndarray and target.dtype == np.float32 and target.shape == shape:
            return target  # the common case, without the general checks' copies
        return as_target(target, cfg.n_channels, cfg.dim)

    def _pair_weights(self, gammas: ArrayLike | Sequence[float]) -> np.ndarray:
        """γγᵀ as [M, M, 1], validated once per distinct γ: queries usually repeat the same weights."""
        key = (gammas.dtype.str, gammas.shape, gammas.tobytes()) if type(gammas) is np.ndarray else None
        if key is None or key != self._weights_key:
            g = as_gammas(gammas, self.pq.config.n_channels)
            self._weights = np.outer(g, g).astype(np.float32)[:, :, None]
            self._weights_key = key
        return self._weights

    def _concat(self, target: np.ndarray, weights: np.ndarray) -> np.ndarray:
        """concat_j γ_j Σ_i γ_i x_t(i) = (γγᵀ · target) flattened, as a contiguous [1, query_dim] query.

        Element-wise on purpose: a BLAS call this small costs little itself but, in a loop of
        queries, slowed the faiss scan right after it by about 14 µs. A NaN or infinity anywhere in
        the target reaches the query (0·inf is NaN), so checking the query once is enough.
        """
        with np.errstate(invalid="ignore", over="ignore"):  # a bad target is refused just below
            concat = (weights * target).sum(axis=1).reshape(1, self._dim)
        if not np.isfinite(concat).all():
            raise ValueError("target vectors contain NaN or infinite values (or overflow when weighted)")
        if self.query_dim == self._dim:
            return concat
        padded = np.zeros((1, self.query_dim), dtype=np.float32)
        padded[:, : self._dim] = concat
        return padded

    def search_prepared(self, query: ArrayLike, k: int) -> SearchResult:
        """Approximate top-k for a query from ``prepare_query`` (e.g. prepared once, searched often)."""
        q = to_numpy(query)
        if q.shape not in ((1, self.query_dim), (self.query_dim,)):
            raise ValueError(f"expected a prepared query of shape [1, {self.query_dim}], got {q.shape}")
        q = np.ascontiguousarray(q.reshape(1, self.query_dim), dtype=np.float32)
        if not np.isfinite(q).all():
            raise ValueError("query contains NaN or infinite values")
        return self._topk(q, _check_k(k))

    # -------------------------------------------------------------- search
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
        k = _check_k(k)
        if rerank is not None and self._flat_vectors is None:
            raise ValueError("exact re-rank needs the sequence's float vectors (pass vectors=...)")
        query = self.prepare_query(target, gammas, mode)
        if rerank is None:
            return self._topk(query, k)
        short = self._topk(query, max(k, rerank))
        if mode == "sdc":  # the shortlist came from the quantized target; re-rank with the exact one
            query = self._concat(self._target(target), self._pair_weights(gammas))
        exact = np.take(self._flat_vectors, short.indices, axis=0) @ query[0, : self._dim]
        order = topk_indices(exact, k)
        return SearchResult(exact[order], short.indices[order])

    def _topk(self, query: np.ndarray, k: int) -> SearchResult:
        k = min(k, self.length)
        if k == 0:
            return SearchResult(np.empty(0, np.float32), np.empty(0, np.int64))
        if self._index is None:
            scores = self._engine.scores(query[:, : self._dim], self.codes)[0]
            order = topk_indices(scores, k)
            return SearchResult(scores[order], order)
        index = self._index
        if self._exhaustive is not None and k * self.fastscan_oversample >= self.length:
            index = self._exhaustive  # the shortlist would be everything: rescore it all directly
        scores = np.empty(k, dtype=np.float32)
        indices = np.empty(k, dtype=np.int64)
        # the low-level call: the query is already a contiguous float32 [1, query_dim] array
        ptr = self._swig_ptr
        index.search_c(1, ptr(query), k, ptr(scores), ptr(indices), None)
        if indices[-1] < 0:  # faiss pads a short result at the tail
            keep = indices >= 0
            scores, indices = scores[keep], indices[keep]
        return SearchResult(scores, indices)


def _check_k(k: int) -> int:
    if k <= 0:
        raise ValueError(f"k must be positive, got {k}")
    return int(k)


def codes_to_tensor(codes: ArrayLike, device: torch.device | str = "cpu") -> torch.Tensor:
    """Codes as a tensor for the batched path (uint8 stays uint8; uint16 becomes int32)."""
    arr = to_numpy(codes)
    if arr.dtype == np.uint16:
        arr = arr.astype(np.int32)
    return torch.from_numpy(np.ascontiguousarray(arr)).to(device)
