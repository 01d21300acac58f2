"""benchmarks/gsu_codes.py at a tiny size: the exact row recalls everything, every recall is a
fraction, and an exact re-rank of a shortlist never loses what the shortlist's top-K had."""

from __future__ import annotations

import importlib.util
import sys
import warnings
from pathlib import Path

import pytest

pytest.importorskip("faiss")
ROOT = Path(__file__).resolve().parents[1]


def load_benchmark():
    spec = importlib.util.spec_from_file_location("gsu_codes", ROOT / "benchmarks" / "gsu_codes.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["gsu_codes"] = module
    spec.loader.exec_module(module)
    return module


def test_gsu_codes_recalls_are_consistent():
    bench = load_benchmark()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        rows = bench.run(
            length=400, targets=12, k=10, seed=3, dim=32, topics=8, train_size=1024, factors=(4, 16)
        )
    by_name = {row["method"]: row for row in rows}
    assert by_name["exact fused fp32"]["recall"] == 1.0
    assert by_name["exact fused fp32"]["recall_rerank"] == 1.0
    for row in rows:
        assert 0.0 <= row["recall"] <= row["recall_rerank"] <= 1.0, row
        # a longer shortlist re-ranked exactly never recalls less
        assert row["recall_rerank"] == row["recall_rerank_4"] <= row["recall_rerank_16"], row
    assert {row["bytes"] for row in rows if row["method"].startswith("fused PQ 32")} == {16, 32}
