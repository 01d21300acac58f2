"""benchmarks/infonce.py at a tiny size runs, times both forms and finds the same loss in each."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_infonce_benchmark_prints_both_forms_with_one_loss() -> None:
    out = subprocess.run(
        [
            sys.executable,
            str(ROOT / "benchmarks" / "infonce.py"),
            "--groups",
            "6",
            "--size",
            "16",
            "--rounds",
            "1",
        ],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert out.returncode == 0, out.stderr
    losses = re.findall(r"loss (\d+\.\d+)", out.stdout)
    assert len(losses) == 2 and abs(float(losses[0]) - float(losses[1])) < 1e-4, out.stdout
    assert "plain (logsumexp, autograd)" in out.stdout and "shared exponential" in out.stdout
