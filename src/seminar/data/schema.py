"""The canonical dataset directory: which files, which dtypes, and validation on load.

Sequences are stored once per user in CSR form (``offsets`` into flat behaviour arrays), never
one copy per training sample. Ids are dense and start at 1 so that 0 is always padding; query
id 1 is the empty query of a recommendation behaviour, which is a real (learned) embedding.
Large arrays are memory-mapped on load so that a 25M-behaviour dataset opens instantly.
"""

from __future__ import annotations

import contextlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from seminar.data.tables import DataError
from seminar.io import json_digest, sha256_file, write_json_atomic

if TYPE_CHECKING:  # polars is imported where a table is read: the arrays load without it
    import polars as pl

SCHEMA_VERSION = 1
MANIFEST = "manifest.json"
VERIFIED = ".verified.json"  # size and mtime of each file when its sha256 last matched the manifest
PAD = 0
EMPTY_QUERY = 1
RECOMMENDATION = 0
SEARCH = 1

# name -> (relative path, dtype). Optional files are checked only when the manifest lists them.
SEQUENCE_FILES: dict[str, tuple[str, str]] = {
    "offsets": ("sequences/offsets.npy", "int64"),
    "items": ("sequences/items.npy", "int32"),
    "queries": ("sequences/queries.npy", "int32"),
    "timestamps": ("sequences/timestamps.npy", "int64"),
    "behaviour": ("sequences/behaviour.npy", "int8"),
}
ITEM_FILES: dict[str, tuple[str, str]] = {
    "attr_offsets": ("items/attr_offsets.npy", "int64"),
    "attr_ids": ("items/attr_ids.npy", "int32"),
    "representative_query": ("items/representative_query.npy", "int32"),
}
# User attributes: CSR over the 0-based user index of ``sequences/offsets.npy``. Datasets
# prepared before user features existed have no ``user_fields`` in the manifest and no such files.
USER_FILES: dict[str, tuple[str, str]] = {
    "user_attr_offsets": ("users/attr_offsets.npy", "int64"),
    "user_attr_ids": ("users/attr_ids.npy", "int32"),
}
SPLIT_FILES: dict[str, tuple[str, str]] = {
    "test_negatives": ("split/test_negatives.npy", "int32"),
    "valid_negatives": ("split/valid_negatives.npy", "int32"),
}
TOKEN_FILES: dict[str, tuple[str, str]] = {
    "item_token_offsets": ("tokens/item_offsets.npy", "int64"),
    "item_token_ids": ("tokens/item_ids.npy", "int32"),
    "query_token_offsets": ("tokens/query_offsets.npy", "int64"),
    "query_token_ids": ("tokens/query_ids.npy", "int32"),
}
TABLE_FILES = {
    "users": "tables/users.parquet",
    "items": "tables/items.parquet",
    "queries": "tables/queries.parquet",
    "attributes": "tables/attributes.parquet",
    "user_attributes": "tables/user_attributes.parquet",
}
# Tables that datasets prepared before user features lack, with their columns' polars dtypes (read
# back empty).
OPTIONAL_TABLES: dict[str, dict[str, str]] = {
    "user_attributes": {"field": "String", "value": "String", "user_attribute_id": "Int32"},
}
# Content vector channels and which id space their rows follow.
VECTOR_CHANNELS = {"query_text": "query", "item_text": "item", "item_image": "item"}


def vector_path(channel: str) -> str:
    return f"vectors/{channel}.npy"


