"""One tiny trained ranker and its export, shared by the serving tests (training is the slow part)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch

from seminar.data.schema import SeminarDataset
from seminar.experiment import finetune, load_run_model
from seminar.models.features import FeatureTables
from seminar.models.ranker import Ranker, RankerConfig
from seminar.retrieval.gsu import PQ_FILE, PQGsuConfig, attach_pq_gsu
from seminar.retrieval.pq import MultiModalPQ
from seminar.serving.export import export_run
from seminar.serving.ids import IdMaps
from seminar.train.trainer import TrainConfig
from tests.data.helpers import synthetic_dataset

TOP_K = 4
RERANK = 2
# the paper's per-channel codes (per-id code tables); test_service covers the fused default on its own
PQ = PQGsuConfig(n_sub=4, n_centroids=16, n_iter=5, rerank_factor=RERANK, layout="channels")


@dataclass
class Trained:
    ds: SeminarDataset
    tables: FeatureTables
    run: Path
    export: Path
    ids: IdMaps


@pytest.fixture(scope="session")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Trained:
    root = tmp_path_factory.mktemp("serving")
    ds = synthetic_dataset(root / "data", users=20, items=150, mean_length=40)
    tables = FeatureTables.from_dataset(ds)
    train = TrainConfig(epochs=1, max_length=30, batch_size=64, positions_per_user=2, progress=False)
    config = RankerConfig(model="seminar", dim=16, heads=2, top_k=TOP_K)
    finetune(ds, root / "run", config, train, tables=tables)
    export = export_run(ds, root / "run", root / "export", PQ)
    return Trained(ds, tables, root / "run", export, IdMaps.from_dataset(ds))


_REFERENCES: dict[tuple[Path, int, int | None], Ranker] = {}  # by export: its quantizer is the GSU


def reference_ranker(trained: Trained, k: int = TOP_K, rerank: int | None = RERANK) -> Ranker:
    """The plain path: the run's own ranker with its K set to ``k``, and with the exported quantizer
    attached as its GSU (re-ranking ``rerank`` · K), or its own exact GSU when ``rerank`` is None."""
    key = (trained.export, k, rerank)
    if key not in _REFERENCES:
        ranker = load_run_model(trained.run, trained.tables)
        assert isinstance(ranker, Ranker)
        ranker.config.top_k = k
        if rerank is not None:
            pq = MultiModalPQ.load(trained.export / PQ_FILE)
            attach_pq_gsu(ranker, PQGsuConfig(rerank_factor=rerank), pq=pq)
        _REFERENCES[key] = ranker
    return _REFERENCES[key]


def reference_batch(
    user: int,
    items: np.ndarray,
    queries: np.ndarray,
    timestamps: np.ndarray,
    targets: np.ndarray,
    target_query: int,
    now: int,
) -> dict[str, torch.Tensor]:
    """One batch row holding the user's whole history (no window) and C candidates under one query."""
    n = items.shape[0]
    return {
        "user": torch.tensor([user]),
        "hist_items": torch.from_numpy(items.astype(np.int64))[None],
        "hist_queries": torch.from_numpy(queries.astype(np.int64))[None],
        "hist_timestamps": torch.from_numpy(timestamps.astype(np.int64))[None],
        "mask": torch.ones((1, n), dtype=torch.bool),
        "target_timestamps": torch.tensor([now]),
        "cand_items": torch.from_numpy(targets.astype(np.int64))[None],
        "cand_queries": torch.full((1, targets.shape[0]), target_query, dtype=torch.long),
    }


@torch.no_grad()
def reference_positions(ranker: Ranker, batch: dict[str, torch.Tensor]) -> np.ndarray:
    """The positions [C, K] (sorted) the ranker's own GSU keeps for each candidate."""
    inputs = ranker._search_inputs(batch, batch["cand_items"], batch["cand_queries"])
    indices, _ = ranker._select(inputs, None)
    return np.sort(indices[0].numpy(), axis=1)
