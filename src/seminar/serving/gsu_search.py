"""The serving GSU: top-K of a user's coded behaviours for each target, on the CPU.

Same scores and the same selection rule as the ranker's PQ GSU (:class:`seminar.retrieval.gsu.PQSearch`):
ADC over the codes picks a shortlist of ``rerank_factor · K``, whose exact scores (from the per-id
exact keys) pick the K; without re-rank the ADC scores pick them. Exact ties go to the later
behaviour, as in the ranker's ``select_top_k``. ADC with unit channel weights is inner-product PQ
over the concatenated channels, so faiss's ``ProductQuantizer.search_ip`` scans the user's code
array in place (no copy, no per-user index). A vectorised numpy scan is kept as the plain reference.
"""

from __future__ import annotations

from dataclasses import dataclass

import faiss
import numpy as np

from seminar.models.ranker import Ranker
from seminar.retrieval.gsu import encode_key_tables, gsu_key_tables
from seminar.retrieval.pq import MultiModalPQ
from seminar.serving.store import History

BACKENDS = ("faiss", "numpy")
FAISS_CENTROIDS = 256  # one byte per code; unused centroid slots stay zero and are never addressed


@dataclass
class CodeTables:
    """Per-id GSU codes and exact keys: a behaviour's codes are its query's row and its item's rows."""

    query_codes: np.ndarray  # [Nq+1, n_sub] uint8
    item_codes: np.ndarray  # [Ni+1, M-1, n_sub] uint8
    exact_query: np.ndarray  # [Nq+1, d] float32
    exact_items: np.ndarray  # [Ni+1, d] float32, the item channels summed

    @classmethod
    def build(cls, ranker: Ranker, pq: MultiModalPQ) -> CodeTables:
        """Encode the trained GSU's key tables with the export's quantizer (as the ranker's PQ GSU does)."""
        keys = gsu_key_tables(ranker)
        query_codes, item_codes = encode_key_tables(pq, keys)
        return cls(
            query_codes.astype(np.uint8),
            item_codes.astype(np.uint8),
            np.ascontiguousarray(keys.query, dtype=np.float32),
            np.ascontiguousarray(keys.items.sum(axis=1), dtype=np.float32),
        )

    @property
    def code_width(self) -> int:
        """Codes per behaviour, M · n_sub (one byte each)."""
        return self.query_codes.shape[1] * (1 + self.item_codes.shape[1])

    def codes_of(self, queries: np.ndarray, items: np.ndarray) -> np.ndarray:
        """Codes [n, M·n_sub] of behaviours: query channel first, then the item channels."""
        query = self.query_codes[queries]
        item = self.item_codes[items].reshape(items.shape[0], -1)
        return np.concatenate([query, item], axis=1)

    def exact_scores(self, u: np.ndarray, queries: np.ndarray, items: np.ndarray) -> np.ndarray:
        """<u_c, key> [C, r] for behaviours given per target as id arrays [C, r]."""
        keys = self.exact_query[queries] + self.exact_items[items]
        return np.einsum("crd,cd->cr", keys, u).astype(np.float32)


@dataclass
class Selection:
    """The kept behaviours of each target, chronological: positions, ADC and exact GSU scores [C, m]."""

    positions: np.ndarray
    adc: np.ndarray
    exact: np.ndarray
    by: str  # "exact" (re-ranked) or "adc": which score chose them


