"""The serving GSU: top-K of a user's behaviours for each target, on the CPU, exact or over PQ codes.

The GSU score of a behaviour is linear in its key, and the key is the sum of its query's and its
item's rows of per-id tables (the trained GSU's folded keys). :class:`ExactSearch` therefore needs no
per-behaviour storage beyond the ids the ESU needs anyway: it gathers the user's keys and meets all C
targets in one GEMM, then a row-wise top-K (:func:`seminar.retrieval.topk.top_k_latest`). For many
candidates per request this is the fastest path measured on a CPU core (benchmarks/serve_load.py);
it keeps exactly what the ranker's own GSU keeps.

:class:`CodeSearch` is the paper's approximate path: same scores and the same selection rule as
the ranker's PQ GSU (:class:`seminar.retrieval.gsu.PQSearch`): ADC over the codes picks a
shortlist of ``rerank_factor · K``, whose exact scores (from the per-id exact keys) pick the K;
without re-rank the ADC scores pick them. Exact ties go to the later
behaviour, as in the ranker's ``select_top_k``. The ADC scan itself is
:class:`seminar.retrieval.kernels.ADCEngine`'s (faiss over the user's code array in place, or its
numpy reference); this module only selects.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from seminar.models.ranker import Ranker
from seminar.retrieval.gsu import encode_key_tables, gsu_key_tables, is_fused
from seminar.retrieval.kernels import FAISS_CENTROIDS, ADCEngine
from seminar.retrieval.pq import MultiModalPQ
from seminar.retrieval.topk import top_k_latest
from seminar.serving.schemas import GSU_MODES
from seminar.serving.store import History

__all__ = ["GSU_MODES", "CodeSearch", "CodeTables", "ExactSearch", "Selection", "select_with_recent"]

BACKENDS = ("faiss", "numpy")
EXACT_BLOCK = 256  # targets per GEMM block: [256, L] float32 scores stay within a few MB


@dataclass
class CodeTables:
    """Per-id GSU codes and exact keys: a behaviour's codes are its query's row and its item's rows,
    or, with a quantizer of the fused key (``fused``), its own fused key's codes."""

    query_codes: np.ndarray  # [Nq+1, n_sub] uint8
    item_codes: np.ndarray  # [Ni+1, M-1, n_sub] uint8
    exact_query: np.ndarray  # [Nq+1, d] float32
    exact_items: np.ndarray  # [Ni+1, d] float32, the item channels summed
    fused: MultiModalPQ | None = None  # a one-channel quantizer of fused keys; per-id codes then empty

    @classmethod
    def build(cls, ranker: Ranker, pq: MultiModalPQ | None) -> CodeTables:
        """Encode the trained GSU's key tables with the export's quantizer (as the ranker's PQ GSU does);
        without a quantizer (exact GSU) the code tables are empty and behaviours carry no codes."""
        keys = gsu_key_tables(ranker)
        fused = pq is not None and is_fused(pq, keys)
        if pq is None or fused:
            query_codes = np.zeros((keys.query.shape[0], 0), dtype=np.uint8)
            item_codes = np.zeros((keys.items.shape[0], keys.items.shape[1], 0), dtype=np.uint8)
        else:
            query_codes, item_codes = encode_key_tables(pq, keys)
        return cls(
            query_codes.astype(np.uint8),
            item_codes.astype(np.uint8),
            np.ascontiguousarray(keys.query, dtype=np.float32),
            np.ascontiguousarray(keys.items.sum(axis=1), dtype=np.float32),
            pq if fused else None,
        )

    @property
    def code_width(self) -> int:
        """Codes per behaviour, M · n_sub (fused: n_sub), one byte each."""
        if self.fused is not None:
            return self.fused.config.n_sub
        return self.query_codes.shape[1] * (1 + self.item_codes.shape[1])

    def codes_of(self, queries: np.ndarray, items: np.ndarray) -> np.ndarray:
        """Codes [n, M·n_sub] of behaviours: query channel first, then the item channels (fused: the
        codes of each behaviour's fused key, [n, n_sub])."""
        if self.fused is not None:
            return self.fused.encode_channel(0, self.keys(queries, items)).astype(np.uint8)
        query = self.query_codes[queries]
        item = self.item_codes[items].reshape(items.shape[0], -1)
        return np.concatenate([query, item], axis=1)

    def keys(self, queries: np.ndarray, items: np.ndarray) -> np.ndarray:
        """Exact GSU keys [..., d] of behaviours given by their query and item ids."""
        return self.exact_query[queries] + self.exact_items[items]

    def exact_scores(self, u: np.ndarray, queries: np.ndarray, items: np.ndarray) -> np.ndarray:
        """<u_c, key> [C, r] for behaviours given per target as id arrays [C, r]."""
        keys = self.exact_query[queries] + self.exact_items[items]
        return np.einsum("crd,cd->cr", keys, u).astype(np.float32)


