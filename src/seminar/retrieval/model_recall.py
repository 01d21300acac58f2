"""Recall@K of the retrieval methods on a trained model's own GSU embeddings (the paper's Table 4).

The ground truth is the trained GSU's exact top-K over each test user's whole history, for the
test positive and some of its sampled negatives as targets. Behaviours are the GSU's per-channel
keys ``z_m`` and the target is its query vector ``u`` (``relevance = <u, Σ_m z_m>``), so with
uniform channel weights the methods' weighted score ranks exactly as the GSU does. Codebooks and
RQ-VAE models are trained on the per-id key tables (the channels' embedding tables).

SDC quantizes the target too, with the behaviour codebooks. A GSU with separate query and key
projections (SEMINAR, TWIN) puts ``u`` in another space than ``z``, which is what SDC pays for.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from seminar.data.schema import SeminarDataset
from seminar.models.features import FeatureTables
from seminar.models.ranker import Ranker
from seminar.retrieval.baselines import RQVAEConfig
from seminar.retrieval.bench import METHODS, PQ_METHODS, RecallConfig, TrainedMethods, evaluate_methods
from seminar.retrieval.gsu import GsuKeyTables, gsu_key_tables, pad_table_rows, target_query_vectors
from seminar.retrieval.report import write_outputs
from seminar.train.runs import load_run_model

logger = logging.getLogger(__name__)

DEFAULT_METHODS = (
    "hnsw",
    "lsh",
    "rqvae",
    "pq_paper_sdc",
    "pq_paper_adc",
    "pq_paper_adc_rr",
    "pq8x32_adc",
    "pq8x32_adc_rr",
    "pq4x32_adc_rr",
)


class NoLongHistories(ValueError):
    """No test user has a history long enough for the configured K values."""


@dataclass(frozen=True)
class ModelRecallConfig:
    """Which users and targets to score; ``methods`` are names from the synthetic grid."""

    ks: tuple[int, ...] = (16, 32, 64)
    methods: tuple[str, ...] = DEFAULT_METHODS
    min_length: int = 256  # users whose history is at least this long
    max_users: int = 100  # the longest histories first
    negatives_per_user: int = 4  # test negatives scored as targets beside the positive
    rerank_factor: int = 4
    pq_iter: int = 20
    rqvae: RQVAEConfig = field(default_factory=lambda: RQVAEConfig(steps=400))
    seed: int = 0
    progress: bool = True

    def __post_init__(self) -> None:
        unknown = [m for m in self.methods if m not in METHODS]
        if unknown:
            raise ValueError(f"unknown methods {unknown}; choose from {list(METHODS)}")
        if not self.ks or min(self.ks) <= 0:
            raise ValueError(f"ks must be positive, got {self.ks}")


def _cases(
    ds: SeminarDataset, ranker: Ranker, keys: GsuKeyTables, users: np.ndarray, n_negatives: int
) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """(history keys [L, M, d], targets [T, M, d]) per user; each target channel holds u."""
    offsets = np.asarray(ds.offsets)
    queries, items = np.asarray(ds.queries), np.asarray(ds.items)
    negatives = np.asarray(ds.test_negatives)
    for user in users:
        start, last = int(offsets[user]), int(offsets[user + 1]) - 1  # the last behaviour is the test target
        history = keys.behaviour_vectors(queries[start:last], items[start:last])
        target_items = np.concatenate([[items[last]], negatives[user, :n_negatives]])
        target_queries = np.full_like(target_items, queries[last])
        u = target_query_vectors(ranker, target_queries, target_items)
        yield history, np.repeat(u[:, None, :], keys.n_channels, axis=1)


def run_model_recall(
    ds: SeminarDataset,
    run_dir: Path | str,
    config: ModelRecallConfig | None = None,
    out: Path | str | None = None,
    tables: FeatureTables | None = None,
) -> dict[str, Any]:
    """Recall@K of every method against the trained GSU's exact top-K; writes Table 4 with ``out``."""
    config = config or ModelRecallConfig()
    ranker = load_run_model(run_dir, tables or FeatureTables.from_dataset(ds))
    if not isinstance(ranker, Ranker):
        raise ValueError(f"{run_dir} is not a ranker run")
    ranker.eval()
    if ranker.uses_gsu_recency:
        logger.warning(
            "%s adds a recency bias to its GSU scores (--gsu-recency); recall here is of its content "
            "scores alone, which the retrieval methods approximate",
            run_dir,
        )
    keys = gsu_key_tables(ranker)
    lengths = np.diff(np.asarray(ds.offsets)) - 1
    eligible = np.flatnonzero(lengths >= max(config.min_length, max(config.ks)))
    if eligible.size == 0:
        raise NoLongHistories(
            f"no test user has a history of at least {max(config.min_length, max(config.ks))} behaviours "
            f"(longest: {int(lengths.max())}); lower min_length or the Ks"
        )
    users = eligible[np.argsort(-lengths[eligible], kind="stable")][: config.max_users]
    # PQ shapes whose sub-vectors do not divide this model's d cannot run; say which were left out
    usable = [m for m in config.methods if m not in PQ_METHODS or keys.dim % PQ_METHODS[m].n_sub == 0]
    dropped = [m for m in config.methods if m not in usable]
    recall = RecallConfig(
        ks=config.ks,
        methods=tuple(usable),
        dim=keys.dim,
        rerank_factor=config.rerank_factor,
        pq_iter=config.pq_iter,
        rqvae=config.rqvae,
        seed=config.seed,
        progress=config.progress,
    )
    # k-means needs at least as many rows as centroids; a small vocabulary is repeated (exact codes)
    largest = max([512, *(PQ_METHODS[m].n_centroids for m in usable if m in PQ_METHODS)])
    channel_tables = [pad_table_rows(t, largest) for t in keys.channel_tables()]
    train_s: dict[str, float] = {}
    suite = TrainedMethods(recall, channel_tables, Path(run_dir).name, train_s)
    gammas = np.full(keys.n_channels, 1.0 / keys.n_channels, dtype=np.float32)
    cases = _cases(ds, ranker, keys, users, config.negatives_per_user)
    bar = tqdm(cases, total=len(users), desc="model recall", disable=not config.progress)
    group = f"{Path(run_dir).name} ({ranker.config.model} GSU keys)"
    mean_length = round(float(lengths[users].mean()))
    scored = evaluate_methods(recall, suite, bar, gammas)
    rows = [{"group": group, "length": mean_length, **row} for row in scored]
    results: dict[str, Any] = {
        "config": {**asdict(replace(config, progress=False)), "run": str(run_dir)},
        "users": int(users.size),
        "history_length": {
            "mean": mean_length,
            "min": int(lengths[users].min()),
            "max": int(lengths[users].max()),
        },
        "rows": rows,
        "dropped_methods": dropped,
        "train_s": train_s,
    }
    if out is not None:
        write_outputs(results, Path(out))
    return results