class CodeSearch:
    """ADC shortlist over a user's codes (faiss or numpy), exact re-rank, ties to later behaviours."""

    def __init__(
        self, pq: MultiModalPQ, tables: CodeTables, backend: str = "faiss", threads: int | None = None
    ) -> None:
        if backend not in BACKENDS:
            raise ValueError(f"unknown backend {backend!r}; choose one of {BACKENDS}")
        cfg = pq.config
        if cfg.n_centroids > FAISS_CENTROIDS:
            raise ValueError(
                f"serving needs ≤ {FAISS_CENTROIDS} centroids (uint8 codes), got {cfg.n_centroids}"
            )
        self.tables, self.backend, self.threads = tables, backend, threads
        self.n_channels, self.dim, self.dsub = cfg.n_channels, cfg.dim, cfg.dsub
        self.width = cfg.n_channels * cfg.n_sub
        books = np.zeros((self.width, FAISS_CENTROIDS, cfg.dsub), dtype=np.float32)
        books[:, : cfg.n_centroids] = pq.codebooks.reshape(self.width, cfg.n_centroids, cfg.dsub)
        self.books = books  # [M·n_sub, 256, dsub], channel-major like the codes
        self._pq = faiss.ProductQuantizer(self.n_channels * self.dim, self.width, 8)
        faiss.copy_array_to_vector(books.ravel(), self._pq.centroids)

    # ------------------------------------------------------------------ ADC
    def _queries(self, u: np.ndarray) -> np.ndarray:
        """u repeated over the M channels: its inner product with the concatenated keys is Σ_m <u, z_m>."""
        return np.ascontiguousarray(np.tile(u, (1, self.n_channels)), dtype=np.float32)

    def adc_tables(self, u: np.ndarray) -> np.ndarray:
        """Per-target look-up tables [C, M·n_sub, 256]."""
        x = self._queries(u).reshape(u.shape[0], self.width, self.dsub)
        return np.einsum("skd,csd->csk", self.books, x)

    def adc_scores(self, u: np.ndarray, codes: np.ndarray) -> np.ndarray:
        """ADC scores [C, n] of codes [n, M·n_sub] (vectorised table gather: the plain reference)."""
        flat = codes.astype(np.int64) + np.arange(self.width, dtype=np.int64) * FAISS_CENTROIDS
        tables = self.adc_tables(u).reshape(u.shape[0], -1)
        return tables[:, flat].sum(axis=-1, dtype=np.float32)

    def adc_at(self, u: np.ndarray, codes: np.ndarray, positions: np.ndarray) -> np.ndarray:
        """ADC scores [C, r] of each target's own positions [C, r]."""
        tables = self.adc_tables(u)
        picked = codes[positions].astype(np.int64)  # C r S
        rows = np.arange(u.shape[0])[:, None, None]
        return tables[rows, np.arange(self.width)[None, None, :], picked].sum(axis=-1, dtype=np.float32)

    def shortlist(self, u: np.ndarray, codes: np.ndarray, r: int) -> tuple[np.ndarray, np.ndarray]:
        """Positions [C, r] of the r best ADC scores per target (r < n), and those scores."""
        if self.backend == "numpy":
            scores = self.adc_scores(u, codes)
            top = np.argpartition(-scores, r - 1, axis=1)[:, :r]
            return top, np.take_along_axis(scores, top, axis=1)
        x = self._queries(u)
        codes = np.ascontiguousarray(codes, dtype=np.uint8)
        values = np.empty((x.shape[0], r), dtype=np.float32)
        labels = np.empty((x.shape[0], r), dtype=np.int64)
        heap = faiss.float_minheap_array_t()
        heap.nh, heap.k = x.shape[0], r
        heap.val, heap.ids = faiss.swig_ptr(values), faiss.swig_ptr(labels)
        if self.threads is not None:  # OpenMP's thread count is per calling thread: set it in this one
            faiss.omp_set_num_threads(self.threads)
        self._pq.search_ip(faiss.swig_ptr(x), x.shape[0], faiss.swig_ptr(codes), codes.shape[0], heap, True)
        return labels, values

    # ------------------------------------------------------------------ selection
    def select(self, history: History, u: np.ndarray, k: int, rerank_factor: int) -> Selection:
        """The K behaviours the ranker's PQ GSU keeps for each target u [C, d]."""
        n, c = len(history), u.shape[0]
        everything = np.broadcast_to(np.arange(n, dtype=np.int64), (c, n))
        if rerank_factor > 0:
            r = rerank_factor * k
            candidates = everything if r >= n else self.shortlist(u, history.codes, r)[0]
            scores = self.tables.exact_scores(u, history.queries[candidates], history.items[candidates])
        elif 2 * k >= n:  # a margin beyond K so that ties at the K-th place go to later behaviours
            candidates = everything
            scores = self.adc_at(u, history.codes, candidates)
        else:
            candidates, scores = self.shortlist(u, history.codes, 2 * k)
        # the ranker's tie rule (select_top_k): equal scores go to the later behaviour
        order = np.lexsort((-candidates, -scores), axis=-1)[:, : min(k, n)]
        kept = np.sort(np.take_along_axis(candidates, order, axis=1), axis=1)
        exact = self.tables.exact_scores(u, history.queries[kept], history.items[kept])
        return Selection(
            kept, self.adc_at(u, history.codes, kept), exact, "exact" if rerank_factor > 0 else "adc"
        )
