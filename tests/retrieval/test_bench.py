from __future__ import annotations

import argparse
import json

import pytest

from seminar.retrieval.bench import RecallConfig, run_recall_grid
from seminar.retrieval.cli import add_retrieval_commands

METHODS = ("lsh", "pq4x16_adc", "pq4x16_adc_rr")


def test_quick_grid_writes_table_json_png(tmp_path) -> None:
    config = RecallConfig.quick(
        out=str(tmp_path),
        methods=METHODS,
        groups=("diff_norm_same_weight",),
        lengths=(600,),
        ks=(8, 16),
        progress=False,
    )
    results = run_recall_grid(config)
    rows = results["rows"]
    assert {r["method"] for r in rows} == set(METHODS)
    assert all(0.0 <= r["recall"] <= 1.0 for r in rows)
    by = {(r["method"], r["k"]): r for r in rows}
    assert by[("pq4x16_adc", 8)]["bytes_per_behaviour"] == 32
    assert by[("pq4x16_adc_rr", 16)]["rerank"] == 64
    assert by[("pq4x16_adc_rr", 16)]["recall"] >= by[("pq4x16_adc", 16)]["recall"] - 0.1
    table = (tmp_path / "recall_table.md").read_text()
    assert "pq4x16_adc_rr" in table and "bytes/behaviour" in table
    assert json.loads((tmp_path / "results.json").read_text())["rows"] == rows
    assert (tmp_path / "recall.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_config_rejects_unknown_method() -> None:
    with pytest.raises(ValueError, match="unknown methods"):
        RecallConfig(methods=("nope",))


def test_cli_registers_commands(tmp_path) -> None:
    parser = argparse.ArgumentParser()
    add_retrieval_commands(parser.add_subparsers(dest="command"))
    args = parser.parse_args(
        [
            "retrieval",
            "bench",
            "--quick",
            "--out",
            str(tmp_path),
            "--lengths",
            "500,1000",
            "--ks",
            "8,16",
            "--methods",
            "lsh,pq_paper_adc",
        ]
    )
    assert args.lengths == (500, 1000) and args.ks == (8, 16) and args.methods == ("lsh", "pq_paper_adc")
    args = parser.parse_args(["retrieval", "speed", "--lengths", "1000"])
    assert args.lengths == (1000,) and callable(args.func)
    with pytest.raises(SystemExit):
        parser.parse_args(["retrieval", "bench", "--methods", "bogus"])