@dataclass
class SeminarDataset:
    """A loaded, validated canonical dataset. Arrays are read-only (memory-mapped)."""

    root: Path
    manifest: dict[str, Any]
    offsets: np.ndarray
    items: np.ndarray
    queries: np.ndarray
    timestamps: np.ndarray
    behaviour: np.ndarray
    attr_offsets: np.ndarray
    attr_ids: np.ndarray
    representative_query: np.ndarray
    test_negatives: np.ndarray
    valid_negatives: np.ndarray
    vectors: dict[str, np.ndarray] = field(default_factory=dict)
    tokens: dict[str, np.ndarray] = field(default_factory=dict)
    user_attr_offsets: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    user_attr_ids: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int32))

    def __post_init__(self) -> None:
        # No user features (an older dataset): every user has an empty attribute row.
        if self.user_attr_offsets.size == 0:
            self.user_attr_offsets = np.zeros(self.n_users + 1, dtype=np.int64)

    @property
    def n_users(self) -> int:
        return int(self.offsets.shape[0] - 1)

    @property
    def n_items(self) -> int:
        """Number of real items; valid item ids are 1..n_items."""
        return int(self.manifest["counts"]["items"])

    @property
    def n_queries(self) -> int:
        """Number of query ids including the empty query; valid ids are 1..n_queries."""
        return int(self.manifest["counts"]["queries"])

    @property
    def n_attributes(self) -> int:
        return int(self.manifest["counts"]["attributes"])

    @property
    def n_user_attributes(self) -> int:
        """Number of (field, value) user attributes; valid ids are 1..n_user_attributes."""
        return int(self.manifest["counts"].get("user_attributes", 0))

    @property
    def user_fields(self) -> list[str]:
        return list(self.manifest.get("user_fields", []))

    @property
    def lengths(self) -> np.ndarray:
        return np.diff(self.offsets)

    def table(self, name: str) -> pl.DataFrame:
        """Read one of the id tables (users, items, queries, attributes, user_attributes) on demand.

        A table that older datasets lack (``user_attributes``) reads as an empty frame there.
        """
        import polars as pl

        path = self.root / TABLE_FILES[name]
        if not path.is_file():
            if name in OPTIONAL_TABLES and "user_fields" not in self.manifest:
                columns = OPTIONAL_TABLES[name].items()
                return pl.DataFrame(schema={column: getattr(pl, dtype)() for column, dtype in columns})
            raise DataError(
                f"{self.root}: dataset file {TABLE_FILES[name]} is missing; re-run `seminar prepare`"
            )
        return pl.read_parquet(path)

    def item_attributes_padded(self, max_attributes: int | None = None) -> np.ndarray:
        """Attribute ids per item as a [n_items + 1, width] matrix padded with 0 (for embedding bags)."""
        return padded_rows(self.attr_offsets, self.attr_ids, max_attributes).astype(np.int32)

    def user_attributes_padded(self, max_attributes: int | None = None) -> np.ndarray:
        """User attribute ids as a [n_users, width] int32 matrix padded with 0 (row = user index)."""
        return padded_rows(self.user_attr_offsets, self.user_attr_ids, max_attributes).astype(np.int32)


def padded_rows(offsets: np.ndarray, ids: np.ndarray, max_width: int | None = None) -> np.ndarray:
    """CSR rows as a [rows, width] int64 matrix padded with 0, each row cut to ``max_width``."""
    counts = np.diff(offsets)
    if max_width is not None:
        counts = np.minimum(counts, max_width)
    out = np.zeros((counts.size, max(int(counts.max(initial=0)), 1)), dtype=np.int64)
    rows = np.repeat(np.arange(counts.size), counts)
    cols = np.arange(counts.sum()) - np.repeat(np.cumsum(counts) - counts, counts)
    out[rows, cols] = ids[np.repeat(offsets[:-1], counts) + cols]
    return out


def _load_array(root: Path, rel: str, dtype: str, mmap: bool) -> np.ndarray:
    path = root / rel
    if not path.is_file():
        raise DataError(f"{root}: dataset file {rel} is missing; re-run `seminar prepare`")
    try:
        arr = np.load(path, mmap_mode="r" if mmap else None, allow_pickle=False)
    except (ValueError, OSError, EOFError) as exc:
        raise DataError(f"{path}: unreadable or truncated array ({exc})") from exc
    if arr.dtype != np.dtype(dtype):
        raise DataError(f"{path}: dtype {arr.dtype}, expected {dtype}")
    return arr


def manifest_digest(manifest: dict[str, Any]) -> str:
    """What identifies a dataset's content: a digest of its manifest (inputs, options, counts) less
    the build's wall time, so two builds of the same inputs agree and any other change differs."""
    return json_digest({k: v for k, v in manifest.items() if k != "build_seconds"})


