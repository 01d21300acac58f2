"""A whole tiny grid on the embedded MovieLens-100k: report files, resumption, re-runs, the CLI."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path
from typing import Any

import pytest
import yaml

from seminar.cli import main
from seminar.reproduce import grid as grid_module
from seminar.reproduce import run_reproduce
from seminar.reproduce.config import ConfigError, load_config

PNG = b"\x89PNG\r\n\x1a\n"


def tiny_config(cache: Path) -> dict[str, Any]:
    return {
        "name": "tiny",
        "datasets": [
            {
                "name": "ml-100k",
                "source": "ml-100k",
                # the 91 users with at least 250 behaviours keep every run to a second or two
                "build": {
                    "text_encoder": "hashing:16",
                    "negatives": 20,
                    "min_behaviours": 250,
                    "cache_dir": str(cache),
                },
            }
        ],
        "models": [
            {"name": "recency", "model": "recency"},
            {"name": "SEMINAR", "model": "seminar", "pretrain": "all"},
            {"name": "SEMINAR w/o pretraining", "model": "seminar"},
            {
                "name": "SEMINAR w/o user features",
                "model": "seminar",
                "pretrain": "all",
                "user_features": False,
                "tables": [2],
            },
        ],
        "seeds": [0, 1],
        "training": {
            "max_length": 10,
            "top_k": 4,
            "dim": 8,
            "heads": 2,
            "epochs": 1,
            "pretrain_epochs": 1,
            "positions_per_user": 1,
            "fusion_lambda": 0.5,
        },
        "sweeps": {
            "pretrain_epochs": [0, 1],  # both reuse grid runs
            "fusion_lambda": {"variant": "SEMINAR w/o pretraining", "values": [0.5, 0.9]},
        },
        "retrieval": {
            "preset": "quick",
            "lengths": [300],
            "ks": [4, 8],
            "groups": ["same_norm_same_weight", "diff_norm_same_weight"],
            "methods": ["lsh", "pq4x16_adc"],
            "table_size": 600,
            "n_targets": 2,
        },
        "report": {"model_recall_users": 4, "model_recall_min_length": 100, "model_recall_ks": [4, 8]},
    }


@pytest.fixture(scope="module")
def grid(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, dict[str, Any]]:
    """The tiny grid run once; tests that change its folder put it back."""
    root = tmp_path_factory.mktemp("reproduce")
    path = root / "tiny.yaml"
    path.write_text(yaml.safe_dump(tiny_config(root / "vector-cache")))
    out = root / "out"
    results = run_reproduce(path, out, progress=False)
    return path, out, results


def cell_files(out: Path) -> dict[Path, int]:
    return {p: p.stat().st_mtime_ns for p in sorted((out / "cells").rglob("*.json"))}


def forbid_training(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("a finished cell was trained or evaluated again")

    for name in ("pretrain", "finetune", "evaluate_run", "prepare"):
        monkeypatch.setattr(grid_module, name, refuse)


def record_finetune(monkeypatch: pytest.MonkeyPatch) -> list[tuple[tuple[Any, ...], dict[str, Any]]]:
    """Every call of the grid's finetune (its arguments), which still runs."""
    calls: list[tuple[tuple[Any, ...], dict[str, Any]]] = []
    real = grid_module.finetune

    def spy(*args: Any, **kwargs: Any) -> Any:
        calls.append((args, kwargs))
        return real(*args, **kwargs)

    monkeypatch.setattr(grid_module, "finetune", spy)
    return calls


