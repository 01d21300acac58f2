"""Every raw format through `seminar prepare` into a loadable dataset, as a user would run it."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from seminar.cli import main
from seminar.data.loader import EvalSamples, TrainSamples, WindowConfig
from seminar.data.schema import EMPTY_QUERY, load_dataset
from tests.data.fixtures_raw import write_amazon, write_kuaisar


def test_kuaisar_files_prepare_into_token_dataset(tmp_path: Path) -> None:
    write_kuaisar(tmp_path / "raw", n_users=12, n_items=40)
    out = tmp_path / "kuaisar"
    assert (
        main(["prepare", "kuaisar", str(tmp_path / "raw"), "--negatives", "5", "--out", str(out), "--quiet"])
        == 0
    )
    ds = load_dataset(out)
    assert ds.manifest["text_kind"] == "tokens" and ds.tokens
    assert ds.tokens["item_token_offsets"].size == ds.n_items + 2  # rows for ids 0..n_items
    assert ds.tokens["query_token_offsets"].size == ds.n_queries + 2
    assert 0 < ds.manifest["counts"]["search_behaviours"] < ds.manifest["counts"]["behaviours"]
    assert len(ds.manifest["raw_inputs"]) >= 3
    batch = TrainSamples(ds, WindowConfig(max_length=8)).__getitems__([0, 1])
    assert batch["hist_items"].shape == (2, 8)


def test_amazon_files_prepare_with_generated_queries(tmp_path: Path) -> None:
    fx = write_amazon(tmp_path / "raw")
    out = tmp_path / "amazon"
    code = main(
        [
            "prepare",
            "amazon",
            "--reviews",
            str(fx.reviews),
            "--meta",
            str(fx.meta),
            "--negatives",
            "2",
            "--text-encoder",
            "hashing:16",
            "--min-behaviours",
            "3",
            "--out",
            str(out),
            "--quiet",
        ]
    )
    assert code == 0
    ds = load_dataset(out)
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["synthetic_queries"] is True
    assert np.all(ds.queries != EMPTY_QUERY)  # every Amazon behaviour is a search with a generated query
    assert set(manifest["vectors"]) == {"item_text", "query_text"}
    search = EvalSamples(ds, "test", "search", max_length=4)
    assert len(search) == ds.n_users
