"""Recall@K of every retrieval method on the paper's synthetic multi-modal sequences (section 4.1).

Every coordinate is i.i.d. N(μ, 1); channels are (query, attribute, text, image). Codebooks and
RQ-VAE models are trained on a separate "embedding table" sample from the same distribution, never
on the sequences being searched.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from seminar.retrieval.baselines import CascadeHNSW, CascadeLSH, RQVAEConfig, RQVAERetriever
from seminar.retrieval.common import exact_scores, recall_at_k, topk_indices
from seminar.retrieval.kernels import PQSearcher
from seminar.retrieval.methods import METHODS, PQ_METHODS
from seminar.retrieval.pq import MultiModalPQ, PQConfig
from seminar.retrieval.report import write_outputs
from seminar.retrieval.speed import SpeedConfig, run_speed

__all__ = ["GROUPS", "METHODS", "RecallConfig", "SpeedConfig", "run_recall_grid", "run_speed"]

CHANNELS = ("query", "attribute", "text", "image")
DIFFERENT_MU = (0.25, 0.5, 1.0, 2.0)

# group -> (per-channel μ, or None for "all equal to same_mu"; per-channel γ)
GROUPS: dict[str, tuple[tuple[float, ...] | None, tuple[float, ...]]] = {
    "same_norm_same_weight": (None, (0.25, 0.25, 0.25, 0.25)),
    "diff_norm_same_weight": (DIFFERENT_MU, (0.25, 0.25, 0.25, 0.25)),
    "same_norm_diff_weight": (None, (0.1, 0.2, 0.3, 0.4)),
}




@dataclass(frozen=True)
class RecallConfig:
    """The recall grid; defaults are the paper's synthetic setup."""

    lengths: tuple[int, ...] = (2000, 5000, 10000)
    ks: tuple[int, ...] = (32, 64, 128, 256)
    groups: tuple[str, ...] = tuple(GROUPS)
    methods: tuple[str, ...] = METHODS
    dim: int = 64
    same_mu: float = 1.0
    n_users: int = 2
    n_targets: int = 10
    table_size: int = 50_000
    rerank_factor: int = 4
    pq_iter: int = 20
    hnsw_m: int = 32
    hnsw_ef_construction: int = 64
    hnsw_ef_search: int = 128
    lsh_bits: int = 256
    rqvae: RQVAEConfig = field(default_factory=lambda: RQVAEConfig(steps=400))
    seed: int = 0
    out: str | None = None
    progress: bool = True

    def __post_init__(self) -> None:
        unknown = [m for m in self.methods if m not in METHODS]
        if unknown:
            raise ValueError(f"unknown methods {unknown}; choose from {list(METHODS)}")
        bad = [g for g in self.groups if g not in GROUPS]
        if bad:
            raise ValueError(f"unknown groups {bad}; choose from {list(GROUPS)}")

    @classmethod
    def quick(cls, **overrides: Any) -> RecallConfig:
        """A grid small enough for tests and smoke runs (seconds, not minutes)."""
        base = cls(
            lengths=(1500,),
            ks=(8, 32),
            n_users=1,
            n_targets=3,
            table_size=3000,
            pq_iter=8,
            rqvae=RQVAEConfig(steps=20, n_quantizers=2, codebook_size=16, hidden_dim=32, latent_dim=16),
        )
        return replace(base, **overrides)


def group_params(group: str, same_mu: float) -> tuple[np.ndarray, np.ndarray]:
    mus, gammas = GROUPS[group]
    mu = np.array(mus if mus is not None else (same_mu,) * len(CHANNELS), dtype=np.float32)
    return mu, np.array(gammas, dtype=np.float32)


def sample(rng: np.random.Generator, mu: np.ndarray, n: int, dim: int) -> np.ndarray:
    """n behaviours [n, M, d] with coordinates i.i.d. N(μ_m, 1)."""
    return (rng.standard_normal((n, mu.shape[0], dim), dtype=np.float32) + mu[None, :, None]).astype(
        np.float32
    )