def test_report_folder_has_tables_figures_and_numbers(grid: tuple[Path, Path, dict[str, Any]]) -> None:
    _, out, results = grid
    for name in ("table2.md", "table3.md", "results.json", "README.md"):
        assert (out / name).is_file(), name
    for name in ("figure2_recall.png", "figure3_pretrain_epochs.png", "figure4_fusion_lambda.png"):
        assert (out / name).read_bytes()[:8] == PNG, name
    readme = (out / "README.md").read_text()
    links = re.findall(r"\]\(([^)#]+)\)", readme)
    assert {
        "table2.md",
        "table3.md",
        "results.json",
        "figure2_recall.png",
        "figure4_fusion_lambda.png",
    } <= set(links)
    assert all((out / link).is_file() for link in links), links
    assert results == json.loads((out / "results.json").read_text())
    assert results["missing"] == []
    # main grid 4 variants + 2 pretraining-epoch points + 2 λ points, for 2 seeds
    assert len(results["cells"]) == 2 * (4 + 2 + 2)

    rows = results["table2"]["ml-100k"]["search"]
    assert [r["model"] for r in rows] == ["recency", "SEMINAR", "SEMINAR w/o user features"]
    assert [r["model"] for r in results["table3"]["ml-100k"]["recommendation"]] == [
        "SEMINAR",
        "SEMINAR w/o pretraining",
    ]
    recency = [c["metrics"]["search"]["ndcg@10"] for c in results["cells"] if c["variant"] == "recency"]
    assert rows[0]["seeds"] == 2
    assert rows[0]["metrics"]["ndcg@10"]["mean"] == pytest.approx(sum(recency) / 2)
    assert rows[0]["metrics"]["ndcg@10"]["std"] == pytest.approx(abs(recency[0] - recency[1]) / 2)
    assert f"{rows[0]['metrics']['ndcg@10']['mean']:.4f} ± " in (out / "table2.md").read_text()
    points = results["sweeps"]["fusion_lambda"]["points"]["ml-100k"]["recommendation"]
    assert [p["value"] for p in points] == [0.5, 0.9] and all(p["seeds"] == 2 for p in points)
    assert {r["group"] for r in results["retrieval"]["rows"]} == {
        "same_norm_same_weight",
        "diff_norm_same_weight",
    }
    table4 = results["table4"]
    seminars = ["SEMINAR", "SEMINAR w/o pretraining", "SEMINAR w/o user features"]
    assert [c["variant"] for c in table4] == seminars
    assert all(c["users"] == 4 and c["rows"] for c in table4)
    assert all(0.0 <= r["recall"] <= 1.0 for c in table4 for r in c["rows"])
    assert "pq8x32_adc" in table4[0]["dropped_methods"]  # 32 sub-vectors do not divide d=8
    assert "pq_paper_adc_rr" in (out / "table4.md").read_text()


def test_equal_runs_are_trained_once(grid: tuple[Path, Path, dict[str, Any]]) -> None:
    _, out, results = grid
    runs = sorted(p.parent.name for p in (out / "runs").rglob("seed0"))
    # recency, SEMINAR (with and without user features), SEMINAR w/o pretraining, and the λ = 0.9
    # run; the epoch sweep reuses them, and both SEMINARs start from one pretrained PSU
    assert len(runs) == 5 and "seminar-psu-all-e1-lambda0.5-no-user-features" in runs
    assert len(list((out / "psu").rglob("seed0"))) == 1
    cells = results["cells"]

    def ndcg(**match: Any) -> float:
        (found,) = [c for c in cells if all(c[k] == v for k, v in match.items()) and c["seed"] == 0]
        return found["metrics"]["recommendation"]["ndcg@10"]

    assert ndcg(sweep="pretrain_epochs", value=0) == ndcg(variant="SEMINAR w/o pretraining", sweep=None)
    assert ndcg(sweep="pretrain_epochs", value=1) == ndcg(variant="SEMINAR", sweep=None)


def test_rerun_skips_every_finished_cell(
    grid: tuple[Path, Path, dict[str, Any]], monkeypatch: pytest.MonkeyPatch
) -> None:
    path, out, results = grid
    before = cell_files(out)
    forbid_training(monkeypatch)
    monkeypatch.setattr("seminar.retrieval.bench.run_recall_grid", lambda *a, **k: pytest.fail("re-ran"))
    again = run_reproduce(path, out, progress=False)
    assert cell_files(out) == before
    assert again["table2"] == results["table2"] and again["cells"] == results["cells"]


def test_lost_cell_resumes_its_run_from_last(
    grid: tuple[Path, Path, dict[str, Any]], monkeypatch: pytest.MonkeyPatch
) -> None:
    path, out, _ = grid
    cell = next((out / "cells" / "ml-100k").glob("recency-*/seed0.json"))
    saved = json.loads(cell.read_text())
    cell.unlink()
    calls = record_finetune(monkeypatch)
    monkeypatch.setattr(grid_module, "pretrain", lambda *a, **k: pytest.fail("pretrained again"))
    run_reproduce(path, out, seeds=[0], retrieval=False, progress=False)
    assert [kwargs["resume"] for _, kwargs in calls] == [True]  # from last/, already at the final epoch
    assert json.loads(cell.read_text())["metrics"] == saved["metrics"]


