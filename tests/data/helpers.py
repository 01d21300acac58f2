"""Small datasets built in tests, through the same builder users run."""

from __future__ import annotations

import json
from pathlib import Path

import polars as pl

from seminar.data.build import BuildConfig, build_dataset
from seminar.data.schema import MANIFEST, SeminarDataset, load_dataset
from seminar.data.sources.synthetic import SyntheticConfig, generate_synthetic
from seminar.data.split import SplitConfig
from seminar.data.tables import SourceTables


def quiet_config(negatives: int = 5, **kwargs) -> BuildConfig:
    return BuildConfig(
        text_encoder=kwargs.pop("text_encoder", "hashing:32"),
        progress=False,
        split=SplitConfig(negatives=negatives, seed=kwargs.pop("seed", 0)),
        **kwargs,
    )


def tiny_tables(users: int = 4, length: int = 6, items: int = 60) -> SourceTables:
    """Deterministic behaviours: user u views items u, u+1, ... with every other one a search."""
    rows = []
    for u in range(users):
        for k in range(length):
            item = (u * 7 + k) % items
            rows.append(
                {
                    "user": f"u{u}",
                    "item": f"i{item:03d}",
                    "timestamp": 100 * k + u,
                    "query": f"q{item % 5}" if k % 2 else None,
                }
            )
    interactions = pl.DataFrame(
        rows, schema={"user": pl.String, "item": pl.String, "timestamp": pl.Int64, "query": pl.String}
    )
    item_ids = [f"i{i:03d}" for i in range(items)]
    item_frame = pl.DataFrame(
        {
            "item": item_ids,
            "title": [f"title of {i}" for i in item_ids],
            "genre": [["Adventure", "Comedy"] if i % 2 else ["Drama"] for i in range(items)],
        }
    )
    return SourceTables(name="tiny", interactions=interactions, items=item_frame, attribute_fields=["genre"])


def synthetic_dataset(root: Path, **cfg) -> SeminarDataset:
    tables = generate_synthetic(SyntheticConfig(**{"users": 50, "items": 400, "mean_length": 40, **cfg}))
    build_dataset(tables, root, quiet_config(text_encoder="none"))
    return load_dataset(root)


def stored_user_features(ds: SeminarDataset) -> dict[str, set[tuple[str, str]]]:
    """Raw user id -> its stored (field, value) pairs, read back through the id tables."""
    pair = {
        row[2]: (row[0], row[1])
        for row in ds.table("user_attributes").select("field", "value", "user_attribute_id").iter_rows()
    }
    raw_ids = ds.table("users").sort("user_index")["raw_id"].to_list()
    off, ids = ds.user_attr_offsets, ds.user_attr_ids
    return {raw: {pair[int(i)] for i in ids[off[u] : off[u + 1]]} for u, raw in enumerate(raw_ids)}


def without_digests(root: Path) -> Path:
    """Drop the per-file digests from a dataset's manifest, as datasets built before them lack them:
    its files are then checked by the invariants alone (what edits to them should meet)."""
    manifest = json.loads((root / MANIFEST).read_text())
    del manifest["files"]
    (root / MANIFEST).write_text(json.dumps(manifest))
    return root