class TrainedMethods:
    """Quantizers trained on one set of per-channel embedding tables, built on first use and cached.

    The tables are the channels' embedding tables, never the sequences being searched.
    """

    def __init__(self, cfg: RecallConfig, tables: list[np.ndarray], label: str, train_s: dict[str, float]):
        self.cfg, self.tables, self.label, self.train_s = cfg, tables, label, train_s
        self.pqs: dict[tuple[int, int], MultiModalPQ] = {}
        self._rqvae: RQVAERetriever | None = None

    def pq(self, n_sub: int, n_centroids: int) -> MultiModalPQ:
        key = (n_sub, n_centroids)
        if key not in self.pqs:
            start = time.perf_counter()
            cfg = self.cfg
            n_channels = len(self.tables)
            config = PQConfig(n_channels, cfg.dim, n_sub, n_centroids, n_iter=cfg.pq_iter, seed=cfg.seed)
            self.pqs[key] = MultiModalPQ.train(self.tables, config)
            self.train_s[f"pq{n_sub}x{n_centroids}@{self.label}"] = time.perf_counter() - start
        return self.pqs[key]

    def rqvae(self) -> RQVAERetriever:
        if self._rqvae is None:
            start = time.perf_counter()
            model = RQVAERetriever(replace(self.cfg.rqvae, seed=self.cfg.seed))
            threads = torch.get_num_threads()
            torch.set_num_threads(1)  # small MLP: one thread is faster than two contending ones
            try:
                model.fit(self.tables)
            finally:
                torch.set_num_threads(threads)
            self._rqvae = model
            self.train_s[f"rqvae@{self.label}"] = time.perf_counter() - start
        return self._rqvae


def synthetic_tables(cfg: RecallConfig, mu: np.ndarray) -> list[np.ndarray]:
    """A separate sample from the sequences' distribution, one [N, d] table per channel."""
    rng = np.random.default_rng([cfg.seed, 7, *np.round(mu * 1000).astype(int).tolist()])
    table = sample(rng, mu, cfg.table_size, cfg.dim)
    return [np.ascontiguousarray(table[:, m]) for m in range(mu.shape[0])]