def read_manifest(root: Path) -> dict[str, Any]:
    path = Path(root) / MANIFEST
    if not path.is_file():
        raise DataError(
            f"{root}: no {MANIFEST}; this is not a prepared dataset (or its preparation did not finish)"
        )
    try:
        manifest = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise DataError(f"{path}: not valid JSON ({exc})") from exc
    version = manifest.get("schema_version")
    if version != SCHEMA_VERSION:
        raise DataError(f"{path}: schema version {version}, this library reads {SCHEMA_VERSION}")
    return manifest


def _stamp(path: Path) -> list[int]:
    stat = path.stat()
    return [stat.st_size, stat.st_mtime_ns]


def verify_files(root: Path, files: dict[str, dict[str, Any]]) -> None:
    """Check every dataset file against the size and sha256 the build recorded.

    Hashing is skipped for a file whose size and modification time equal those cached in
    ``.verified.json`` at its last successful check, so an unchanged dataset loads at the cost of
    a ``stat`` per file; a file edited in place gets a new modification time and is hashed again.
    (A write that restores the old modification time on purpose is not detected.)
    """
    cache_path = root / VERIFIED
    try:
        cache = json.loads(cache_path.read_text())
    except (OSError, ValueError):
        cache = {}
    cache = cache if isinstance(cache, dict) else {}
    stamps: dict[str, list[int]] = {MANIFEST: _stamp(root / MANIFEST)}
    for rel, info in files.items():
        path = root / rel
        if not path.is_file():
            raise DataError(f"{root}: dataset file {rel} is missing; re-run `seminar prepare --force`")
        stamps[rel] = _stamp(path)
        if stamps[rel][0] != info["bytes"]:
            raise DataError(
                f"{path}: {stamps[rel][0]} bytes, the build wrote {info['bytes']}; "
                "the file changed since: re-run `seminar prepare --force`"
            )
        fresh = cache.get(MANIFEST) == stamps[MANIFEST] and cache.get(rel) == stamps[rel]
        if not fresh and sha256_file(path) != info["sha256"]:
            raise DataError(
                f"{path}: contents differ from what the build wrote (sha256); "
                "the file was edited: re-run `seminar prepare --force`"
            )
    if stamps != cache:
        with contextlib.suppress(OSError):  # a read-only dataset is verified again on its next load
            write_json_atomic(cache_path, stamps)


def load_dataset(root: Path | str, *, mmap: bool = True, check_vectors: bool = True) -> SeminarDataset:
    """Open a prepared dataset and validate it; every problem is reported with the file it is in.

    Each file is checked against the size and sha256 in the manifest (:func:`verify_files`), so a
    dataset edited after its build is refused, not silently reused.
    """
    root = Path(root)
    manifest = read_manifest(root)
    if "files" in manifest:  # datasets built before per-file digests were recorded have none
        verify_files(root, manifest["files"])
    arrays = {
        name: _load_array(root, rel, dt, mmap)
        for name, (rel, dt) in {**SEQUENCE_FILES, **ITEM_FILES, **SPLIT_FILES}.items()
    }
    if "user_fields" in manifest:  # written by every build since user features exist
        arrays.update({name: _load_array(root, rel, dt, mmap) for name, (rel, dt) in USER_FILES.items()})
    tokens: dict[str, np.ndarray] = {}
    if manifest.get("text_kind") == "tokens":
        tokens = {name: _load_array(root, rel, dt, mmap) for name, (rel, dt) in TOKEN_FILES.items()}
    vectors: dict[str, np.ndarray] = {}
    for channel, info in manifest.get("vectors", {}).items():
        arr = _load_array(root, vector_path(channel), "float16", mmap)
        if arr.ndim != 2 or arr.shape[1] != info["dim"]:
            raise DataError(f"{root / vector_path(channel)}: shape {arr.shape}, expected (*, {info['dim']})")
        vectors[channel] = arr
    ds = SeminarDataset(root=root, manifest=manifest, vectors=vectors, tokens=tokens, **arrays)
    validate(ds, check_vectors=check_vectors)
    return ds


def _fail(ds: SeminarDataset, rel: str, msg: str) -> None:
    raise DataError(f"{ds.root / rel}: {msg}")


