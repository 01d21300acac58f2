"""Serving latency against the number of candidates per request, one CPU core, L behaviours per user.

    .venv/bin/python benchmarks/serve_candidates.py --export EXPORT [--length 10000] [--candidates 1 100]
    .venv/bin/python benchmarks/serve_candidates.py --data DATA --run RUN      # exports the run first

Every figure comes from the same run, methods interleaved, median (p50) and p90 of repeated calls.

GSU stage (top-K of L for each of C candidates; u computed once beforehand, not timed):
* ``exact fp32 (serving)``: the serving default, :class:`~seminar.serving.gsu_search.ExactSearch`
  (the user's fused keys gathered from the per-id tables, GEMM, threshold top-k).
* ``exact fp32 GEMM + argpartition``: the fused keys held per behaviour, a GEMM and numpy's
  argpartition: the plain exact baseline a competent engineer writes first.
* ``exact fp16 GEMM + topk``: fused keys held in fp16 (torch GEMM, torch.topk).
* ``per-channel exact``: the paper's layout, one key per channel and behaviour, M GEMMs summed.
* ``PQ ADC 8-bit + re-rank``: the serving's ``--gsu pq`` (faiss scan of the export's codes, fused or
  per channel as exported with ``--pq-layout``, exact re-rank of rerank·K).
* ``PQ fast-scan fused 4-bit + re-rank``: codes of the fused key (faiss IndexPQFastScan), exact
  re-rank of rerank·K.
* ``PQ / OPQ 8-bit fused + re-rank``: 16 one-byte codes of the fused key (16 B per behaviour), with
  and without an OPQ rotation (faiss), exact re-rank of rerank·K.
Recall@K of each against the exact fp32 selection, and the bytes each holds per behaviour.

The process keeps freed memory for reuse, as ``seminar serve`` does (:mod:`seminar.allocator`;
``SEMINAR_SYSTEM_MALLOC=1`` measures with glibc's defaults instead).

End to end: ``ScoringService.score_many`` (GSU, ESU and head for all C candidates) with ``gsu=exact``
and ``gsu=pq``. Prints tables; asserts nothing.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from pathlib import Path

import faiss
import numpy as np
import torch
from threadpoolctl import threadpool_limits

from seminar.allocator import retain_freed_memory
from seminar.retrieval.gsu import target_query_vectors
from seminar.retrieval.topk import top_k_latest
from seminar.serving import ScoringService
from seminar.serving.bundle import load_export
from seminar.serving.store import History


def timed(fn: Callable[[], object], repeats: int) -> tuple[float, float]:
    """(p50, p90) in ms of ``repeats`` calls after one warm-up call."""
    fn()
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        fn()
        times.append((time.perf_counter() - started) * 1000)
    return float(np.percentile(times, 50)), float(np.percentile(times, 90))


def recall(approx: np.ndarray, exact: np.ndarray, scores: np.ndarray) -> float:
    """Mean fraction of K that the approximate selection fills with behaviours scoring at least each
    row's exact K-th score (``scores`` [C, n], exact): equal (query, item) pairs tie exactly, so
    which copy was kept does not count against a method."""
    kth = np.take_along_axis(scores, exact, axis=1).min(axis=1, keepdims=True)
    good = np.take_along_axis(scores, approx, axis=1) >= kth
    return float(good.sum(axis=1).mean() / exact.shape[1])


def fill(service: ScoringService, user: str, length: int, rng: np.random.Generator) -> None:
    """A synthetic lifelong history from the export's ids, half of it searches."""
    ids = service.ids
    items = rng.integers(1, len(ids.items), length)
    queries = rng.integers(2, len(ids.queries), length)
    search = rng.random(length) < 0.5
    stamps = np.cumsum(rng.integers(1, 600, length)) + 1_000_000_000
    service.append_columns(
        user,
        [ids.items[i] for i in items.tolist()],
        [ids.queries[q] if s else None for q, s in zip(queries.tolist(), search.tolist(), strict=True)],
        stamps,
    )


