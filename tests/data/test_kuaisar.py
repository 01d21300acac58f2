"""KuaiSAR reader: click filters, merged search/recommendation rows, item side info, bad input."""

from __future__ import annotations

import csv
import shutil
from pathlib import Path

import polars as pl
import pytest

from seminar.data.build import build_dataset
from seminar.data.schema import load_dataset
from seminar.data.sources.kuaisar import ATTRIBUTE_FIELDS, read_kuaisar
from seminar.data.tables import DataError
from tests.data.fixtures_raw import (
    KuaiSARFixture,
    drop_csv_column,
    edit_csv,
    first_line_where,
    write_kuaisar,
)
from tests.data.helpers import quiet_config, stored_user_features


@pytest.fixture
def fx(tmp_path: Path) -> KuaiSARFixture:
    return write_kuaisar(tmp_path / "KuaiSAR_final", n_users=12, seed=3)


def test_counts_and_rows_after_click_filters(fx: KuaiSARFixture) -> None:
    t = read_kuaisar(fx.root)
    inter = t.interactions
    assert inter.schema == pl.Schema(
        {"user": pl.Int64, "item": pl.Int64, "timestamp": pl.Int64, "query": pl.String}
    )
    search = inter.filter(pl.col("query").is_not_null())
    rec = inter.filter(pl.col("query").is_null())
    assert search.height == len(fx.search)
    assert rec.height == len(fx.rec)
    assert inter.height == fx.n_src_rows + fx.n_rec_rows - fx.n_src_unclicked - fx.n_rec_unclicked - (
        fx.n_src_empty_keyword
    )
    assert search.rows() == fx.search  # file order, canonical token queries
    assert rec.select("user", "item", "timestamp").rows() == fx.rec  # float ms parsed exactly
    assert t.skipped == {
        "src_inter.csv: click_cnt == 0 (exposure without click)": fx.n_src_unclicked,
        "src_inter.csv: clicked row with empty keyword": fx.n_src_empty_keyword,
        "rec_inter.csv: click == 0 (exposure without click)": fx.n_rec_unclicked,
    }
    assert t.text_kind == "tokens"
    assert not t.synthetic_queries
    assert [p.name for p in t.raw_files] == [
        "src_inter.csv",
        "rec_inter.csv",
        "item_features.csv",
        "user_features.csv",
    ]
    assert t.params["n_search"] == len(fx.search) and t.params["n_rec"] == len(fx.rec)


def test_search_queries_are_canonical_token_strings(fx: KuaiSARFixture) -> None:
    queries = read_kuaisar(fx.root).interactions["query"].drop_nulls()
    assert queries.len() > 0
    assert queries.str.contains(r"^[0-9]+( [0-9]+)*$").all()


def test_items_side_info_whole_strings(fx: KuaiSARFixture) -> None:
    t = read_kuaisar(fx.root)
    items = t.items
    assert t.attribute_fields == ATTRIBUTE_FIELDS
    for name in ATTRIBUTE_FIELDS:
        assert items.schema[name] == pl.List(pl.String)
    assert items.schema["item"] == pl.Int64 and items.schema["title"] == pl.String
    used = set(t.interactions["item"].to_list())
    assert set(items["item"].to_list()) == used - set(fx.missing_items)
    assert items["item"].is_unique().all()
    for row in items.iter_rows(named=True):
        title, author, cats = fx.items[row["item"]]
        assert row["title"] == title
        assert row["author"] == author  # the whole id, never its digits one by one
        assert [row[f"category_l{k}"] for k in range(1, 5)] == cats
        for name in ATTRIBUTE_FIELDS:
            assert all(v == str(int(v)) and int(v) > 0 for v in row[name])  # 0 = missing, dropped
    # Zero categories/authors become empty lists, not the value "0".
    assert items["category_l4"].list.len().sum() == 0
    assert (items["author"].list.len() == 0).any()


def test_root_may_be_the_parent_folder(fx: KuaiSARFixture) -> None:
    t = read_kuaisar(fx.root.parent)
    assert t.interactions.height == len(fx.search) + len(fx.rec)


def test_max_users_keeps_smallest_ids(fx: KuaiSARFixture) -> None:
    full = read_kuaisar(fx.root).interactions
    t = read_kuaisar(fx.root, max_users=3)
    keep = sorted(set(full["user"].to_list()))[:3]
    assert sorted(set(t.interactions["user"].to_list())) == keep
    assert t.interactions.height == full.filter(pl.col("user").is_in(keep)).height
    assert t.skipped["max_users=3: behaviours of other users"] == full.height - t.interactions.height
    assert set(t.items["item"].to_list()) <= set(t.interactions["item"].to_list())


def test_keyword_list_variants(fx: KuaiSARFixture) -> None:
    src = fx.root / "src_inter.csv"
    line = first_line_where(src, "keyword", lambda v: v != "[]")
    edit_csv(src, line, "keyword", "['007','12' , \"3\"]")
    edit_csv(src, line, "click_cnt", "1")
    queries = read_kuaisar(fx.root).interactions["query"].drop_nulls().to_list()
    assert "7 12 3" in queries