def evaluate_methods(
    cfg: RecallConfig,
    suite: TrainedMethods,
    cases: Iterable[tuple[np.ndarray, np.ndarray]],
    gammas: np.ndarray,
) -> list[dict]:
    """Recall@K, bytes per behaviour, per-sequence build time and query time of every method.

    ``cases`` yields (sequence [L, M, d], targets [T, M, d]); the exact weighted score is the truth.
    """
    ks = sorted(cfg.ks)
    recalls: dict[str, dict[int, list[float]]] = {m: {k: [] for k in ks} for m in cfg.methods}
    query_s: dict[str, list[float]] = {m: [] for m in cfg.methods}
    build_s: dict[str, list[float]] = {m: [] for m in cfg.methods}
    bytes_per: dict[str, int] = {}
    for seq, targets in cases:
        retrievers: dict[str, Any] = {}
        searchers: dict[tuple, tuple[PQSearcher, float]] = {}
        for method in cfg.methods:
            start = time.perf_counter()
            if method in PQ_METHODS:
                spec = PQ_METHODS[method]
                key = (spec.n_sub, spec.n_centroids)
                if key not in searchers:
                    pq = suite.pq(*key)
                    start = time.perf_counter()  # per-user cost: encoding + index, not training
                    searchers[key] = (
                        PQSearcher(pq, pq.encode(seq), vectors=seq),
                        time.perf_counter() - start,
                    )
                retrievers[method] = searchers[key][0]
                bytes_per[method] = searchers[key][0].pq.bytes_per_behaviour
                build_s[method].append(searchers[key][1])
                continue
            if method == "hnsw":
                r: Any = CascadeHNSW(cfg.hnsw_m, cfg.hnsw_ef_construction, cfg.hnsw_ef_search)
            elif method == "lsh":
                r = CascadeLSH(cfg.lsh_bits, seed=cfg.seed)
            else:
                r = suite.rqvae()
            r.build(seq)
            retrievers[method] = r
            bytes_per[method] = r.bytes_per_behaviour
            build_s[method].append(time.perf_counter() - start)
        for target in targets:
            truth_scores = exact_scores(seq, target, gammas)
            truth = topk_indices(truth_scores, ks[-1])
            for method in cfg.methods:
                r = retrievers[method]
                start = time.perf_counter()
                if method in PQ_METHODS:
                    spec = PQ_METHODS[method]
                    if spec.rerank:
                        factor = spec.factor or cfg.rerank_factor
                        found = {k: r.search(target, gammas, k, spec.mode, rerank=factor * k).indices
                                 for k in ks}
                    else:
                        top = r.search(target, gammas, ks[-1], spec.mode).indices
                        found = dict.fromkeys(ks, top)
                elif method == "rqvae":
                    top = r.search(target, gammas, ks[-1])
                    found = dict.fromkeys(ks, top)
                else:  # cascades depend on K (K' = K per channel-pair search)
                    found = {k: r.search(target, gammas, k) for k in ks}
                query_s[method].append((time.perf_counter() - start) / len(ks))
                for k in ks:
                    recalls[method][k].append(recall_at_k(found[k], truth, k, truth_scores))
    rows = []
    for method in cfg.methods:
        spec = PQ_METHODS.get(method)
        for k in ks:
            vals = recalls[method][k]
            rows.append(
                {
                    "method": method,
                    "k": k,
                    "recall": float(np.mean(vals)),
                    "recall_min": float(np.min(vals)),
                    "n": len(vals),
                    "bytes_per_behaviour": bytes_per[method],
                    "rerank": (spec.factor or cfg.rerank_factor) * k if spec and spec.rerank else 0,
                    "build_s": float(np.mean(build_s[method])),
                    "query_ms": 1e3 * float(np.mean(query_s[method])),
                }
            )
    return rows


def _run_cell(
    cfg: RecallConfig, suite: TrainedMethods, group: str, length: int, rng: np.random.Generator
) -> list[dict]:
    """All methods on one (group, L) cell: n_users sequences × n_targets targets."""
    mu, gammas = group_params(group, cfg.same_mu)
    cases = (
        (sample(rng, mu, length, cfg.dim), sample(rng, mu, cfg.n_targets, cfg.dim))
        for _ in range(cfg.n_users)
    )
    return [{"group": group, "length": length, **row} for row in evaluate_methods(cfg, suite, cases, gammas)]


def run_recall_grid(config: RecallConfig) -> dict[str, Any]:
    """Run the grid; returns {"config", "rows", "train_s"} and, with config.out, writes table/JSON/PNG.

    Partial results are written after every (group, L) cell, so an interrupted run still leaves data.
    """
    train_s: dict[str, float] = {}
    suites: dict[tuple[float, ...], TrainedMethods] = {}
    results: dict[str, Any] = {"config": asdict(config), "rows": [], "train_s": train_s}
    cells = [(g, length) for g in config.groups for length in sorted(config.lengths)]
    bar = tqdm(cells, desc="recall grid", disable=not config.progress)
    for gi, (group, length) in enumerate(bar):
        bar.set_postfix_str(f"{group} L={length}")
        rng = np.random.default_rng([config.seed, gi, length])
        mu = group_params(group, config.same_mu)[0]
        key = tuple(mu.tolist())
        if key not in suites:
            suites[key] = TrainedMethods(config, synthetic_tables(config, mu), str(key), train_s)
        results["rows"].extend(_run_cell(config, suites[key], group, length, rng))
        if config.out is not None:
            write_outputs(results, Path(config.out), plot=gi == len(cells) - 1)
    return results