def test_only_models_runs_the_named_rows_alone(
    grid: tuple[Path, Path, dict[str, Any]], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    path, out, _ = grid
    cell = next((out / "cells" / "ml-100k").glob("recency-*/seed1.json"))
    saved = cell.read_bytes()
    cell.unlink()
    calls = record_finetune(monkeypatch)
    monkeypatch.setattr(grid_module, "pretrain", lambda *a, **k: pytest.fail("pretrained again"))
    results = run_reproduce(path, out, only_models=["SEMINAR"], retrieval=False, progress=False)
    assert calls == [] and not cell.exists()  # the lost recency cell belongs to another row
    assert results["missing"] == ["ml-100k | recency | seed 1"]
    run_reproduce(path, out, only_models=["recency"], seeds=[1], retrieval=False, progress=False)
    assert [args[2].model for args, _ in calls] == ["recency"] and cell.exists()
    assert json.loads(cell.read_bytes())["metrics"] == json.loads(saved)["metrics"]
    assert main(["reproduce", str(path), "--out", str(out), "--only-models", "SEMINAR", "TWIN"]) == 2
    assert "unknown model row(s) ['TWIN']" in capsys.readouterr().err


def test_changed_settings_stop_before_any_training(
    grid: tuple[Path, Path, dict[str, Any]], monkeypatch: pytest.MonkeyPatch
) -> None:
    path, out, _ = grid
    config = load_config(path)
    config.training.dropout = 0.5
    forbid_training(monkeypatch)
    with pytest.raises(ConfigError, match=r"other settings \(training.dropout: 0.2 -> 0.5\)"):
        run_reproduce(config, out, progress=False)
    config = load_config(path)
    config.training.patience = 1  # lowered: the runs may have gone further than it allows
    with pytest.raises(ConfigError, match=r"training.patience: 3 -> 1"):
        run_reproduce(config, out, progress=False)


def test_more_epochs_continue_the_finished_runs(
    grid: tuple[Path, Path, dict[str, Any]], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Raised epochs (or patience) continue every run they let go on from its last checkpoint, as
    `train --resume` does, and refresh its cells (a run whose folder is gone is trained again); a
    raise that lets no run go on trains nothing; lowered, they are refused."""
    path, out, results = grid
    copy = tmp_path / "out"
    shutil.copytree(out, copy)
    shutil.rmtree(next((copy / "runs" / "ml-100k").glob("recency-*")) / "seed1")
    config = load_config(path)
    config.training.epochs = 2
    calls = record_finetune(monkeypatch)
    again = run_reproduce(config, copy, retrieval=False, progress=False)
    resumed = [kwargs["resume"] for _, kwargs in calls]
    runs = sorted((copy / "runs" / "ml-100k").glob("*/seed*"))
    assert len(resumed) == len(runs) and resumed.count(False) == 1  # all but the lost run from last/
    for run in runs:
        lines = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
        assert [r["epoch"] for r in lines if r["stage"] == "epoch"] == [1, 2], run
    assert not again["missing"] and len(again["cells"]) == len(results["cells"])
    for cell in (copy / "cells").rglob("seed*.json"):
        assert json.loads(cell.read_text())["settings"]["training"]["epochs"] == 2
    config.training.patience = 10  # every run is at its epoch cap: nothing goes on
    forbid_training(monkeypatch)
    run_reproduce(config, copy, retrieval=False, progress=False)
    config.training.epochs = 1
    with pytest.raises(ConfigError, match=r"training.epochs: 2 -> 1"):
        run_reproduce(config, copy, retrieval=False, progress=False)


def test_cli_rerun_and_restrictions(
    grid: tuple[Path, Path, dict[str, Any]], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    path, out, _ = grid
    forbid_training(monkeypatch)
    assert main(["reproduce", str(path), "--out", str(out), "--quiet", "--seeds", "1"]) == 0
    assert f"report: {out / 'README.md'} (16 finished cells)" in capsys.readouterr().out
    assert main(["reproduce", str(path), "--out", str(out), "--only-datasets", "kuaisar"]) == 2
    assert "unknown dataset(s) ['kuaisar']" in capsys.readouterr().err


def test_cli_exit_code_2_on_a_bad_config(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("datasets: [{name: d, source: ml-100k}]\nmodels: [{name: x, model: gru4rec}]\n")
    assert main(["reproduce", str(bad), "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert "models[0].model: unknown model 'gru4rec'" in err
    assert not (tmp_path / "out").exists()


def test_cli_exit_code_2_on_missing_data_files(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    config = {
        "datasets": [
            {"name": "kuaisar", "source": "kuaisar", "options": {"directory": str(tmp_path / "nope")}}
        ],
        "models": [{"name": "TWIN", "model": "twin"}],
    }
    path = tmp_path / "kuaisar.yaml"
    path.write_text(yaml.safe_dump(config))
    assert main(["reproduce", str(path), "--out", str(tmp_path / "out"), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "missing input files" in err and str(tmp_path / "nope") in err
    assert not (tmp_path / "out").exists()


def test_foreign_run_folder_is_not_overwritten(tmp_path: Path) -> None:
    """A run folder not written by reproduce (no settings marker) is refused, never trained into."""
    root = tmp_path / "grid"
    config = tiny_config(tmp_path / "cache")
    config.update(models=[{"name": "recency", "model": "recency"}], seeds=[0], sweeps={}, retrieval=None)
    foreign = root / "runs" / "ml-100k" / "recency-scratch-lambda0.5" / "seed0"
    foreign.mkdir(parents=True)
    (foreign / "notes.txt").write_text("mine")
    with pytest.raises(ConfigError, match="not written by `seminar reproduce`"):
        run_reproduce(config, root, progress=False)
    assert (foreign / "notes.txt").read_text() == "mine"


def test_a_new_test_mode_is_evaluated_without_training(
    grid: tuple[Path, Path, dict[str, Any]], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Runs last: it adds the pair mode to the seed-1 cells of the shared grid."""
    path, out, _ = grid
    config = load_config(path)
    config.modes = ["recommendation", "search", "pair"]
    for name in ("pretrain", "finetune"):
        monkeypatch.setattr(grid_module, name, lambda *a, **k: pytest.fail("trained again"))
    results = run_reproduce(config, out, seeds=[1], retrieval=False, progress=False)
    seed1 = [c for c in results["cells"] if c["seed"] == 1]
    assert seed1 and all(set(c["metrics"]) == {"recommendation", "search", "pair"} for c in seed1)
    assert results["table2"]["ml-100k"]["pair"][0]["seeds"] == 1  # seed 0 has no pair numbers yet


def run_one_row(tmp_path: Path, row: dict) -> tuple[dict, Path]:
    """The tiny grid with only ``row`` on seed 0 and no sweeps: its one cell and the report folder."""
    data = tiny_config(tmp_path / "vector-cache")
    data["models"] = [row]
    data["seeds"] = [0]
    data.pop("sweeps")
    path = tmp_path / "one-row.yaml"
    path.write_text(yaml.safe_dump(data))
    out = tmp_path / "out"
    results = run_reproduce(path, out, retrieval=False, progress=False)
    (cell,) = results["cells"]
    return cell, out


def test_a_variant_with_its_own_window_trains_and_evaluates_at_it(tmp_path: Path) -> None:
    cell, out = run_one_row(tmp_path, {"name": "SASRec (last 6)", "model": "sasrec", "max_length": 6})
    assert cell["run"].endswith("sasrec-scratch-lambda0.5-L6/seed0")
    assert json.loads((out / cell["run"] / "settings.json").read_text())["max_length"] == 6
    assert "SASRec (last 6): its own window L=6" in (out / "README.md").read_text()


def test_a_row_without_user_ids_trains_without_them(tmp_path: Path) -> None:
    """``user_id: false`` on a row reaches the run: its settings and the ranker it saves."""
    cell, out = run_one_row(tmp_path, {"name": "TWIN w/o user id", "model": "twin", "user_id": False})
    run = out / cell["run"]
    assert cell["run"].endswith("twin-scratch-lambda0.5-no-user-id/seed0")
    assert json.loads((run / "settings.json").read_text())["user_id"] is False
    assert json.loads((run / "best" / "config.json").read_text())["model_config"]["user_id"] is False


def test_a_run_claimed_by_another_process_is_left_to_it(tmp_path: Path) -> None:
    from seminar.io import try_lock
    from seminar.reproduce.cells import Layout, plan_cells
    from seminar.reproduce.grid import GridRunner

    data = tiny_config(tmp_path / "vector-cache")
    data["models"], data["seeds"] = [{"name": "recency", "model": "recency"}], [0]
    data.pop("sweeps")
    config = load_config(data)
    layout = Layout(tmp_path / "out")
    cells = plan_cells(config)
    runner = GridRunner(config, layout, progress=False)
    with try_lock(layout.run_lock(cells[0].spec)) as ours:
        assert ours
        with try_lock(layout.run_lock(cells[0].spec)) as again:
            assert not again  # a second claim on the same run (another process's) fails
        assert runner.run(cells) == 0
        assert not layout.cell_file(cells[0].spec).exists()
    assert runner.run(cells) == 1  # released: this process runs it
    assert runner.run(cells) == 0  # and it is finished


def test_two_jobs_share_the_grid_and_train_each_run_once(tmp_path: Path) -> None:
    data = tiny_config(tmp_path / "vector-cache")
    models = data["models"]
    data["models"] = [models[0], models[1], models[3]]  # recency and two SEMINAR rows sharing a PSU
    data["seeds"] = [0]
    data.pop("sweeps")
    path = tmp_path / "jobs.yaml"
    path.write_text(yaml.safe_dump(data))
    out = tmp_path / "out"
    results = run_reproduce(path, out, retrieval=False, progress=False, jobs=2)
    assert len(results["cells"]) == 3 and not results["missing"]
    assert len(list((out / "psu").rglob("metrics.jsonl"))) == 1  # one PSU for both rows
    for metrics in (out / "runs").rglob("metrics.jsonl"):
        epochs = [json.loads(line) for line in metrics.read_text().splitlines()]
        assert [e["epoch"] for e in epochs if e.get("stage") == "epoch"] == [1], metrics  # trained once
    for metrics in (out / "psu").rglob("metrics.jsonl"):
        assert sum('"stage": "epoch"' in line for line in metrics.read_text().splitlines()) == 1
