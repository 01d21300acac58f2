"""RecBole atomic files, including the embedded MovieLens-100k."""

from __future__ import annotations

from pathlib import Path

import polars as pl
import pytest

from seminar.data.build import build_dataset
from seminar.data.schema import load_dataset
from seminar.data.sources.recbole import embedded_ml100k_dir, read_ml100k, read_recbole
from seminar.data.tables import DataError
from tests.data.helpers import quiet_config, stored_user_features


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


def test_fractional_timestamps_are_truncated_and_counted_and_long_bad_values_cut(tmp_path: Path) -> None:
    inter = "user_id:token\titem_id:token\ttimestamp:float\n1\t10\t100.5\n1\t11\t200\n2\t10\t150.25\n"
    tables = read_recbole(_write(tmp_path / "frac", "frac", inter), query_fraction=0.0)
    assert tables.interactions["timestamp"].to_list() == [100, 200, 150]
    assert tables.skipped == {"timestamps with a fraction (truncated to whole units; kept)": 2}
    whole = read_recbole(_write(tmp_path / "toy", "toy", INTER, ITEM), query_fraction=0.0)
    assert whole.skipped == {}  # 100.0 has no fraction
    huge = "user_id:token\titem_id:token\ttimestamp:float\n1\t10\t" + "x" * 100_000 + "\n"
    with pytest.raises(DataError, match="line 2, column 'timestamp'") as info:
        read_recbole(_write(tmp_path / "huge", "huge", huge))
    assert len(str(info.value)) < 500


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


# Five users with four behaviours each over twelve items; user 5 has no row in the .user file.
USER_INTER = "user_id:token\titem_id:token\ttimestamp:float\n" + "".join(
    f"{u}\t{10 + (u + k) % 12}\t{100 * k}\n" for u in range(1, 6) for k in range(4)
)
USER_ITEM = "item_id:token\tmovie_title:token_seq\n" + "".join(f"{i}\tFilm {i}\n" for i in range(10, 22))
USER_FILE = (
    "user_id:token\tage:token\tgender:token\tinterests:token_seq\tincome:float\n"
    "1\t24\tM\tjazz rock\t3.5\n"
    "2\t53\tF\t\t1.0\n"
    "3\t23\t\tfolk\t2\n"
    "4\t33\tM\t rock  pop \t0\n"
    "99\t40\tF\tjazz\t1\n"
)


def _with_users(root: Path) -> Path:
    _write(root, root.name, USER_INTER, USER_ITEM)
    (root / f"{root.name}.user").write_text(USER_FILE)
    return root


def test_user_file_token_fields_become_stored_user_features(tmp_path: Path) -> None:
    root = _with_users(tmp_path / "toy")
    tables = read_recbole(root, query_fraction=0.0)
    assert tables.user_fields == ["age", "gender", "interests"]  # float fields are ignored
    assert tables.raw_files[-1] == root / "toy.user"
    ds = load_dataset(build_dataset(tables, tmp_path / "d", quiet_config(negatives=2)))
    stored = stored_user_features(ds)
    assert stored["1"] == {("age", "24"), ("gender", "M"), ("interests", "jazz"), ("interests", "rock")}
    assert stored["2"] == {("age", "53"), ("gender", "F")}  # empty token_seq: no value
    assert stored["3"] == {("age", "23"), ("interests", "folk")}  # empty token: no value
    assert stored["4"] == {("age", "33"), ("gender", "M"), ("interests", "rock"), ("interests", "pop")}
    assert stored["5"] == set()
    assert ds.manifest["skipped"]["users without features (kept with none)"] == 1
    assert ("age", "40") not in set(ds.table("user_attributes").select("field", "value").rows())


def test_user_feature_fields_restrict_and_unknown_ones_are_listed(tmp_path: Path) -> None:
    root = _with_users(tmp_path / "toy")
    tables = read_recbole(root, query_fraction=0.0, user_feature_fields=["gender"])
    assert tables.user_fields == ["gender"] and tables.users.columns == ["user", "gender"]
    assert tables.params["user_feature_fields"] == ["gender"]
    assert read_recbole(root, query_fraction=0.0, user_feature_fields=[]).users is None
    with pytest.raises(
        DataError, match=r"toy\.user: unknown user feature field\(s\) \['income', 'job'\]"
    ) as info:
        read_recbole(root, user_feature_fields=["gender", "income", "job"])
    assert "['age', 'gender', 'interests']" in str(info.value)


def test_user_file_needs_the_user_field(tmp_path: Path) -> None:
    root = _with_users(tmp_path / "toy")
    (root / "toy.user").write_text("uid:token\tage:token\n1\t24\n")
    with pytest.raises(DataError, match=r"toy\.user: no user field 'user_id'"):
        read_recbole(root)


def test_no_user_file_means_no_user_features(tmp_path: Path) -> None:
    tables = read_recbole(_write(tmp_path / "toy", "toy", INTER, ITEM), query_fraction=0.0)
    assert tables.users is None and tables.user_fields == []
    with pytest.raises(DataError, match=r"toy\.user: file not found"):
        read_recbole(tmp_path / "toy", user_feature_fields=["age"])


def test_embedded_ml100k_has_four_user_fields() -> None:
    tables = read_ml100k()
    assert tables.user_fields == ["age", "gender", "occupation", "zip_code"]
    assert tables.users.height == 943 and tables.users["user"].is_unique().all()
    first = tables.users.filter(pl.col("user") == "1").row(0, named=True)
    assert first == {
        "user": "1",
        "age": ["24"],
        "gender": ["M"],
        "occupation": ["technician"],
        "zip_code": ["85711"],
    }
    assert tables.raw_files[-1].name == "ml-100k.user"