class GsuMethods:
    """The GSU stage's methods over one user's history, each returning positions [C, K]."""

    def __init__(self, exact: ScoringService, pq: ScoringService, user: str, k: int, rerank: int) -> None:
        self.exact_service, self.pq_service, self.k, self.rerank = exact, pq, k, rerank
        self.history: History = exact.history(user)
        self.pq_history: History = pq.history(user)
        tables = exact.tables
        self.keys = tables.keys(self.history.queries, self.history.items)  # [n, d] fused fp32
        self.keys16 = torch.from_numpy(self.keys).half()
        # per-channel layout: the query channel and each item channel held separately per behaviour
        channels = pq.tables
        self.channel_keys = [channels.exact_query[self.history.queries]]
        self.item_channel_tables = self._item_channel_tables(exact)
        self.channel_keys += [table[self.history.items] for table in self.item_channel_tables]
        self.fastscan = self._fastscan_index()
        self.fused_pq = self._fused_index("PQ16")
        self.fused_opq = self._fused_index("OPQ16,PQ16")

    @staticmethod
    def _item_channel_tables(service: ScoringService) -> list[np.ndarray]:
        from seminar.retrieval.gsu import gsu_key_tables

        items = gsu_key_tables(service.ranker).items  # [Ni+1, M-1, d]
        return [np.ascontiguousarray(items[:, m], dtype=np.float32) for m in range(items.shape[1])]

    def _fastscan_index(self) -> faiss.IndexPQFastScan:
        d = self.keys.shape[1]
        sub = max(m for m in (8, 16, 32) if d % m == 0 and m <= d)
        index = faiss.IndexPQFastScan(d, sub, 4, faiss.METRIC_INNER_PRODUCT)
        index.train(self._training_keys())
        index.add(self.keys)
        self.fastscan_bytes = sub // 2
        return index

    def _training_keys(self, n: int = 20_000) -> np.ndarray:
        """Keys of random (query, item) pairs: the codebooks never see the user's own history."""
        rng = np.random.default_rng(0)
        tables = self.exact_service.tables
        queries = rng.integers(0, tables.exact_query.shape[0], n)
        return tables.keys(queries, rng.integers(1, tables.exact_items.shape[0], n))

    def _fused_index(self, spec: str) -> faiss.Index:
        """An 8-bit PQ of the fused key (16 sub-vectors: 16 B per behaviour), optionally OPQ-rotated."""
        index = faiss.index_factory(self.keys.shape[1], spec, faiss.METRIC_INNER_PRODUCT)
        index.train(self._training_keys())
        index.add(self.keys)
        return index

    def _reranked(self, index: faiss.Index, u: np.ndarray) -> np.ndarray:
        """The index's top rerank·K per target, re-scored with the exact fused keys, best K kept."""
        _, shortlist = index.search(u, self.rerank * self.k)
        exact = np.einsum("crd,cd->cr", self.keys[shortlist], u)
        best = np.argpartition(-exact, self.k - 1, axis=1)[:, : self.k]
        return np.take_along_axis(shortlist, best, axis=1)

    def fused_pq_rerank(self, u: np.ndarray) -> np.ndarray:
        return self._reranked(self.fused_pq, u)

    def fused_opq_rerank(self, u: np.ndarray) -> np.ndarray:
        return self._reranked(self.fused_opq, u)

    def serving_exact(self, u: np.ndarray) -> np.ndarray:
        return self.exact_service.search.select(self.history, u, self.k).positions

    def argpartition(self, u: np.ndarray) -> np.ndarray:
        scores = u @ self.keys.T
        return np.argpartition(-scores, self.k - 1, axis=1)[:, : self.k]

    def fp16(self, u: np.ndarray) -> np.ndarray:
        scores = torch.from_numpy(u).half() @ self.keys16.T
        return torch.topk(scores.float(), self.k, dim=1, sorted=False).indices.numpy()

    def per_channel(self, u: np.ndarray) -> np.ndarray:
        scores = u @ self.channel_keys[0].T
        for keys in self.channel_keys[1:]:
            scores += u @ keys.T
        return top_k_latest(scores, self.k, check=False)

    def pq_adc(self, u: np.ndarray) -> np.ndarray:
        return self.pq_service.search.select(self.pq_history, u, self.k, self.rerank).positions

    def fastscan_rerank(self, u: np.ndarray) -> np.ndarray:
        return self._reranked(self.fastscan, u)

    @property
    def export_layout(self) -> str:
        """What the export's codes quantize (``--pq-layout``)."""
        return "fused" if self.pq_service.tables.fused is not None else "per channel"

    def table(self) -> dict[str, tuple[Callable[[np.ndarray], np.ndarray], float]]:
        """Name -> (method, bytes held per behaviour for the GSU beyond the ids)."""
        d = self.keys.shape[1]
        m = len(self.channel_keys)
        return {
            "exact fp32 (serving: per-id tables, GEMM, threshold top-k)": (self.serving_exact, 0),
            "exact fp32 GEMM + argpartition (fused keys held)": (self.argpartition, 4 * d),
            "exact fp16 GEMM + torch.topk (fused keys held)": (self.fp16, 2 * d),
            "per-channel exact fp32 (M GEMMs)": (self.per_channel, 4 * d * m),
            f"PQ ADC 8-bit {self.export_layout} (`--gsu pq`) + re-rank {self.rerank}K": (
                self.pq_adc,
                self.pq_service.tables.code_width,
            ),
            f"PQ fast-scan 4-bit fused + re-rank {self.rerank}K": (self.fastscan_rerank, self.fastscan_bytes),
            f"PQ 8-bit fused (16 sub-vectors) + re-rank {self.rerank}K": (self.fused_pq_rerank, 16),
            f"OPQ 8-bit fused (16 sub-vectors) + re-rank {self.rerank}K": (self.fused_opq_rerank, 16),
        }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--export", type=Path, default=None, help="a `seminar export` directory")
    parser.add_argument("--data", type=Path, default=None, help="dataset of --run (with --run)")
    parser.add_argument("--run", type=Path, default=None, help="a seminar/twin/sim_soft run to export")
    parser.add_argument("--work", type=Path, default=Path("runs/serve-candidates"))
    parser.add_argument("--length", type=int, default=10_000, help="behaviours per user (L)")
    parser.add_argument("--candidates", type=int, nargs="+", default=[1, 10, 100, 1000])
    parser.add_argument("--repeats", type=int, default=30)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    torch.set_num_threads(1)
    retain_freed_memory()  # as `seminar serve` does (SEMINAR_SYSTEM_MALLOC=1: glibc's defaults)
    faiss.omp_set_num_threads(1)
    threadpool_limits(1)

    export_dir = args.export
    if export_dir is None:
        if args.data is None or args.run is None:
            parser.error("give --export, or --data and --run")
        from seminar.data.schema import load_dataset
        from seminar.retrieval.gsu import PQGsuConfig
        from seminar.serving.export import export_run

        dataset = load_dataset(args.data)
        export_dir = export_run(dataset, args.run, args.work / "export", PQGsuConfig(), overwrite=True)
    export = load_export(export_dir)
    exact = ScoringService(export, threads=1)
    pq = ScoringService(export, gsu="pq", threads=1)
    rng = np.random.default_rng(args.seed)
    fill(exact, "user", args.length, np.random.default_rng(args.seed))
    fill(pq, "user", args.length, np.random.default_rng(args.seed))
    k, dim = exact.default_k, exact.tables.exact_query.shape[1]
    methods = GsuMethods(exact, pq, "user", k, pq.rerank_factor)
    model = export.manifest["model"]["config"]["model"]
    print(f"export {export_dir}: model {model}, d = {dim}, K = {k}, L = {args.length}")
    print("one thread (torch, faiss, BLAS); p50 / p90 ms; recall@K against the exact fp32 selection\n")

    columns = " | ".join(f"C = {c}" for c in args.candidates)
    print(f"| GSU method | bytes/behaviour | {columns} | recall@K |")
    print("|---|---|" + "---|" * len(args.candidates) + "---|")
    ids = exact.ids
    items = rng.integers(1, len(ids.items), max(args.candidates))
    u_all = target_query_vectors(exact.ranker, np.ones_like(items), items, exact.id_tables)
    exact_positions = methods.serving_exact(u_all)
    exact_scores = u_all @ methods.keys.T
    rows: dict[str, list[str]] = {}
    for name, (method, width) in methods.table().items():
        cells = []
        for c in args.candidates:
            p50, p90 = timed(lambda method=method, c=c: method(u_all[:c]), args.repeats)
            cells.append(f"{p50:.2f} / {p90:.2f}")
        rows[name] = [f"{width}", *cells, f"{recall(method(u_all), exact_positions, exact_scores):.4f}"]
        print(f"| {name} | " + " | ".join(rows[name]) + " |")

    print("\nEnd to end, ScoringService.score_many (GSU + ESU + head, all C candidates), p50 / p90 ms:\n")
    print("| serving GSU | " + " | ".join(f"C = {c}" for c in args.candidates) + " |")
    print("|---|" + "---|" * len(args.candidates))
    raw = [ids.items[int(i)] for i in items]
    for name, service in (("exact", exact), ("pq", pq)):
        cells = []
        for c in args.candidates:
            p50, p90 = timed(
                lambda service=service, c=c: service.score_many("user", raw[:c], include_behaviours=False),
                args.repeats,
            )
            cells.append(f"{p50:.2f} / {p90:.2f}")
        print(f"| {name} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
