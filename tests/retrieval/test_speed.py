"""The speed benchmark on a tiny configuration: every path runs and is reported (no time is asserted)."""

from __future__ import annotations

from seminar.retrieval.speed import SpeedConfig, run_speed, speed_table, time_calls


def test_time_calls_reports_every_function() -> None:
    calls = {"a": 0, "b": 0}

    def bump(name: str) -> None:
        calls[name] += 1

    timed = time_calls({"a": lambda: bump("a"), "b": lambda: bump("b")}, 0.001, 20, rounds=2)
    assert set(timed) == {"a", "b"} and all(med >= 0 and best >= 0 for med, best in timed.values())
    assert calls["a"] >= 5 and calls["b"] >= 5  # warm-up plus at least one call per round


def test_run_speed_tiny(tmp_path) -> None:
    config = SpeedConfig(
        lengths=(300,),
        k=10,
        n_channels=2,
        dim=64,  # the plain-faiss rows use 32-byte codes, so d must hold 64 sub-quantizers
        pq_shapes=((4, 16), (2, 32)),
        cpu_batch=2,
        table_size=400,
        min_time_s=0.001,
        max_repeats=2,
        rounds=1,
        out=str(tmp_path),
    )
    results = run_speed(config)
    methods = [r["method"] for r in results["rows"] if r["section"] == "cpu_single"]
    assert "exact fp32 (M channels)" in methods
    assert "pq4x16 fastscan (ours, full path: search)" in methods
    assert "pq4x16 faiss IndexPQFastScan kernel alone (top-k)" in methods
    assert any(m.startswith("pq4x16 faiss IndexRefine call") for m in methods)
    assert "pq2x32 faiss IndexPQ kernel alone (top-k)" in methods
    assert "faiss IndexPQFastScan on pre-merged vectors" in methods
    assert all(r["speedup_vs_exact"] > 0 for r in results["rows"] if r["section"] == "cpu_single")
    assert any(r["section"] == "cpu_batched" for r in results["rows"])
    table = speed_table(results)
    assert "µs best round" in table and (tmp_path / "speed.md").read_text() == table
    assert (tmp_path / "speed.json").exists()
