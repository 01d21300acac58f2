"""RecBole atomic files, including the embedded MovieLens-100k."""

from __future__ import annotations

from pathlib import Path

import polars as pl
import pytest

from seminar.data.sources.recbole import embedded_ml100k_dir, read_ml100k, read_recbole
from seminar.data.tables import DataError


def _write(root: Path, name: str, inter: str, item: str | None = None) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    (root / f"{name}.inter").write_text(inter)
    if item is not None:
        (root / f"{name}.item").write_text(item)
    return root


INTER = (
    "user_id:token\titem_id:token\trating:float\ttimestamp:float\n"
    "1\t10\t4\t100.0\n1\t11\t3\t200\n2\t10\t5\t150\n"
)
ITEM = (
    "item_id:token\tmovie_title:token_seq\tprice:float\tclass:token_seq\tyear:token\n"
    "10\tA Film\t1.5\tAction Comedy\t1999\n11\tB Film\t2\tDrama\t2001\n"
)


def test_typed_headers_become_interactions_and_attributes(tmp_path: Path) -> None:
    tables = read_recbole(_write(tmp_path / "toy", "toy", INTER, ITEM), query_fraction=0.0)
    assert tables.interactions["timestamp"].to_list() == [100, 200, 150]
    assert tables.interactions["query"].null_count() == 3
    assert tables.attribute_fields == ["class", "year"]  # float fields are not attributes
    row = tables.items.filter(pl.col("item") == "10")
    assert row["title"][0] == "A Film"
    assert row["class"][0].to_list() == ["Action", "Comedy"]
    assert row["year"][0].to_list() == ["1999"]


def test_generated_queries_are_marked_and_partial(tmp_path: Path) -> None:
    tables = read_recbole(_write(tmp_path / "toy", "toy", INTER, ITEM), query_fraction=1.0)
    assert tables.synthetic_queries
    assert tables.interactions["query"].null_count() == 0


@pytest.mark.parametrize(
    ("inter", "message"),
    [
        ("user_id\titem_id\ttimestamp\n1\t2\t3\n", "line 1, column 1"),
        ("user_id:token\titem_id:token\ttimestamp:float\n1\t2\n", "line 2: 2 fields, header has 3"),
        ("user_id:token\titem_id:token\ttimestamp:float\n1\t2\tyesterday\n", "line 2, column 'timestamp'"),
        ("user_id:token\titem_id:token\n1\t2\n", "no timestamp field 'timestamp'"),
        ("user_id:token\titem_id:token\ttimestamp:float\n\t2\t5\n", "line 2: empty user id"),
    ],
)
def test_malformed_files_name_file_line_and_column(tmp_path: Path, inter: str, message: str) -> None:
    root = _write(tmp_path / "bad", "bad", inter)
    with pytest.raises(DataError, match=message) as info:
        read_recbole(root)
    assert "bad.inter" in str(info.value)


def test_embedded_ml100k_reads_without_importing_recbole() -> None:
    import sys

    path = embedded_ml100k_dir()
    assert (path / "ml-100k.inter").is_file()
    tables = read_ml100k()
    assert "recbole" not in sys.modules
    assert tables.interactions.height == 100_000
    assert tables.items.height == 1682
    share = 1 - tables.interactions["query"].null_count() / tables.interactions.height
    assert 0.45 < share < 0.55
    genres = set(tables.items["class"].explode().drop_nulls().to_list())
    assert "Comedy" in genres and all(len(g) > 1 for g in genres)
