"""The canonical dataset: id maps, CSR sequences, split, manifest, atomic writes, validation."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from seminar.data import schema
from seminar.data.build import build_dataset, prepare
from seminar.data.schema import EMPTY_QUERY, SEARCH, load_dataset
from seminar.data.tables import DataError
from tests.data.helpers import quiet_config, synthetic_dataset, tiny_tables, without_digests


def test_sequences_are_chronological_per_user_and_ids_dense(tmp_path: Path) -> None:
    tables = tiny_tables()
    # Shuffle rows: the builder must sort by (user, timestamp) itself.
    tables.interactions = tables.interactions.sample(fraction=1.0, shuffle=True, seed=3)
    ds = load_dataset(build_dataset(tables, tmp_path / "d", quiet_config()))
    assert ds.n_users == 4 and ds.lengths.tolist() == [6, 6, 6, 6]
    for u in range(ds.n_users):
        ts = ds.timestamps[ds.offsets[u] : ds.offsets[u + 1]]
        assert np.all(np.diff(ts) > 0)
    items = ds.table("items")
    assert items["raw_id"].to_list() == sorted(items["raw_id"].to_list())  # sorted raw ids, not set order
    assert ds.items.min() >= 1 and ds.items.max() == ds.n_items
    # Round trip: user u0's first behaviour is raw item i000.
    assert items.filter(pl.col("item_id") == int(ds.items[0]))["raw_id"][0] == "i000"


def test_empty_query_is_its_own_id_and_marks_recommendation(tmp_path: Path) -> None:
    ds = load_dataset(build_dataset(tiny_tables(), tmp_path / "d", quiet_config()))
    rec = ds.behaviour != SEARCH
    assert np.all(ds.queries[rec] == EMPTY_QUERY)
    assert np.all(ds.queries[~rec] > EMPTY_QUERY)
    queries = ds.table("queries")
    assert queries["query_id"][0] == EMPTY_QUERY and queries["text"][0] is None
    assert ds.manifest["counts"]["search_behaviours"] == int((~rec).sum())


def test_attributes_are_whole_values_with_field(tmp_path: Path) -> None:
    ds = load_dataset(build_dataset(tiny_tables(), tmp_path / "d", quiet_config()))
    vocab = ds.table("attributes")
    assert set(vocab["value"].to_list()) == {"Adventure", "Comedy", "Drama"}
    padded = ds.item_attributes_padded()
    assert padded.shape[0] == ds.n_items + 1 and np.all(padded[0] == 0)
    assert np.all((padded > 0).sum(axis=1)[1:] >= 1)


def test_negatives_avoid_history_and_are_distinct(tmp_path: Path) -> None:
    ds = load_dataset(
        build_dataset(tiny_tables(users=6, length=10), tmp_path / "d", quiet_config(negatives=10))
    )
    for u in range(ds.n_users):
        hist = set(ds.items[ds.offsets[u] : ds.offsets[u + 1]].tolist())
        for neg in (ds.test_negatives[u], ds.valid_negatives[u]):
            assert len(set(neg.tolist())) == neg.size
            assert not hist & set(neg.tolist())
    assert not np.array_equal(ds.test_negatives, ds.valid_negatives)


def test_negatives_are_not_biased_to_low_ids(tmp_path: Path) -> None:
    ds = synthetic_dataset(tmp_path / "d", users=200, items=2000)
    mean_id = float(ds.test_negatives.mean())
    assert abs(mean_id - ds.n_items / 2) < 0.05 * ds.n_items


def test_split_is_reproducible_with_seed(tmp_path: Path) -> None:
    a = load_dataset(build_dataset(tiny_tables(), tmp_path / "a", quiet_config(seed=5)))
    b = load_dataset(build_dataset(tiny_tables(), tmp_path / "b", quiet_config(seed=5)))
    c = load_dataset(build_dataset(tiny_tables(), tmp_path / "c", quiet_config(seed=6)))
    assert np.array_equal(a.test_negatives, b.test_negatives)
    assert not np.array_equal(a.test_negatives, c.test_negatives)


def test_short_users_are_dropped_and_counted(tmp_path: Path) -> None:
    tables = tiny_tables()
    extra = pl.DataFrame(
        {
            "user": ["lonely", "pair", "pair"],
            "item": ["i001", "i002", "i003"],
            "timestamp": [1, 1, 2],
            "query": [None, None, None],
        },
        schema=tables.interactions.schema,
    )
    tables.interactions = pl.concat([tables.interactions, extra])
    ds = load_dataset(build_dataset(tables, tmp_path / "d", quiet_config()))
    assert ds.n_users == 4
    assert ds.manifest["skipped"]["users with fewer than 3 behaviours"] == 2


def test_duplicate_timestamps_keep_file_order(tmp_path: Path) -> None:
    interactions = pl.DataFrame(
        {"user": ["a"] * 4, "item": ["x", "y", "z", "w"], "timestamp": [5, 5, 5, 6], "query": [None] * 4},
        schema={"user": pl.String, "item": pl.String, "timestamp": pl.Int64, "query": pl.String},
    )
    items = pl.DataFrame({"item": ["w", "x", "y", "z"]})
    tables = tiny_tables()
    tables.interactions = pl.concat([tables.interactions, interactions])
    tables.items = pl.concat([tables.items, items], how="diagonal")
    ds = load_dataset(build_dataset(tables, tmp_path / "d", quiet_config(negatives=5)))
    user = ds.table("users")["raw_id"].to_list().index("a")
    ids = ds.items[ds.offsets[user] : ds.offsets[user + 1]]
    raw = ds.table("items")["raw_id"].to_list()
    assert [raw[i - 1] for i in ids] == ["x", "y", "z", "w"]


def test_manifest_records_inputs_and_counts(tmp_path: Path) -> None:
    raw = tmp_path / "raw.txt"
    raw.write_text("payload")
    tables = tiny_tables()
    tables.raw_files = [raw]
    build_dataset(tables, tmp_path / "d", quiet_config())
    manifest = json.loads((tmp_path / "d" / schema.MANIFEST).read_text())
    assert manifest["raw_inputs"][0]["sha256"] == (
        "239f59ed55e737c77147cf55ad0c1b030b6d7ee748a7426952f9b852d5a935e5"
    )
    assert manifest["counts"]["behaviours"] == 24
    assert manifest["encoders"]["item_text"] == "hashing-32"
    assert manifest["split"]["seed"] == 0 and manifest["split"]["scheme"] == "leave-one-out"


def test_prepare_skips_when_up_to_date_and_rebuilds_when_changed(tmp_path: Path) -> None:
    raw = tmp_path / "raw.txt"
    raw.write_text("v1")
    tables = tiny_tables()
    tables.raw_files = [raw]
    assert prepare(tables, tmp_path / "d", quiet_config()) is True
    assert prepare(tables, tmp_path / "d", quiet_config()) is False
    raw.write_text("v2")
    assert prepare(tables, tmp_path / "d", quiet_config()) is True


def test_interrupted_build_leaves_no_trusted_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from seminar.data import build

    def boom(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(build, "_write_tables", boom)
    with pytest.raises(KeyboardInterrupt):
        build_dataset(tiny_tables(), tmp_path / "d", quiet_config())
    assert not (tmp_path / "d").exists()
    assert not list(tmp_path.glob(".d.partial-*"))


def test_failed_rebuild_keeps_the_previous_dataset(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from seminar.data import build

    build_dataset(tiny_tables(), tmp_path / "d", quiet_config())
    before = (tmp_path / "d" / schema.MANIFEST).read_text()
    monkeypatch.setattr(build, "_write_tables", lambda *a, **k: (_ for _ in ()).throw(RuntimeError("disk")))
    with pytest.raises(RuntimeError):
        build_dataset(tiny_tables(), tmp_path / "d", quiet_config(), overwrite=True)
    assert (tmp_path / "d" / schema.MANIFEST).read_text() == before
    load_dataset(tmp_path / "d")


@pytest.mark.parametrize(
    ("column", "value", "message"),
    [("user", None, "row 2 has no user"), ("timestamp", None, "row 2 has no timestamp")],
)
def test_missing_values_are_named(tmp_path: Path, column: str, value: object, message: str) -> None:
    tables = tiny_tables()
    tables.interactions = tables.interactions.with_columns(
        pl.when(pl.int_range(pl.len()) == 1).then(value).otherwise(pl.col(column)).alias(column)
    )
    with pytest.raises(DataError, match=message):
        build_dataset(tables, tmp_path / "d", quiet_config())


def test_missing_interaction_column_is_named(tmp_path: Path) -> None:
    tables = tiny_tables()
    tables.interactions = tables.interactions.drop("timestamp")
    with pytest.raises(DataError, match="timestamp"):
        build_dataset(tables, tmp_path / "d", quiet_config())


def test_nan_content_vectors_are_rejected(tmp_path: Path) -> None:
    from seminar.data.sources.synthetic import SyntheticConfig, generate_synthetic

    tables = generate_synthetic(SyntheticConfig(users=20, items=100, mean_length=10))
    tables.item_vectors["text"][7, 3] = np.nan
    with pytest.raises(DataError, match="NaN"):
        build_dataset(tables, tmp_path / "d", quiet_config(text_encoder="none"))


def test_wrong_dimension_content_vectors_are_rejected(tmp_path: Path) -> None:
    from seminar.data.sources.synthetic import SyntheticConfig, generate_synthetic

    tables = generate_synthetic(SyntheticConfig(users=20, items=100, mean_length=10))
    tables.item_vectors["text"] = tables.item_vectors["text"][:-1]
    with pytest.raises(DataError, match="shape"):
        build_dataset(tables, tmp_path / "d", quiet_config(text_encoder="none"))


def test_too_few_items_for_negatives_is_explained(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="cannot sample 99 negatives"):
        build_dataset(tiny_tables(items=60), tmp_path / "d", quiet_config(negatives=99))


def test_content_vectors_follow_item_ids(tmp_path: Path) -> None:
    from seminar.data.encoders import HashingTextEncoder

    ds = load_dataset(build_dataset(tiny_tables(), tmp_path / "d", quiet_config()))
    titles = ds.table("items")["title"].to_list()
    expected = HashingTextEncoder(32).encode_texts(titles, progress=False)
    np.testing.assert_allclose(ds.vectors["item_text"][1:].astype(np.float32), expected, atol=2e-3)
    assert np.all(ds.vectors["item_text"][0] == 0)


class TestValidationOnLoad:
    """The invariant checks behind the per-file digests (a dataset written before digests existed
    has only these): the fixture's manifest lists no digests, so each edit meets the invariants."""

    @pytest.fixture
    def built(self, tmp_path: Path) -> Path:
        return without_digests(build_dataset(tiny_tables(), tmp_path / "d", quiet_config()))

    def test_missing_manifest(self, built: Path) -> None:
        (built / schema.MANIFEST).unlink()
        with pytest.raises(DataError, match="not a prepared dataset"):
            load_dataset(built)

    def test_truncated_array(self, built: Path) -> None:
        path = built / schema.SEQUENCE_FILES["items"][0]
        path.write_bytes(path.read_bytes()[:-10])
        with pytest.raises(DataError, match=r"items\.npy"):
            load_dataset(built)

    def test_out_of_range_item_id(self, built: Path) -> None:
        path = built / schema.SEQUENCE_FILES["items"][0]
        arr = np.load(path)
        arr[3] = 10_000
        np.save(path, arr)
        with pytest.raises(DataError, match="item id outside"):
            load_dataset(built)

    def test_item_attribute_offsets_must_rise(self, built: Path) -> None:
        path = built / schema.ITEM_FILES["attr_offsets"][0]
        arr = np.load(path)
        arr[2], arr[3] = arr[3] + 1, arr[2]  # same length and ends, one step down
        np.save(path, arr)
        with pytest.raises(DataError, match=r"items/attr_offsets\.npy: offsets must rise"):
            load_dataset(built)

    def test_item_attribute_id_beyond_the_vocabulary(self, built: Path) -> None:
        manifest = json.loads((built / schema.MANIFEST).read_text())
        manifest["counts"]["attributes"] = 0  # no vocabulary: even id 1 is out of range
        (built / schema.MANIFEST).write_text(json.dumps(manifest))
        with pytest.raises(DataError, match=r"items/attr_ids\.npy: attribute id outside \[1, 0\]"):
            load_dataset(built)

    def test_nan_vector_on_disk(self, built: Path) -> None:
        path = built / schema.vector_path("item_text")
        arr = np.load(path)
        arr[2, 0] = np.nan
        np.save(path, arr)
        with pytest.raises(DataError, match="NaN"):
            load_dataset(built)

    def test_schema_version(self, built: Path) -> None:
        manifest = json.loads((built / schema.MANIFEST).read_text())
        manifest["schema_version"] = 999
        (built / schema.MANIFEST).write_text(json.dumps(manifest))
        with pytest.raises(DataError, match="schema version"):
            load_dataset(built)


