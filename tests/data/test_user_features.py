"""User features in the canonical dataset: alignment, skips, errors, old datasets, validation."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from seminar.data import schema
from seminar.data.build import build_dataset, prepare
from seminar.data.schema import load_dataset
from seminar.data.summary import dataset_summary
from seminar.data.tables import DataError, SourceTables
from tests.data.helpers import quiet_config, stored_user_features, tiny_tables, without_digests

LIST = pl.List(pl.String)


def tables_with_users() -> SourceTables:
    """tiny_tables (u0..u3) plus a short user ``u1x`` between u1 and u2, and a users table.

    u1 has no row; u3's row holds only a null and an empty string; ``ghost`` has no behaviours.
    """
    tables = tiny_tables()
    short = pl.DataFrame(
        {"user": ["u1x", "u1x"], "item": ["i001", "i002"], "timestamp": [1, 2], "query": [None, None]},
        schema=tables.interactions.schema,
    )
    tables.interactions = pl.concat([tables.interactions, short])
    tables.users = pl.DataFrame(
        {
            "user": ["u3", "ghost", "u2", "u1x", "u0"],
            "age": [[None], ["70"], ["30"], ["99"], ["20"]],
            "tags": [[""], ["x"], ["b"], ["short"], ["a", "b", "a"]],
        },
        schema={"user": pl.String, "age": LIST, "tags": LIST},
    )
    tables.user_fields = ["age", "tags"]
    return tables


@pytest.fixture
def built(tmp_path: Path) -> Path:
    """Without per-file digests, so that the edits below meet the invariant checks."""
    return without_digests(build_dataset(tables_with_users(), tmp_path / "d", quiet_config()))


def test_features_follow_kept_users(built: Path) -> None:
    ds = load_dataset(built)
    assert ds.table("users")["raw_id"].to_list() == ["u0", "u1", "u2", "u3"]  # u1x dropped (short)
    assert stored_user_features(ds) == {
        "u0": {("age", "20"), ("tags", "a"), ("tags", "b")},  # a repeated value is stored once
        "u1": set(),
        "u2": {("age", "30"), ("tags", "b")},  # right after the dropped user: not shifted
        "u3": set(),  # null and empty values are dropped
    }
    vocab = ds.table("user_attributes")
    assert vocab.columns == ["field", "value", "user_attribute_id"]
    assert vocab.select("field", "value").rows() == [
        ("age", "20"),
        ("age", "30"),
        ("tags", "a"),
        ("tags", "b"),
    ]
    assert vocab["user_attribute_id"].to_list() == [1, 2, 3, 4]  # only kept users' values
    assert ds.n_user_attributes == 4 and ds.manifest["user_fields"] == ["age", "tags"]
    assert ds.manifest["skipped"]["users without features (kept with none)"] == 1  # u1
    # ghost (no behaviours) and u1x (too few) have rows but are not in the dataset
    assert ds.manifest["skipped"]["users-table rows of no kept user (no or too few behaviours; ignored)"] == 2
    assert ds.user_attr_offsets.dtype == np.int64 and ds.user_attr_ids.dtype == np.int32


def test_padded_matrix_has_one_row_per_user(built: Path) -> None:
    ds = load_dataset(built)
    padded = ds.user_attributes_padded()
    assert padded.dtype == np.int32 and padded.shape == (ds.n_users, 3)
    assert padded[0].tolist() == [1, 3, 4] and padded[1].tolist() == [0, 0, 0]
    assert ds.user_attributes_padded(max_attributes=1)[:, 0].tolist() == [1, 0, 2, 0]


def test_summary_shows_user_fields(built: Path) -> None:
    summary = dataset_summary(load_dataset(built))
    assert summary["user_fields"] == ["age", "tags"] and summary["user_attributes"] == 4


def test_sources_without_user_files_store_none(tmp_path: Path) -> None:
    ds = load_dataset(build_dataset(tiny_tables(), tmp_path / "d", quiet_config()))
    assert ds.manifest["user_fields"] == [] and ds.n_user_attributes == 0
    assert ds.user_attr_offsets.tolist() == [0] * (ds.n_users + 1) and ds.user_attr_ids.size == 0
    assert not any("users without features" in k for k in ds.manifest["skipped"])
    assert (tmp_path / "d" / schema.USER_FILES["user_attr_offsets"][0]).is_file()


def test_user_twice_in_users_table_is_named(tmp_path: Path) -> None:
    tables = tables_with_users()
    tables.users = pl.concat([tables.users, tables.users.filter(pl.col("user") == "u2")])
    with pytest.raises(DataError, match="user 'u2' appears twice"):
        build_dataset(tables, tmp_path / "d", quiet_config())


def test_user_field_must_be_a_list_of_strings(tmp_path: Path) -> None:
    tables = tables_with_users()
    tables.users = tables.users.with_columns(pl.col("age").list.first())
    with pytest.raises(DataError, match="user field 'age' must be a list of strings"):
        build_dataset(tables, tmp_path / "d", quiet_config())


def test_user_field_not_in_users_table_is_named(tmp_path: Path) -> None:
    tables = tables_with_users()
    tables.user_fields = ["age", "country"]
    with pytest.raises(DataError, match=r"user field\(s\) \['country'\]"):
        build_dataset(tables, tmp_path / "d", quiet_config())


def test_integer_user_ids_match_integer_users_table(tmp_path: Path) -> None:
    tables = tiny_tables()
    tables.interactions = tables.interactions.with_columns(pl.col("user").str.slice(1).cast(pl.Int64))
    tables.users = pl.DataFrame(
        {"user": [2, 0], "band": [["b"], ["a"]]}, schema={"user": pl.Int32, "band": LIST}
    )
    tables.user_fields = ["band"]
    ds = load_dataset(build_dataset(tables, tmp_path / "d", quiet_config()))
    assert stored_user_features(ds) == {"0": {("band", "a")}, "1": set(), "2": {("band", "b")}, "3": set()}
    assert ds.manifest["skipped"]["users without features (kept with none)"] == 2


def _strip_user_features(root: Path) -> None:
    """Make ``root`` look like a dataset prepared before user features existed."""
    shutil.rmtree(root / "users")
    (root / schema.TABLE_FILES["user_attributes"]).unlink()
    manifest = json.loads((root / schema.MANIFEST).read_text())
    del manifest["user_fields"], manifest["counts"]["user_attributes"], manifest["files"]
    (root / schema.MANIFEST).write_text(json.dumps(manifest))


def test_dataset_from_before_user_features_loads_and_is_rebuilt(tmp_path: Path) -> None:
    tables, root = tables_with_users(), tmp_path / "d"
    assert prepare(tables, root, quiet_config()) is True
    assert prepare(tables, root, quiet_config()) is False
    _strip_user_features(root)
    old = load_dataset(root)
    assert old.n_user_attributes == 0 and old.user_attr_ids.size == 0
    assert old.user_attr_offsets.tolist() == [0] * (old.n_users + 1)
    assert old.user_attributes_padded().shape == (old.n_users, 1)
    assert old.table("user_attributes").schema == pl.Schema(
        {"field": pl.String, "value": pl.String, "user_attribute_id": pl.Int32}
    )
    assert dataset_summary(old)["user_fields"] == []
    assert prepare(tables, root, quiet_config()) is True  # not trusted: rebuilt with features
    assert load_dataset(root).n_user_attributes == 4


def test_old_dataset_of_a_source_without_user_files_is_rebuilt(tmp_path: Path) -> None:
    root = tmp_path / "d"
    prepare(tiny_tables(), root, quiet_config())
    _strip_user_features(root)
    assert prepare(tiny_tables(), root, quiet_config()) is True


class TestValidationOnLoad:
    def _edit(self, built: Path, name: str, change) -> Path:
        path = built / schema.USER_FILES[name][0]
        arr = np.load(path)
        np.save(path, change(arr))
        return path

    def test_out_of_range_id(self, built: Path) -> None:
        self._edit(built, "user_attr_ids", lambda a: np.where(np.arange(a.size) == 0, 5, a).astype(np.int32))
        with pytest.raises(DataError, match=r"users/attr_ids\.npy: user attribute id outside \[1, 4\]"):
            load_dataset(built)

    def test_padding_id_is_never_stored(self, built: Path) -> None:
        self._edit(built, "user_attr_ids", lambda a: np.where(np.arange(a.size) == 1, 0, a).astype(np.int32))
        with pytest.raises(DataError, match=r"users/attr_ids\.npy"):
            load_dataset(built)

    def test_offsets_of_wrong_length(self, built: Path) -> None:
        self._edit(built, "user_attr_offsets", lambda a: a[:-1])
        with pytest.raises(DataError, match=r"users/attr_offsets\.npy: shape \(4,\), expected \(5,\)"):
            load_dataset(built)

    def test_offsets_not_monotone(self, built: Path) -> None:
        self._edit(built, "user_attr_offsets", lambda a: np.array([0, 4, 1, 5, 5], dtype=np.int64))
        with pytest.raises(DataError, match=r"users/attr_offsets\.npy: offsets must rise"):
            load_dataset(built)

    def test_missing_file_when_manifest_lists_user_fields(self, built: Path) -> None:
        (built / schema.USER_FILES["user_attr_ids"][0]).unlink()
        with pytest.raises(DataError, match=r"users/attr_ids\.npy is missing"):
            load_dataset(built)

    def test_wrong_dtype(self, built: Path) -> None:
        self._edit(built, "user_attr_ids", lambda a: a.astype(np.int64))
        with pytest.raises(DataError, match=r"attr_ids\.npy: dtype int64, expected int32"):
            load_dataset(built)
