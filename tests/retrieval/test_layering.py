"""Retrieval sits below the orchestration: loading a trained run must not import `seminar.experiment`.

Checked in a fresh interpreter, since this test session has long imported everything.
"""

from __future__ import annotations

import subprocess
import sys


def test_model_recall_does_not_import_experiment() -> None:
    code = (
        "import seminar.retrieval.model_recall, sys; "
        "print(sorted(m for m in sys.modules if m.startswith(('seminar.experiment', 'seminar.reproduce'))))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=300, check=False
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"


def test_experiment_keeps_re_exporting_the_run_loaders() -> None:
    from seminar import experiment
    from seminar.train import runs

    for name in ("MODEL_REGISTRY", "load_run_model", "run_max_length"):
        assert getattr(experiment, name) is getattr(runs, name)
