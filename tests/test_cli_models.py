"""`seminar pretrain`, `train`, `evaluate` end to end on a tiny synthetic dataset."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from seminar.cli import main
from seminar.data.schema import load_dataset
from seminar.retrieval.gsu import PQGsuConfig
from seminar.serving.export import export_run
from seminar.settings import ExperimentSettings
from seminar.train.trainer import read_jsonl

TINY = ["--epochs", "1", "--max-length", "12", "--dim", "16", "--heads", "2", "--batch-size", "64", "--quiet"]


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("cli-models") / "data"
    code = main(
        [
            "prepare",
            "synthetic",
            "--users",
            "40",
            "--items",
            "300",
            "--mean-length",
            "20",
            "--negatives",
            "20",
            "--out",
            str(out),
            "--quiet",
        ]
    )
    assert code == 0
    return out


def test_pretrain_then_train_from_it_then_evaluate(
    data: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    assert main(["pretrain", "--data", str(data), "--out", str(tmp_path / "psu"), *TINY]) == 0
    assert (tmp_path / "psu" / "best" / "COMPLETE").is_file()
    code = main(
        [
            "train",
            "--data",
            str(data),
            "--out",
            str(tmp_path / "sem"),
            "--model",
            "seminar",
            "--top-k",
            "4",
            "--pretrained",
            str(tmp_path / "psu"),
            *TINY,
        ]
    )
    assert code == 0
    records = read_jsonl(tmp_path / "sem" / "metrics.jsonl")
    assert any(r.get("stage") == "test" for r in records)
    # each run records the settings its flags gave; an export carries them
    psu_settings, sem_settings = (
        ExperimentSettings.read(tmp_path / "psu"),
        ExperimentSettings.read(tmp_path / "sem"),
    )
    assert psu_settings is not None and psu_settings.pretrain_epochs == 1 and psu_settings.dim == 16
    assert sem_settings is not None and (sem_settings.top_k, sem_settings.max_length) == (4, 12)
    export = export_run(
        load_dataset(data), tmp_path / "sem", tmp_path / "export", PQGsuConfig(n_sub=4, n_centroids=16)
    )
    manifest = json.loads((export / "manifest.json").read_text())
    assert manifest["settings"]["top_k"] == 4
    capsys.readouterr()
    assert (
        main(
            [
                "evaluate",
                "--data",
                str(data),
                "--run",
                str(tmp_path / "sem"),
                "--max-length",
                "12",
                "--modes",
                "recommendation",
                "pair",
                "--json",
                "--quiet",
            ]
        )
        == 0
    )
    rows = json.loads(capsys.readouterr().out)
    assert [r["mode"] for r in rows] == ["recommendation", "pair"]
    assert all(0.0 <= r["ndcg@10"] <= r["hr@10"] <= 1.0 for r in rows)

    # The PQ GSU with a shortlist covering the whole window re-ranks exactly: same metrics.
    pq_args = ["--pq-sub", "4", "--pq-centroids", "16", "--pq-rerank", "100"]
    evaluate = ["evaluate", "--data", str(data), "--run", str(tmp_path / "sem"), "--max-length", "12"]
    assert main([*evaluate, "--modes", "search", "--gsu", "exact", "pq", *pq_args, "--json", "--quiet"]) == 0
    exact, pq = json.loads(capsys.readouterr().out)
    assert (exact["gsu"], pq["gsu"]) == ("exact", "pq")
    assert pq["ndcg@10"] == pytest.approx(exact["ndcg@10"], abs=1e-6)
    assert (tmp_path / "sem" / "gsu_pq.safetensors").is_file()


def test_pretraining_ablation_switches(data: Path, tmp_path: Path) -> None:
    assert (
        main(
            [
                "pretrain",
                "--data",
                str(data),
                "--out",
                str(tmp_path / "p"),
                "--no-align",
                "--no-relevance",
                *TINY,
            ]
        )
        == 0
    )
    config = json.loads((tmp_path / "p" / "best" / "config.json").read_text())
    assert config["model_config"]["align"] is False and config["model_config"]["next_pair"] is True


def test_mismatched_pretraining_is_refused(data: Path, tmp_path: Path) -> None:
    assert main(["pretrain", "--data", str(data), "--out", str(tmp_path / "psu"), *TINY]) == 0
    args = [
        "train",
        "--data",
        str(data),
        "--out",
        str(tmp_path / "r"),
        "--pretrained",
        str(tmp_path / "psu"),
        *TINY,
        "--dim",
        "8",
    ]
    with pytest.raises(ValueError, match="dim"):
        main(args)


@pytest.mark.parametrize("model", ["sim_hard", "eta", "qin"])
def test_baselines_train_from_the_cli(data: Path, tmp_path: Path, model: str) -> None:
    assert (
        main(
            [
                "train",
                "--data",
                str(data),
                "--out",
                str(tmp_path / model),
                "--model",
                model,
                "--top-k",
                "4",
                *TINY,
            ]
        )
        == 0
    )


def test_resume_continues_a_run(data: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    run = [
        "train",
        "--data",
        str(data),
        "--out",
        str(tmp_path / "r"),
        "--model",
        "twin",
        "--top-k",
        "4",
        *TINY,
    ]
    assert main(run) == 0
    assert main(run) == 2  # the run exists: a clear error, not an overwrite
    resumed = [*run, "--resume"]
    resumed[resumed.index("--epochs") + 1] = "2"
    assert main(resumed) == 0
    epochs = [r["epoch"] for r in read_jsonl(tmp_path / "r" / "metrics.jsonl") if r.get("stage") == "epoch"]
    assert epochs == [1, 2]
    changed = [*resumed, "--no-user-features"]  # another model: refused, with the reason
    assert main(changed) == 2
    assert "model user_features: True -> False" in capsys.readouterr().err
    assert main([*run[:4], str(tmp_path / "none"), *run[5:], "--resume"]) == 2  # nothing to resume
    assert "no checkpoint" in capsys.readouterr().err


@pytest.mark.parametrize("model", ["popularity", "itemknn", "sasrec"])
def test_reference_rankers_train_and_evaluate_from_the_cli(
    data: Path, tmp_path: Path, model: str, capsys: pytest.CaptureFixture
) -> None:
    run = tmp_path / model
    assert main(["train", "--data", str(data), "--out", str(run), "--model", model, *TINY]) == 0
    assert (run / "best" / "COMPLETE").is_file()
    trained = [r for r in read_jsonl(run / "metrics.jsonl") if r.get("stage") == "test"]
    assert len(trained) == 1 and trained[0]["metrics"]["users"] == 40
    capsys.readouterr()
    code = main(
        ["evaluate", "--data", str(data), "--run", str(run), "--modes", "recommendation", "--json", "--quiet"]
    )
    assert code == 0
    (row,) = json.loads(capsys.readouterr().out)
    # the run reloads to the very model that was tested when it was trained (fitted tables included)
    assert row["ndcg@10"] == pytest.approx(trained[0]["metrics"]["ndcg@10"])
    # popularity and item-kNN are fitted, not trained: resuming the finished run trains nothing
    if model != "sasrec":
        assert (
            main(["train", "--data", str(data), "--out", str(run), "--model", model, "--resume", *TINY]) == 0
        )
