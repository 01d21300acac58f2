"""Exports: a round trip rebuilds the same model without the dataset; damaged exports are refused."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from seminar.cli import main
from seminar.experiment import load_run_model
from seminar.models.ranker import Ranker, RankerConfig
from seminar.retrieval.gsu import PQ_FILE, PQGsuConfig
from seminar.retrieval.pq import MultiModalPQ
from seminar.serving import ExportError, load_export, verify_export
from seminar.serving.bundle import FEATURES, MANIFEST, WEIGHTS
from seminar.serving.export import export_run
from seminar.train.checkpoint import save_checkpoint
from tests.serving.conftest import PQ, TOP_K, Trained


def copy_export(trained: Trained, tmp_path: Path) -> Path:
    target = tmp_path / "export"
    shutil.copytree(trained.export, target)
    return target


def test_round_trip_rebuilds_the_trained_model(trained: Trained) -> None:
    export = load_export(trained.export)
    manifest = export.manifest
    assert manifest["model"]["config"]["model"] == "seminar" and export.top_k == TOP_K
    assert export.rerank_factor == PQ.rerank_factor
    assert manifest["gsu"]["n_sub"] == PQ.n_sub and manifest["gsu"]["n_centroids"] == PQ.n_centroids
    assert set(manifest["files"]) == {
        WEIGHTS,
        FEATURES,
        PQ_FILE,
        *(f"ids/{n}.parquet" for n in ("users", "items", "queries")),
    }
    reference = load_run_model(trained.run, trained.tables)  # the run itself, GSU not replaced
    mine = export.ranker.state_dict()
    assert mine.keys() == reference.state_dict().keys()
    for name, value in reference.state_dict().items():
        assert torch.equal(mine[name], value), name
    assert reference.user_features is not None  # the synthetic users carry a profile
    assert torch.equal(export.ranker.user_attributes, reference.user_attributes)
    for name in ("query_content", "item_text_content", "item_image_content", "item_attributes"):
        if hasattr(reference.embedding, name):
            assert torch.equal(getattr(export.ranker.embedding, name), getattr(reference.embedding, name))
    saved = MultiModalPQ.load(trained.export / PQ_FILE)
    assert np.array_equal(export.pq.codebooks, saved.codebooks)
    ids, ds = export.ids, trained.ds
    assert (
        ids.users == trained.ids.users
        and ids.items == trained.ids.items
        and ids.queries == trained.ids.queries
    )
    assert (
        len(ids.users) == ds.n_users
        and len(ids.items) == ds.n_items + 1
        and len(ids.queries) == ds.n_queries + 1
    )


def test_tampered_or_unfinished_exports_are_refused(trained: Trained, tmp_path: Path) -> None:
    export = copy_export(trained, tmp_path)
    verify_export(export)
    features = export / FEATURES
    original = features.read_bytes()
    data = bytearray(original)
    data[-1] ^= 0xFF
    features.write_bytes(bytes(data))
    with pytest.raises(ExportError, match="sha256"):
        load_export(export)
    features.write_bytes(bytes(data[:-10]))
    with pytest.raises(ExportError, match="truncated"):
        load_export(export)
    features.write_bytes(original)
    verify_export(export)
    (export / PQ_FILE).unlink()
    with pytest.raises(ExportError, match="missing"):
        load_export(export)
    (export / MANIFEST).unlink()
    with pytest.raises(ExportError, match="never finished"):
        load_export(export)
    with pytest.raises(ExportError, match="no export"):
        load_export(tmp_path / "nowhere")


def test_a_manifest_cannot_point_outside_the_export(trained: Trained, tmp_path: Path) -> None:
    export = copy_export(trained, tmp_path)
    manifest = json.loads((export / MANIFEST).read_text())
    manifest["files"]["../elsewhere"] = {"sha256": "0", "bytes": 0}
    (export / MANIFEST).write_text(json.dumps(manifest))
    with pytest.raises(ExportError, match="not a path inside"):
        verify_export(export)
    manifest["version"] = 99
    (export / MANIFEST).write_text(json.dumps(manifest))
    with pytest.raises(ExportError, match="version 99"):
        verify_export(export)


def test_only_inner_product_gsus_are_exported(trained: Trained, tmp_path: Path) -> None:
    config = RankerConfig(model="eta", dim=16, heads=2, top_k=TOP_K)
    meta = {"model_class": "seminar.models.ranker.Ranker", "model_config": config.to_dict()}
    save_checkpoint(tmp_path / "eta" / "best", Ranker(trained.tables, config), {}, meta)
    with pytest.raises(ExportError, match="seminar, twin, sim_soft"):
        export_run(trained.ds, tmp_path / "eta", tmp_path / "out", PQ)
    assert not (tmp_path / "out").exists()
    with pytest.raises(ExportError, match="≤ 256"):
        export_run(trained.ds, trained.run, tmp_path / "out", PQGsuConfig(n_centroids=512))


def test_export_command(trained: Trained, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "cli-export"
    common = ["--data", str(trained.ds.root), "--run", str(trained.run), "--out", str(out)]
    options = ["--pq-sub", "4", "--pq-centroids", "16", "--pq-iter", "3", "--rerank-factor", "3"]
    assert main(["export", *common, *options]) == 0
    assert load_export(out).rerank_factor == 3
    assert main(["export", *common, *options]) == 2
    assert "--force" in capsys.readouterr().err
    assert main(["export", *common, *options, "--force"]) == 0
    assert main(["export", *common, "--pq-sub", "5"]) == 2  # 16 is not divisible by 5
    assert "divisible" in capsys.readouterr().err
    assert not list(tmp_path.glob(".cli-export.partial-*"))


def test_serve_command(
    trained: Trained, tmp_path: Path, monkeypatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import uvicorn

    calls: list[dict] = []
    monkeypatch.setattr(uvicorn, "run", lambda app, **kw: calls.append({"app": app, **kw}))
    assert main(["serve", str(trained.export), "--port", "8123", "--threads", "0"]) == 0
    assert calls[0]["port"] == 8123 and calls[0]["host"] == "127.0.0.1"
    assert calls[0]["app"].state.service.rerank_factor == PQ.rerank_factor
    assert main(["serve", str(tmp_path / "nowhere"), "--threads", "0"]) == 2
    assert "no export" in capsys.readouterr().err


def test_a_gsu_recency_run_keeps_its_bias_in_every_gsu(trained: Trained, tmp_path: Path) -> None:
    """Export keeps the recency bias of a run whose GSU adds it, and both serving GSUs and the PQ GSU
    of evaluation apply it (their selections are held equal to the ranker's in test_service and
    tests/retrieval/test_gsu.py)."""
    from seminar.experiment import finetune
    from seminar.retrieval.gsu import attach_pq_gsu
    from seminar.serving import ScoringService
    from seminar.train.trainer import TrainConfig

    run = tmp_path / "run"
    config = RankerConfig(model="twin", dim=16, heads=2, top_k=4, gsu_recency=True)
    train = TrainConfig(epochs=1, max_length=30, batch_size=64, positions_per_user=2, progress=False)
    finetune(trained.ds, run, config, train, tables=trained.tables)
    export = export_run(trained.ds, run, tmp_path / "export")
    for gsu in ("exact", "pq"):
        assert ScoringService.load(export, gsu=gsu).search.recency is not None
    ranker = load_run_model(run, trained.tables)
    attach_pq_gsu(ranker)
    assert ranker.uses_gsu_recency
