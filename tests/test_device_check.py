"""The prepared GPU check's dry run: every step recorded, the CPU-possible ones succeed, and the
figure steps import without faiss or polars (the GPU machine has neither)."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
STEPS = ["env", "train_throughput", "retrieval", "cuda_tests", "triton_tests", "ddp"]
STATUSES = {"ok", "failed", "timeout", "skipped"}


def dry_run(out: Path, *args: str, pythonpath: str | None = None) -> dict[str, Any]:
    """benchmarks/device_check.sh --dry-run with this interpreter; the JSON it wrote."""
    env = {**os.environ, "PYTHON": sys.executable, "OUT": str(out), "OMP_NUM_THREADS": "1"}
    env.pop("PYTHONPATH", None)
    if pythonpath is not None:
        env["PYTHONPATH"] = pythonpath
    cmd = ["bash", str(ROOT / "benchmarks" / "device_check.sh"), "--dry-run", *args]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return json.loads((out / "device_check.json").read_text())


def failures(summary: dict[str, Any]) -> str:
    """The records of steps that did not succeed, for the assertion message."""
    bad = {k: v for k, v in summary["steps"].items() if v["status"] != "ok"}
    return json.dumps(bad, indent=1)[-4000:]


def has_test_modules() -> bool:
    return all(importlib.util.find_spec(m) is not None for m in ("faiss", "polars"))


def test_dry_run_records_every_step(tmp_path: Path) -> None:
    summary = dry_run(tmp_path)
    steps = summary["steps"]
    assert summary["dry_run"] is True and list(steps) == STEPS
    assert all(record["status"] in STATUSES and record["seconds"] >= 0 for record in steps.values())
    expected_ok = STEPS if has_test_modules() else ["env", "train_throughput", "retrieval", "ddp"]
    assert all(steps[name]["status"] == "ok" for name in expected_ok), failures(summary)

    rows = steps["train_throughput"]["result"]["rows"]
    assert {(r["model"], r["path"]) for r in rows} >= {
        ("twin", "many"),
        ("seminar", "many"),
        ("sasrec", "many"),
    }
    assert all(r["targets_per_s"] > 0 for r in rows)
    retrieval = steps["retrieval"]["result"]
    assert {"torch_adc", "exact_fused_bf16"} <= set(retrieval["methods"])
    assert all(row["ms"] > 0 for row in retrieval["methods"].values())
    assert all(check["agree"] for check in retrieval["checks"].values())
    assert steps["ddp"]["result"]["weights_equal"] and steps["ddp"]["result"]["world_size"] == 2
    if has_test_modules():
        assert steps["cuda_tests"]["tests"]["skipped"] >= 1  # no CUDA here: collected, then skipped
        if importlib.util.find_spec("triton") is not None:
            assert steps["triton_tests"]["tests"]["passed"] >= 1  # interpreted on CPU

    assert len(summary["targets"]) == 4 and all(t["met"] is None for t in summary["targets"])
    markdown = (tmp_path / "device_check.md").read_text()
    assert all(f"| {name} | {steps[name]['status']} |" in markdown for name in STEPS)
    assert (tmp_path / "device_check.log").stat().st_size > 0


def test_figure_steps_import_without_faiss_or_polars(tmp_path: Path) -> None:
    blocked = tmp_path / "blocked"
    blocked.mkdir()
    for name in ("faiss", "polars"):
        (blocked / f"{name}.py").write_text(f"raise ImportError('{name} is blocked for this test')\n")
    summary = dry_run(tmp_path / "out", "--only", "retrieval", "ddp", "cuda_tests", pythonpath=str(blocked))
    steps = summary["steps"]
    assert steps["env"]["result"]["modules"]["faiss"] is None
    assert steps["env"]["result"]["modules"]["polars"] is None
    assert steps["retrieval"]["status"] == "ok" and steps["ddp"]["status"] == "ok", failures(summary)
    assert steps["cuda_tests"]["status"] == "skipped" and "faiss, polars" in steps["cuda_tests"]["reason"]
