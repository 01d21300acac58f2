"""A user's own CSV/Parquet tables."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import polars as pl
import pytest

from seminar.data.build import build_dataset
from seminar.data.schema import load_dataset
from seminar.data.sources.tables import TableColumns, read_interaction_tables
from seminar.data.tables import DataError
from tests.data.helpers import quiet_config, stored_user_features

COLS = TableColumns(
    user="uid",
    item="sku",
    timestamp="ts",
    query="q",
    title="name",
    attributes=["genres"],
    multi_value_separator="|",
)


def _files(tmp_path: Path, fmt: str = "csv", inter_rows: list[str] | None = None) -> tuple[Path, Path]:
    rows = inter_rows or [
        f"u{u},s{(u + k) % 12},{k * 10},{'red shoes' if k % 3 == 0 else ''}"
        for u in range(5)
        for k in range(5)
    ]
    inter = tmp_path / "inter.csv"
    inter.write_text("uid,sku,ts,q\n" + "\n".join(rows) + "\n")
    items = tmp_path / "items.csv"
    items.write_text(
        "sku,name,genres\n"
        + "\n".join(f"s{i},Item {i},{'Adventure|Comedy' if i % 2 else 'Drama'}" for i in range(12))
        + "\n"
    )
    if fmt == "parquet":
        pl.read_csv(inter, infer_schema=False).write_parquet(tmp_path / "inter.parquet")
        pl.read_csv(items, infer_schema=False).write_parquet(tmp_path / "items.parquet")
        return tmp_path / "inter.parquet", tmp_path / "items.parquet"
    return inter, items


@pytest.mark.parametrize("fmt", ["csv", "parquet"])
def test_csv_and_parquet_give_the_same_dataset(tmp_path: Path, fmt: str) -> None:
    inter, items = _files(tmp_path, fmt)
    tables = read_interaction_tables(inter, items, COLS)
    ds = load_dataset(build_dataset(tables, tmp_path / f"d-{fmt}", quiet_config(negatives=3)))
    assert ds.n_users == 5 and ds.manifest["counts"]["behaviours"] == 25
    assert ds.manifest["counts"]["search_behaviours"] == 10
    values = set(ds.table("attributes")["value"].to_list())
    assert values == {"Adventure", "Comedy", "Drama"}


def test_iso_dates_are_timestamps(tmp_path: Path) -> None:
    inter = tmp_path / "i.csv"
    inter.write_text("user,item,timestamp\na,x,2024-01-02\na,y,2024-01-01T10:00:00\na,z,2024-01-03\n")
    tables = read_interaction_tables(inter)
    ts = tables.interactions["timestamp"].to_list()
    assert ts[1] < ts[0] < ts[2]


def test_iso_datetimes_with_utc_offsets_are_converted(tmp_path: Path) -> None:
    inter = tmp_path / "i.csv"
    inter.write_text(
        "user,item,timestamp\n"
        "a,x,2024-01-17T12:00:00+00:00\n"
        "a,y,2024-01-17T12:00:00Z\n"
        "a,z,2024-01-17T14:00:00.5+02:00\n"
        "a,w,2024-01-17 12:00:00+0000\n"
        "a,v,2024-01-17T12:00:00\n"
    )
    ts = read_interaction_tables(inter).interactions["timestamp"].to_list()
    assert ts == [1705492800] * 5  # the same instant written five ways


@pytest.mark.parametrize(
    ("rows", "message"),
    [
        (["u1,s1,10,", "u1,s2,oops,"], r"row 2 \(line 3\), column 'ts': 'oops' is not a timestamp"),
        (["u1,s1,10,", ",s2,20,"], r"row 2 \(line 3\), column 'uid': empty id"),
        (["u1,s1,10,", "u1,s99,20,"], "item 's99' is not in"),
    ],
)
def test_bad_rows_are_named(tmp_path: Path, rows: list[str], message: str) -> None:
    inter, items = _files(tmp_path, inter_rows=rows)
    with pytest.raises(DataError, match=message) as info:
        read_interaction_tables(inter, items, COLS)
    assert "inter.csv" in str(info.value)


def test_missing_column_is_named(tmp_path: Path) -> None:
    inter, items = _files(tmp_path)
    with pytest.raises(DataError, match=r"missing column\(s\) \['when'\]"):
        read_interaction_tables(inter, items, TableColumns(user="uid", item="sku", timestamp="when"))


def test_duplicate_item_rows_are_rejected(tmp_path: Path) -> None:
    inter, items = _files(tmp_path)
    items.write_text(items.read_text() + "s3,Again,Drama\n")
    with pytest.raises(DataError, match="appears more than once"):
        read_interaction_tables(inter, items, COLS)


def test_unsupported_and_missing_files(tmp_path: Path) -> None:
    (tmp_path / "x.xlsx").write_text("")
    with pytest.raises(DataError, match="unsupported file type"):
        read_interaction_tables(tmp_path / "x.xlsx")
    with pytest.raises(DataError, match="file not found"):
        read_interaction_tables(tmp_path / "nope.csv")


def test_image_paths_resolve_against_image_root(tmp_path: Path) -> None:
    inter, _ = _files(tmp_path)
    items = tmp_path / "items_img.csv"
    items.write_text("sku,img\n" + "\n".join(f"s{i},img/{i}.jpg" for i in range(12)) + "\n")
    tables = read_interaction_tables(
        inter, items, TableColumns(user="uid", item="sku", timestamp="ts", image_path="img")
    )
    assert tables.image_root == tmp_path
    assert np.all(tables.items["image_path"].str.starts_with("img/").to_numpy())


def _users_file(tmp_path: Path, text: str, fmt: str = "csv") -> Path:
    path = tmp_path / "users.csv"
    path.write_text(text)
    if fmt == "parquet":
        pl.read_csv(path, infer_schema=False).write_parquet(tmp_path / "users.parquet")
        return tmp_path / "users.parquet"
    return path


USERS = "uid,age,country,note\nu0,20,FR,vip\nu1,,DE,\nu2, 30 ,FR,\nu3,40,,new\nstranger,50,US,\n"


@pytest.mark.parametrize("fmt", ["csv", "parquet"])
def test_users_file_columns_become_user_features(tmp_path: Path, fmt: str) -> None:
    inter, items = _files(tmp_path)
    users = _users_file(tmp_path, USERS, fmt)
    tables = read_interaction_tables(inter, items, COLS, users=users)
    assert tables.user_fields == ["age", "country", "note"] and tables.raw_files[-1] == users
    ds = load_dataset(build_dataset(tables, tmp_path / "d", quiet_config(negatives=3)))
    stored = stored_user_features(ds)
    assert stored["u0"] == {("age", "20"), ("country", "FR"), ("note", "vip")}
    assert stored["u1"] == {("country", "DE")}  # empty cells are no value
    assert stored["u2"] == {("age", "30"), ("country", "FR")}  # stripped
    assert stored["u4"] == set()
    assert ds.manifest["skipped"]["users without features (kept with none)"] == 1
    assert ds.manifest["user_fields"] == ["age", "country", "note"]


def test_user_features_option_picks_columns(tmp_path: Path) -> None:
    inter, items = _files(tmp_path)
    cols = TableColumns(**{**vars(COLS), "user_features": ["country"]})
    tables = read_interaction_tables(inter, items, cols, users=_users_file(tmp_path, USERS))
    assert tables.user_fields == ["country"] and tables.users.columns == ["user", "country"]
    assert tables.params["user_features"] == ["country"]


@pytest.mark.parametrize(
    ("text", "features", "message"),
    [
        ("id,age\nu0,20\n", None, r"missing column\(s\) \['uid'\]; the file has \['id', 'age'\]"),
        (USERS, ["age", "height"], r"missing column\(s\) \['height'\]; the file has \['uid', 'age'"),
        (USERS + "u2,31,FR,\n", None, r"row 6 \(line 7\): user 'u2' appears more than once"),
        ("uid,age\nu0,20\n,30\n", None, r"row 2 \(line 3\), column 'uid': empty id"),
    ],
)
def test_bad_users_files_are_named(
    tmp_path: Path, text: str, features: list[str] | None, message: str
) -> None:
    inter, items = _files(tmp_path)
    cols = TableColumns(**{**vars(COLS), "user_features": features})
    with pytest.raises(DataError, match=message) as info:
        read_interaction_tables(inter, items, cols, users=_users_file(tmp_path, text))
    assert "users.csv" in str(info.value)


def test_user_features_without_users_file_is_an_error(tmp_path: Path) -> None:
    inter, items = _files(tmp_path)
    cols = TableColumns(**{**vars(COLS), "user_features": ["age"]})
    with pytest.raises(DataError, match="no users file"):
        read_interaction_tables(inter, items, cols)


def test_without_a_time_column_the_row_order_is_the_time_order(tmp_path: Path) -> None:
    inter = tmp_path / "inter.csv"
    inter.write_text("user,item\nb,x\na,y\nb,z\na,x\nb,y\n")
    tables = read_interaction_tables(inter, columns=TableColumns(timestamp=None))
    rows = tables.interactions.select("user", "item", "timestamp").rows()
    # each user's rows numbered in file order: position among that user's rows
    assert rows == [("b", "x", 0), ("a", "y", 0), ("b", "z", 1), ("a", "x", 1), ("b", "y", 2)]
    with pytest.raises(DataError, match="missing column"):
        read_interaction_tables(inter)  # the default still asks for a timestamp column


def test_ragged_rows_and_bad_bytes_name_their_line_without_echoing_the_input(tmp_path: Path) -> None:
    rows = [f"u{u},i{k},{k}" for u in range(3) for k in range(4)]
    ragged = tmp_path / "ragged.csv"
    ragged.write_text(
        "user,item,timestamp\n" + "\n".join([*rows[:5], "u9,i1,3,extra," + "x" * 300000, *rows[5:]])
    )
    with pytest.raises(DataError) as error:
        read_interaction_tables(ragged)
    assert "ragged.csv: line 7:" in str(error.value) and len(str(error.value)) < 500
    short = tmp_path / "short.csv"
    short.write_text("user,item,timestamp\n" + "\n".join([*rows[:2], "u9,i1", *rows[2:]]))
    with pytest.raises(DataError, match=r"short\.csv: row 3 \(line 4\)"):  # missing fields read as empty
        read_interaction_tables(short)
    stamp = tmp_path / "stamp.csv"  # a value quoted in a message is cut too
    stamp.write_text("user,item,timestamp\n" + "\n".join([*rows[:2], "u9,i1," + "y" * 300000]))
    with pytest.raises(DataError, match=r"stamp\.csv: .*column 'timestamp'") as error:
        read_interaction_tables(stamp)
    assert len(str(error.value)) < 500
    latin = tmp_path / "latin.csv"
    latin.write_bytes(("user,item,timestamp\n" + "\n".join([*rows[:3], "u9,café,3"])).encode("latin-1"))
    with pytest.raises(DataError, match=r"latin\.csv: line 5: not UTF-8 text"):
        read_interaction_tables(latin)


def test_fractional_times_and_repeated_rows_are_kept_and_counted(tmp_path: Path) -> None:
    inter = tmp_path / "inter.csv"
    rows = [f"u{u},i{(u + k) % 12},{k}.5" for u in range(4) for k in range(6)] + ["u1,i2,1.5"]
    inter.write_text("user,item,timestamp\n" + "\n".join(rows) + "\n")
    tables = read_interaction_tables(inter)
    assert tables.skipped["timestamps with a fraction (truncated to whole units; kept)"] == 25
    ds = load_dataset(build_dataset(tables, tmp_path / "d", quiet_config(negatives=2)))
    skipped = ds.manifest["skipped"]
    assert skipped["rows repeating an earlier row exactly (same user, item, time and query; kept)"] == 1
    assert int(ds.manifest["counts"]["behaviours"]) == 25  # nothing dropped