def validate(ds: SeminarDataset, *, check_vectors: bool = True) -> None:
    """Check the invariants every consumer relies on; raise DataError naming the file at fault."""
    counts = ds.manifest["counts"]
    off = ds.offsets
    n_beh = int(counts["behaviours"])
    if off.ndim != 1 or off.size != counts["users"] + 1 or off[0] != 0 or off[-1] != n_beh:
        _fail(
            ds,
            SEQUENCE_FILES["offsets"][0],
            f"offsets do not describe {counts['users']} users and {n_beh} behaviours",
        )
    if np.any(np.diff(off) < int(ds.manifest["split"]["min_behaviours"])):
        _fail(ds, SEQUENCE_FILES["offsets"][0], "a user has fewer behaviours than the split needs")
    for name in ("items", "queries", "timestamps", "behaviour"):
        arr = getattr(ds, name)
        if arr.shape != (n_beh,):
            _fail(ds, SEQUENCE_FILES[name][0], f"shape {arr.shape}, expected ({n_beh},)")
    _check_range(ds, ds.items, 1, ds.n_items, SEQUENCE_FILES["items"][0], "item id")
    _check_range(ds, ds.queries, 1, ds.n_queries, SEQUENCE_FILES["queries"][0], "query id")
    is_search = ds.behaviour == SEARCH
    if np.any(is_search != (np.asarray(ds.queries) != EMPTY_QUERY)):
        _fail(ds, SEQUENCE_FILES["behaviour"][0], "behaviour type disagrees with the empty query")
    item_paths = (ITEM_FILES["attr_offsets"][0], ITEM_FILES["attr_ids"][0])
    _validate_csr(ds, ds.attr_offsets, ds.attr_ids, ds.n_items + 1, ds.n_attributes, item_paths, "attribute")
    if ds.representative_query.shape != (ds.n_items + 1,):
        _fail(ds, ITEM_FILES["representative_query"][0], "one query per item id expected")
    user_paths = (USER_FILES["user_attr_offsets"][0], USER_FILES["user_attr_ids"][0])
    user_csr = (ds.user_attr_offsets, ds.user_attr_ids)
    _validate_csr(ds, *user_csr, ds.n_users, ds.n_user_attributes, user_paths, "user attribute")
    for name in ("test_negatives", "valid_negatives"):
        arr = getattr(ds, name)
        if arr.shape != (ds.n_users, int(ds.manifest["split"]["negatives"])):
            _fail(ds, SPLIT_FILES[name][0], f"shape {arr.shape} does not match users x negatives")
        _check_range(ds, arr, 1, ds.n_items, SPLIT_FILES[name][0], "negative item id")
    for channel, arr in ds.vectors.items():
        rows = ds.n_queries + 1 if VECTOR_CHANNELS[channel] == "query" else ds.n_items + 1
        if arr.shape[0] != rows:
            _fail(ds, vector_path(channel), f"{arr.shape[0]} rows, expected {rows}")
        if check_vectors and not np.isfinite(np.asarray(arr, dtype=np.float32)).all():
            _fail(ds, vector_path(channel), "contains NaN or infinite values")


def _validate_csr(
    ds: SeminarDataset,
    offsets: np.ndarray,
    ids: np.ndarray,
    rows: int,
    n_ids: int,
    paths: tuple[str, str],
    what: str,
) -> None:
    """An id-list CSR (item attributes, user attributes): ``rows`` rows, offsets rising from 0 to
    the number of ids, ids within 1..``n_ids`` (none at all when the vocabulary is empty).
    ``paths`` are the offsets' and the ids' files, named in errors."""
    off_rel, ids_rel = paths
    if offsets.ndim != 1 or offsets.size != rows + 1:
        _fail(ds, off_rel, f"shape {offsets.shape}, expected ({rows + 1},): one row per id")
    if ids.ndim != 1:
        _fail(ds, ids_rel, f"shape {ids.shape}, expected one dimension")
    if offsets[0] != 0 or offsets[-1] != ids.size or np.any(np.diff(offsets) < 0):
        _fail(ds, off_rel, f"offsets must rise from 0 to {ids.size} (the number of {what} ids)")
    _check_range(ds, ids, 1, n_ids, ids_rel, f"{what} id")


def _check_range(ds: SeminarDataset, arr: np.ndarray, lo: int, hi: int, rel: str, what: str) -> None:
    if arr.size and (int(arr.min()) < lo or int(arr.max()) > hi):
        _fail(ds, rel, f"{what} outside [{lo}, {hi}] (found {int(arr.min())}..{int(arr.max())})")