def test_user_features_file_is_optional(fx: KuaiSARFixture) -> None:
    (fx.root / "user_features.csv").unlink()
    t = read_kuaisar(fx.root)
    assert t.users is None and t.user_fields == []
    assert len(t.raw_files) == 3


def test_user_features_are_every_other_column_as_strings(fx: KuaiSARFixture) -> None:
    t = read_kuaisar(fx.root)
    assert t.user_fields == ["search_active_level", "rec_active_level", "onehot_feat1", "onehot_feat2"]
    assert t.users.schema["user"] == pl.Int64
    assert set(t.users["user"].to_list()) == set(t.interactions["user"].to_list())  # not 29_999_999
    for row in t.users.iter_rows(named=True):
        assert {k: v for k, v in row.items() if k != "user"} == {
            k: [v] for k, v in fx.user_features[row["user"]].items()
        }


def test_user_features_are_stored_and_empty_cells_dropped(fx: KuaiSARFixture, tmp_path: Path) -> None:
    path = fx.root / "user_features.csv"
    edit_csv(path, 2, "onehot_feat2", "")
    first = int(_cell(path, 2, "user_id"))
    t = read_kuaisar(fx.root)
    ds = load_dataset(build_dataset(t, tmp_path / "d", quiet_config(negatives=5, text_encoder="none")))
    stored = stored_user_features(ds)
    kept = ds.table("users")["raw_id"].to_list()
    assert stored.keys() == set(kept) and str(first) in kept and len(kept) > 1
    for raw in kept:
        expected = {(k, v) for k, v in fx.user_features[int(raw)].items()}
        if int(raw) == first:
            expected = {(k, v) for k, v in expected if k != "onehot_feat2"}
        assert stored[raw] == expected
    assert "users without features (kept with none)" not in ds.manifest["skipped"]


def test_user_on_two_rows_is_named(fx: KuaiSARFixture) -> None:
    path = fx.root / "user_features.csv"
    user = _cell(path, 2, "user_id")
    edit_csv(path, 3, "user_id", user)
    with pytest.raises(DataError, match=rf"user_features\.csv: line 3: user_id {user} appears on two rows"):
        read_kuaisar(fx.root)


def _cell(path: Path, line: int, column: str) -> str:
    with path.open(encoding="utf-8", newline="") as fh:
        rows = list(csv.reader(fh))
    return rows[line - 1][rows[0].index(column)]


@pytest.mark.parametrize(
    ("file", "column"),
    [
        ("src_inter.csv", "click_cnt"),
        ("src_inter.csv", "keyword"),
        ("rec_inter.csv", "timestamp"),
        ("item_features.csv", "caption"),
        ("item_features.csv", "third_level_category_id"),
        ("user_features.csv", "user_id"),
    ],
)
def test_missing_column(fx: KuaiSARFixture, file: str, column: str) -> None:
    drop_csv_column(fx.root / file, column)
    with pytest.raises(DataError) as err:
        read_kuaisar(fx.root)
    msg = str(err.value)
    assert file in msg and repr(column) in msg and "line 1" in msg


def _clicked_line(path: Path, column: str) -> int:
    return first_line_where(path, column, lambda v: float(v) > 0)


@pytest.mark.parametrize(
    ("file", "column", "value", "locate"),
    [
        ("src_inter.csv", "keyword", "[20, 3x]", "click_cnt"),
        ("src_inter.csv", "keyword", "20; 34", "click_cnt"),
        ("src_inter.csv", "keyword", "[[1, 2]", "click_cnt"),
        ("src_inter.csv", "user_id", "u17", None),
        ("src_inter.csv", "item_id", "", None),
        ("src_inter.csv", "search_session_timestamp", "2023-05-22 21:58:52", None),
        ("rec_inter.csv", "user_id", "abc", None),
        ("rec_inter.csv", "timestamp", "1.5e", None),
        ("rec_inter.csv", "click", "yes", None),
    ],
)
def test_bad_values_name_file_line_column(
    fx: KuaiSARFixture, file: str, column: str, value: str, locate: str | None
) -> None:
    path = fx.root / file
    line = _clicked_line(path, locate) if locate else 5
    edit_csv(path, line, column, value)
    with pytest.raises(DataError) as err:
        read_kuaisar(fx.root)
    msg = str(err.value)
    assert file in msg and f"line {line}:" in msg and repr(column) in msg


def test_malformed_caption_of_used_item(fx: KuaiSARFixture) -> None:
    used = read_kuaisar(fx.root).items["item"][0]
    path = fx.root / "item_features.csv"
    line = first_line_where(path, "item_id", lambda v: int(v) == used)
    edit_csv(path, line, "caption", "[1, two]")
    with pytest.raises(DataError, match=rf"item_features\.csv: line {line}: column 'caption'"):
        read_kuaisar(fx.root)


def test_missing_file(tmp_path: Path) -> None:
    write_kuaisar(tmp_path)
    (tmp_path / "rec_inter.csv").unlink()
    with pytest.raises(DataError, match=r"rec_inter\.csv"):
        read_kuaisar(tmp_path)
    shutil.rmtree(tmp_path)
    with pytest.raises(DataError, match=r"src_inter\.csv"):
        read_kuaisar(tmp_path)