@dataclass
class Selection:
    """The kept behaviours of each target, chronological: positions, ADC and exact GSU scores [C, m]."""

    positions: np.ndarray
    adc: np.ndarray | None  # None when no codes were scanned (exact GSU)
    exact: np.ndarray
    by: str  # which scores chose them: "exact" (all), "pq-rerank" (ADC shortlist, exact re-rank), "pq"


def check_targets(u: np.ndarray) -> np.ndarray:
    """Target vectors [C, d] as contiguous float32; a NaN or infinite one has no ranking."""
    u = np.ascontiguousarray(u, dtype=np.float32)
    if not np.isfinite(u).all():
        raise ValueError("a target's GSU vector is not finite; the model's weights or inputs hold NaN/inf")
    return u


class RecencyBiased:
    """What both serving GSUs share: the id tables, and the recency bias a ``gsu_recency`` model's
    GSU adds to every score (``recency``: its per-bucket table; None for a GSU of content only)."""

    def __init__(self, tables: CodeTables, recency: np.ndarray | None = None) -> None:
        self.tables = tables
        self.recency = None if recency is None else np.asarray(recency, dtype=np.float32)

    def bias(self, n: int, end: int | None = None) -> np.ndarray | None:
        """The recency bias [n] of behaviours 0..n-1 of a history that ends at ``end`` (default n),
        or None for a GSU that scores content only. Buckets as the ranker's: floor(log2(distance + 1))."""
        if self.recency is None:
            return None
        distance = ((n if end is None else end) - 1 - np.arange(n)).astype(np.float32)
        bucket = np.minimum(np.log2(distance + 1).astype(np.int64), self.recency.shape[0] - 1)
        return self.recency[bucket]


class ExactSearch(RecencyBiased):
    """Every behaviour scored exactly, then each row's top-K with the ranker's tie rule (equal scores:
    the later behaviour).

    Two ways to the same scores: the user's keys gathered once and one GEMM per block of targets
    (many targets), or, for a few targets when the id tables are shorter than the history, the
    id tables scored and the scores gathered, ``<u, k_q> + <u, k_i>`` (no [n, d] gather at all).
    """

    per_id_max_targets = 32

    def scores(self, history: History, u: np.ndarray, end: int | None = None) -> np.ndarray:
        """Exact GSU scores [C, n] of every behaviour for every target (the plain reference)."""
        scores = check_targets(u) @ self.tables.keys(history.queries, history.items).T
        bias = self.bias(len(history), end)
        return scores if bias is None else scores + bias

    def _per_id_scores(self, history: History, u: np.ndarray) -> np.ndarray:
        """The same scores via the id tables: [C, Nq] and [C, Ni] products, gathered at the history."""
        by_query = u @ self.tables.exact_query.T
        by_item = u @ self.tables.exact_items.T
        return by_query[:, history.queries] + by_item[:, history.items]

    def uses_id_tables(self, history: History, targets: int) -> bool:
        """Whether scoring the id tables is the cheaper way for this many targets."""
        rows = self.tables.exact_query.shape[0] + self.tables.exact_items.shape[0]
        return targets <= self.per_id_max_targets and rows <= len(history)

    def select(
        self, history: History, u: np.ndarray, k: int, rerank_factor: int = 0, end: int | None = None
    ) -> Selection:
        """The K behaviours the ranker's exact GSU keeps for each target u [C, d] (``rerank_factor``
        is ignored: nothing is approximate). ``end``: the length of the whole history when this is
        its head (distances for the recency bias count from there)."""
        u = check_targets(u)
        bias = self.bias(len(history), end)
        if self.uses_id_tables(history, u.shape[0]):
            block = self._per_id_scores(history, u)
            if bias is not None:
                block += bias
            kept = top_k_latest(block, k, check=False)
            return Selection(kept, None, np.take_along_axis(block, kept, axis=1), "exact")
        keys = self.tables.keys(history.queries, history.items)
        positions, scores = [], []
        for start in range(0, u.shape[0], EXACT_BLOCK):
            block = u[start : start + EXACT_BLOCK] @ keys.T  # BLAS reads the transpose in place
            if bias is not None:
                block += bias
            kept = top_k_latest(block, k, check=False)
            positions.append(kept)
            scores.append(np.take_along_axis(block, kept, axis=1))
        return Selection(np.concatenate(positions), None, np.concatenate(scores), "exact")