def test_a_second_prepare_of_one_folder_waits_and_reuses_the_first(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """While one build holds the folder's lock, another waits; then it finds the dataset and keeps it."""
    import threading

    from seminar.data import build
    from seminar.io import exclusive_lock

    out = tmp_path / "d"
    waited = threading.Event()
    monkeypatch.setattr(
        build, "build_lock", lambda out_dir, progress: exclusive_lock(tmp_path / ".d.lock", waited.set)
    )
    results: list[bool] = []
    with exclusive_lock(tmp_path / ".d.lock"):  # "another process" is building
        worker = threading.Thread(target=lambda: results.append(prepare(tiny_tables(), out, quiet_config())))
        worker.start()
        assert waited.wait(timeout=30)
        assert worker.is_alive() and not out.exists()  # it waits instead of building beside the other
        build._build_dataset(tiny_tables(), out, quiet_config(), overwrite=True, fingerprint=None)
    worker.join(timeout=60)
    assert results == [False]  # the finished dataset matched: not rebuilt


def test_exclusive_lock_is_released_after_an_error(tmp_path: Path) -> None:
    from seminar.io import exclusive_lock

    with pytest.raises(RuntimeError), exclusive_lock(tmp_path / "x.lock"):
        raise RuntimeError("failed build")
    with exclusive_lock(tmp_path / "x.lock", on_wait=lambda: pytest.fail("the lock was not released")):
        pass


def test_leftovers_of_a_killed_swap_are_cleared_only_when_the_dataset_is_in_place(tmp_path: Path) -> None:
    """A kill between the two renames of a rebuild leaves ``.d.old-PID`` (and maybe ``.d.partial-*``)."""
    build_dataset(tiny_tables(), tmp_path / "d", quiet_config())
    old = tmp_path / ".d.old-12345"
    old.mkdir()
    (tmp_path / ".d.partial-x").mkdir()
    build_dataset(tiny_tables(), tmp_path / "d", quiet_config(), overwrite=True)
    assert not old.exists() and not list(tmp_path.glob(".d.partial-*"))

    # killed after the old copy moved aside and before the new one moved in: keep the only copy
    (tmp_path / "d").rename(old)
    build_dataset(tiny_tables(), tmp_path / "e", quiet_config())  # another target: untouched
    assert old.is_dir()
    build_dataset(tiny_tables(), tmp_path / "d", quiet_config())
    assert old.is_dir() and (tmp_path / "d" / "manifest.json").is_file()


def test_a_file_edited_after_the_build_is_refused_on_load(tmp_path: Path) -> None:
    """In-range edits pass every invariant check; the manifest's sha256 still catches them."""
    out = build_dataset(tiny_tables(), tmp_path / "d", quiet_config())
    manifest = json.loads((out / "manifest.json").read_text())
    assert "sequences/items.npy" in manifest["files"] and "manifest.json" not in manifest["files"]
    load_dataset(out)  # verified once, then cached by size and modification time
    assert (out / ".verified.json").is_file()
    items = np.load(out / "sequences" / "items.npy")
    edited = items.copy()
    edited[[0, 1]] = edited[[1, 0]] if edited[0] != edited[1] else edited[[0, 1]] % items.max() + 1
    assert not np.array_equal(edited, items) and edited.min() >= 1 and edited.max() <= items.max()
    np.save(out / "sequences" / "items.npy", edited)  # same size, valid ids: only the digest differs
    with pytest.raises(DataError, match=r"items.npy: contents differ from what the build wrote"):
        load_dataset(out)
    (out / "sequences" / "items.npy").unlink()
    with pytest.raises(DataError, match=r"dataset file sequences/items\.npy is missing"):
        load_dataset(out)