class CodeSearch(RecencyBiased):
    """ADC shortlist over a user's codes (faiss or numpy), exact re-rank, ties to later behaviours.

    With a recency bias both stages rank by score plus bias, as the ranker's PQ GSU does. The bias
    is constant over each log2-distance bucket, a contiguous run of positions, so the top R of
    ADC + bias lies within the union of every run's own ADC top R: the scan stays a plain ADC
    top-R (faiss), once per run (about log2 L of them).
    """

    def __init__(
        self,
        pq: MultiModalPQ,
        tables: CodeTables,
        backend: str = "faiss",
        threads: int | None = None,
        recency: np.ndarray | None = None,
    ) -> None:
        super().__init__(tables, recency)
        if backend not in BACKENDS:
            raise ValueError(f"unknown backend {backend!r}; choose one of {BACKENDS}")
        if pq.config.n_centroids > FAISS_CENTROIDS:
            raise ValueError(
                f"serving needs ≤ {FAISS_CENTROIDS} centroids (uint8 codes), got {pq.config.n_centroids}"
            )
        self.backend, self.threads = backend, threads
        self.adc = ADCEngine(pq)
        if backend == "faiss":
            self.adc.faiss_quantizer()  # built at load, not on the first request

    # ------------------------------------------------------------------ ADC (unit channel weights)
    def adc_at(self, u: np.ndarray, codes: np.ndarray, positions: np.ndarray) -> np.ndarray:
        """ADC scores [C, r] of each target's own positions [C, r]."""
        return self.adc.scores_at(self.adc.queries(u), codes, positions)

    def shortlist(
        self, u: np.ndarray, codes: np.ndarray, r: int, bias: np.ndarray | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """Positions [C, r] of the r best ADC (+ ``bias`` [n]) scores per target (r < n), and those
        scores."""
        x = self.adc.queries(u)
        if bias is None:
            return self.adc.shortlist(x, codes, r, self.backend, self.threads)
        runs = np.flatnonzero(np.diff(bias)) + 1  # where the bias changes: runs of one bucket
        positions, scores = [], []
        for start, stop in zip(np.r_[0, runs], np.r_[runs, bias.shape[0]], strict=True):
            found, adc = self.adc.shortlist(x, codes[start:stop], r, self.backend, self.threads)
            positions.append(found + start)
            scores.append(adc + bias[start])
        candidates, biased = np.concatenate(positions, axis=1), np.concatenate(scores, axis=1)
        if candidates.shape[1] > r:
            best = np.argpartition(-biased, r - 1, axis=1)[:, :r]
            candidates = np.take_along_axis(candidates, best, axis=1)
            biased = np.take_along_axis(biased, best, axis=1)
        return candidates, biased

    # ------------------------------------------------------------------ selection
    def select(
        self, history: History, u: np.ndarray, k: int, rerank_factor: int, end: int | None = None
    ) -> Selection:
        """The K behaviours the ranker's PQ GSU keeps for each target u [C, d] (``end``: as for
        :meth:`ExactSearch.select`)."""
        n, c = len(history), u.shape[0]
        bias = self.bias(n, end)
        shift = np.zeros(n, dtype=np.float32) if bias is None else bias  # adds exactly nothing without one
        everything = np.broadcast_to(np.arange(n, dtype=np.int64), (c, n))
        if rerank_factor > 0:
            r = rerank_factor * k
            candidates = everything if r >= n else self.shortlist(u, history.codes, r, bias)[0]
            scores = self.tables.exact_scores(u, history.queries[candidates], history.items[candidates])
            scores = scores + shift[candidates]
        elif 2 * k >= n:  # a margin beyond K so that ties at the K-th place go to later behaviours
            candidates = everything
            scores = self.adc_at(u, history.codes, candidates) + shift[candidates]
        else:
            candidates, scores = self.shortlist(u, history.codes, 2 * k, bias)
        # the ranker's tie rule (select_top_k): equal scores go to the later behaviour
        order = np.lexsort((-candidates, -scores), axis=-1)[:, : min(k, n)]
        kept = np.sort(np.take_along_axis(candidates, order, axis=1), axis=1)
        exact = self.tables.exact_scores(u, history.queries[kept], history.items[kept]) + shift[kept]
        adc = self.adc_at(u, history.codes, kept) + shift[kept]
        return Selection(kept, adc, exact, "pq-rerank" if rerank_factor > 0 else "pq")


def select_with_recent(
    search: ExactSearch | CodeSearch, history: History, u: np.ndarray, k: int, rerank_factor: int, recent: int
) -> Selection:
    """The ranker's selection with ``recent`` > 0 (``RankerConfig.recent``): the last min(R, K)
    behaviours always, and the GSU's top of the rest among the older ones (positions chronological)."""
    n = len(history)
    r = min(recent, k, n)
    if r == 0:
        return search.select(history, u, k, rerank_factor)
    u = check_targets(u)
    tail = np.broadcast_to(np.arange(n - r, n, dtype=np.int64), (u.shape[0], r))
    tail_exact = search.tables.exact_scores(u, history.queries[tail], history.items[tail])
    tail_adc = search.adc_at(u, history.codes, tail) if isinstance(search, CodeSearch) else None
    bias = search.bias(n)
    if bias is not None:
        tail_exact += bias[n - r :]
        if tail_adc is not None:
            tail_adc += bias[n - r :]
    if k == r or n == r:
        return Selection(np.ascontiguousarray(tail), tail_adc, tail_exact, "recent")
    chosen = search.select(history.head(n - r), u, k - r, rerank_factor, end=n)
    adc = None if chosen.adc is None or tail_adc is None else np.concatenate([chosen.adc, tail_adc], axis=1)
    return Selection(
        np.concatenate([chosen.positions, tail], axis=1),
        adc,
        np.concatenate([chosen.exact, tail_exact], axis=1),
        f"{chosen.by}+recent",
    )
