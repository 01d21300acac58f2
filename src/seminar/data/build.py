"""Turn a source's raw tables into the canonical dataset directory.

The work every source shares lives here: deterministic id maps (sorted raw ids, never set
order), per-user chronological CSR sequences, attribute and token tables, content vectors
(through the cache), the leave-one-out split and the manifest. The directory is built under a
temporary name and swapped in at the end, so an interrupted run leaves nothing a later run trusts.
"""

from __future__ import annotations

import contextlib
import json
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
from tqdm.auto import tqdm

from seminar.data import schema
from seminar.data.categories import category_per_item
from seminar.data.split import (
    SplitConfig,
    query_pools,
    sample_category_negatives,
    sample_negatives,
    sample_pooled_negatives,
)
from seminar.data.tables import IMAGE_PATH, ITEM, QUERY, TIMESTAMP, TITLE, USER, DataError, SourceTables
from seminar.io import (
    atomic_directory,
    atomic_path,
    exclusive_lock,
    file_digests,
    save_npy_atomic,
    sha256_file,
    write_json_atomic,
)


@dataclass
class BuildConfig:
    """How to build: which encoders, how to split, where vectors are cached."""

    text_encoder: str = "minilm"
    image_encoder: str = "none"
    split: SplitConfig = field(default_factory=SplitConfig)
    max_behaviours: int | None = None
    cache_dir: Path | None = None
    progress: bool = True


@dataclass
class IdMaps:
    users: pl.Series
    items: pl.Series
    queries: pl.Series


def _check_interactions(frame: pl.DataFrame, source: str) -> None:
    missing = [c for c in (USER, ITEM, TIMESTAMP, QUERY) if c not in frame.columns]
    if missing:
        raise DataError(f"{source}: interactions miss column(s) {missing}")
    if frame.height == 0:
        raise DataError(f"{source}: no interactions")
    for col in (USER, ITEM, TIMESTAMP):
        nulls = frame[col].is_null()
        if nulls.any():
            row = int(nulls.arg_max())
            raise DataError(f"{source}: interaction row {row + 1} has no {col}")
    if not frame[TIMESTAMP].dtype.is_integer():
        raise DataError(f"{source}: timestamp column must be integer, got {frame[TIMESTAMP].dtype}")


def _map(values: pl.Series, vocab: pl.Series, start: int) -> np.ndarray:
    lookup = pl.DataFrame({"key": vocab, "id": np.arange(start, start + vocab.len(), dtype=np.int32)})
    mapped = pl.DataFrame({"key": values}).join(lookup, on="key", how="left", maintain_order="left")
    return mapped["id"].to_numpy(writable=True)


def order_behaviours(
    frame: pl.DataFrame, split: SplitConfig, max_behaviours: int | None, skipped: dict[str, int]
) -> pl.DataFrame:
    """Sort by (user, timestamp, file order), keep the latest ``max_behaviours``, drop short users.

    Rows repeated exactly (user, item, time and query) are kept, as a repeated click is a real
    signal in many logs, and counted in the manifest so that a duplicated export is noticed.
    """
    repeats = frame.height - frame.unique().height
    if repeats:
        skipped["rows repeating an earlier row exactly (same user, item, time and query; kept)"] = repeats
    frame = frame.with_row_index("_row").sort([USER, TIMESTAMP, "_row"])
    if max_behaviours is not None:
        before = frame.height
        frame = frame.filter(pl.int_range(pl.len()).over(USER) >= pl.len().over(USER) - max_behaviours)
        if before - frame.height:
            skipped["behaviours beyond --max-behaviours (oldest dropped)"] = before - frame.height
    lengths = frame.group_by(USER).len()
    short = lengths.filter(pl.col("len") < split.min_behaviours)
    if short.height:
        skipped[f"users with fewer than {split.min_behaviours} behaviours"] = short.height
        skipped[f"behaviours of users with fewer than {split.min_behaviours} behaviours"] = int(
            short["len"].sum()
        )
        frame = frame.join(short.select(USER), on=USER, how="anti", maintain_order="left")
    if frame.height == 0:
        raise DataError(
            f"no user has at least {split.min_behaviours} behaviours; nothing to split into train/valid/test"
        )
    return frame.drop("_row")


def _field_csr(
    frame: pl.DataFrame, key: str, fields: list[str], keys: pl.Series, first_row: int, id_name: str, what: str
) -> tuple[np.ndarray, np.ndarray, pl.DataFrame]:
    """Categorical (field, value) ids per key as CSR, and their vocabulary sorted by (field, value).

    ``keys[i]`` owns CSR row ``first_row + i`` (items start at 1 so row 0 is padding; users at 0),
    so item attributes and user features share one implementation. Ids start at 1 (0 pads);
    null and empty values are dropped, and a value repeated within a key is stored once.
    """
    parts = []
    for name in fields:
        col = frame[name]
        if col.dtype != pl.List(pl.String):
            raise DataError(f"{what} field {name!r} must be a list of strings, got {col.dtype}")
        parts.append(
            frame.select(pl.col(key), pl.col(name).alias("value"))
            .explode("value")
            .drop_nulls("value")
            .filter(pl.col("value").str.len_chars() > 0)
            .with_columns(pl.lit(name).alias("field"))
        )
    if parts:
        pairs = pl.concat(parts).unique(maintain_order=True)
    else:
        pairs = pl.DataFrame(schema={key: keys.dtype, "value": pl.String, "field": pl.String})
    vocab = pairs.select("field", "value").unique().sort(["field", "value"])
    vocab = vocab.with_columns(pl.int_range(1, vocab.height + 1, dtype=pl.Int32).alias(id_name))
    rows = pl.DataFrame({key: keys, "_row": np.arange(first_row, first_row + keys.len(), dtype=np.int64)})
    pairs = (
        pairs.join(rows, on=key, how="inner")
        .join(vocab, on=["field", "value"], how="inner")
        .sort(["_row", id_name])
    )
    counts = np.bincount(pairs["_row"].to_numpy(), minlength=first_row + keys.len())
    offsets = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
    return offsets, pairs[id_name].to_numpy().astype(np.int32), vocab


def _attribute_csr(
    items: pl.DataFrame, fields: list[str], item_vocab: pl.Series
) -> tuple[np.ndarray, np.ndarray, pl.DataFrame]:
    """Attribute ids per item (CSR over item ids 0..n) and the (field, value) vocabulary."""
    return _field_csr(items, ITEM, fields, item_vocab, 1, "attribute_id", "attribute")


def _user_attribute_csr(
    users: pl.DataFrame, fields: list[str], user_vocab: pl.Series
) -> tuple[np.ndarray, np.ndarray, pl.DataFrame]:
    """User attribute ids per user (CSR over user indices 0..U-1) and their own vocabulary."""
    return _field_csr(users, USER, fields, user_vocab, 0, "user_attribute_id", "user")


def _representative_queries(
    items: np.ndarray, queries: np.ndarray, n_items: int, rng: np.random.Generator
) -> np.ndarray:
    """One observed query per item (a random occurrence), for the `pair` test mode's negatives."""
    order = rng.permutation(items.size)
    rep = np.full(n_items + 1, schema.EMPTY_QUERY, dtype=np.int32)
    rep[0] = schema.PAD
    rep[items[order]] = queries[order]  # last write wins: a random occurrence per item
    return rep


def _raw_inputs(files: list[Path]) -> list[dict[str, Any]]:
    out = []
    for path in files:
        path = Path(path)
        out.append({"path": str(path), "bytes": path.stat().st_size, "sha256": sha256_file(path)})
    return out


def source_fingerprint(tables: SourceTables, config: BuildConfig) -> dict[str, Any]:
    """What decides the dataset's content: raw file hashes, source options, build options.

    ``user_fields`` is part of it so that a dataset prepared before user features were stored
    (its manifest has no such key) never matches and is rebuilt rather than trusted.
    """
    split = config.split.identity()
    return {
        "source": tables.name,
        "params": {k: str(v) for k, v in sorted(tables.params.items())},
        "raw_inputs": _raw_inputs(tables.raw_files),
        "user_fields": list(tables.user_fields),
        "build": {
            "text_encoder": config.text_encoder,
            "image_encoder": config.image_encoder,
            "max_behaviours": config.max_behaviours,
            "split": split,
        },
    }


def prepare(
    tables: SourceTables, out_dir: Path | str, config: BuildConfig | None = None, *, force: bool = False
) -> bool:
    """Build ``out_dir`` unless it already holds a valid dataset of the same inputs and options.

    Returns True when it built. An existing dataset that fails validation is rebuilt, never trusted.
    A folder that holds anything but a dataset is never replaced, ``force`` or not: it may hold
    the very inputs being read.
    """
    config = config or BuildConfig()
    fingerprint = source_fingerprint(tables, config)
    _refuse_foreign_folder(Path(out_dir))
    with build_lock(Path(out_dir), config.progress):
        # checked under the lock: a build that finished while this one waited is reused, not redone
        if not force and _matches(Path(out_dir), fingerprint):
            return False
        _build_dataset(tables, Path(out_dir), config, overwrite=True, fingerprint=fingerprint)
    return True


def is_dataset_folder(path: Path) -> bool:
    """Whether ``path`` holds a dataset this project wrote (a manifest with a schema version),
    valid or not: only such a folder may be replaced by a new build."""
    try:
        manifest = json.loads((path / schema.MANIFEST).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return isinstance(manifest, dict) and "schema_version" in manifest and "counts" in manifest


def _refuse_foreign_folder(out_dir: Path) -> None:
    if out_dir.is_dir() and any(out_dir.iterdir()) and not is_dataset_folder(out_dir):
        raise DataError(
            f"{out_dir} is not empty and holds no dataset; prepare writes to a new or empty folder "
            "(or replaces a dataset it wrote), so choose another --out"
        )
    if out_dir.exists() and not out_dir.is_dir():
        raise DataError(f"{out_dir} is a file; choose a folder for --out")


def _category_negatives(
    offsets: np.ndarray,
    item_ids: np.ndarray,
    n_items: int,
    split: SplitConfig,
    rng: np.random.Generator,
    tables: SourceTables,
    attributes: tuple[np.ndarray, np.ndarray, pl.DataFrame],
    skipped: dict[str, int],
) -> tuple[np.ndarray, np.ndarray]:
    """Test and validation negatives from each held-out positive's own category (counted shortfalls)."""
    attr_offsets, attr_ids, vocab = attributes
    category = category_per_item(
        list(tables.attribute_fields), vocab, attr_offsets, attr_ids, n_items, vocab.height
    )
    if not category.any():
        raise DataError(
            "--eval-negatives category needs an item attribute to take the category from; "
            "this dataset has none"
        )
    out = []
    for stage, back in (("test", 1), ("validation", 2)):
        positives = item_ids[offsets[1:] - back]
        negatives, short = sample_category_negatives(
            offsets, item_ids, n_items, split.negatives, rng, category, positives
        )
        if short:
            reason = f"{stage} users whose positive's category had too few unseen items (rest uniform)"
            skipped[reason] = short
        out.append(negatives)
    return out[0], out[1]


def _query_negatives(
    offsets: np.ndarray,
    item_ids: np.ndarray,
    query_ids: np.ndarray,
    n_items: int,
    split: SplitConfig,
    rng: np.random.Generator,
    skipped: dict[str, int],
) -> tuple[np.ndarray, np.ndarray]:
    """Test and validation negatives among the items other users clicked under the held-out
    behaviour's own query (training clicks only); a held-out recommendation, or a query whose pool
    runs short, gets uniform items (counted)."""
    if not (query_ids != schema.EMPTY_QUERY).any():
        raise DataError("--eval-negatives query needs search behaviours (queries); this dataset has none")
    pool_of = query_pools(offsets, item_ids, query_ids, n_items, 2, schema.EMPTY_QUERY)
    out = []
    for stage, back in (("test", 1), ("validation", 2)):
        wanted = query_ids[offsets[1:] - back].astype(np.int64)
        wanted[wanted == schema.EMPTY_QUERY] = 0  # a recommendation has no query to match
        negatives, short = sample_pooled_negatives(
            offsets, item_ids, n_items, split.negatives, rng, wanted, pool_of
        )
        if short:
            skipped[f"{stage} users whose query's clicked items ran short (rest uniform)"] = short
        if (wanted == 0).any():
            skipped[f"{stage} users whose held-out behaviour has no query (uniform negatives)"] = int(
                np.count_nonzero(wanted == 0)
            )
        out.append(negatives)
    return out[0], out[1]


def build_lock(out_dir: Path, progress: bool) -> contextlib.AbstractContextManager[None]:
    """One build of ``out_dir`` at a time (a hidden lock file beside it); later ones wait."""

    def waiting() -> None:
        if progress:
            tqdm.write(f"waiting for another process that is preparing {out_dir} ...", file=sys.stderr)

    return exclusive_lock(out_dir.parent / f".{out_dir.name}.lock", on_wait=waiting)


def _matches(out_dir: Path, fingerprint: dict[str, Any]) -> bool:
    if not (out_dir / schema.MANIFEST).is_file():
        return False
    try:
        ds = schema.load_dataset(out_dir)
    except DataError:
        return False
    return all(ds.manifest.get(key) == value for key, value in fingerprint.items())


def build_dataset(
    tables: SourceTables,
    out_dir: Path | str,
    config: BuildConfig | None = None,
    *,
    overwrite: bool = False,
    fingerprint: dict[str, Any] | None = None,
) -> Path:
    """Build the canonical dataset for ``tables`` at ``out_dir`` (atomically) and return its path."""
    config = config or BuildConfig()
    out_dir = Path(out_dir)
    with build_lock(out_dir, config.progress):
        return _build_dataset(tables, out_dir, config, overwrite=overwrite, fingerprint=fingerprint)


def _build_dataset(
    tables: SourceTables,
    out_dir: Path,
    config: BuildConfig,
    *,
    overwrite: bool,
    fingerprint: dict[str, Any] | None,
) -> Path:
    started = time.perf_counter()
    steps = tqdm(total=6, desc=f"prepare {tables.name}", disable=not config.progress, unit="step")
    _check_interactions(tables.interactions, tables.name)
    fingerprint = fingerprint or source_fingerprint(tables, config)
    skipped = dict(tables.skipped)

    frame = order_behaviours(
        tables.interactions.select(USER, ITEM, TIMESTAMP, QUERY), config.split, config.max_behaviours, skipped
    )
    steps.update()
    user_vocab = frame[USER].unique(maintain_order=True)  # already sorted by user
    item_vocab = frame[ITEM].unique().sort()
    query_vocab = frame[QUERY].drop_nulls().unique().sort()
    item_ids = _map(frame[ITEM], item_vocab, 1)
    query_ids = _map(frame[QUERY], query_vocab, schema.EMPTY_QUERY + 1)
    query_ids[frame[QUERY].is_null().to_numpy()] = schema.EMPTY_QUERY
    lengths = frame.group_by(USER, maintain_order=True).len()["len"].to_numpy()
    offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
    timestamps = frame[TIMESTAMP].to_numpy().astype(np.int64)
    behaviour = (query_ids != schema.EMPTY_QUERY).astype(np.int8)
    n_items, n_queries = item_vocab.len(), query_vocab.len() + 1
    del frame
    steps.update()

    items = _items_frame(tables, item_vocab, skipped)
    attr_offsets, attr_ids, attr_vocab = _attribute_csr(items, tables.attribute_fields, item_vocab)
    users = _users_frame(tables, user_vocab, skipped)
    user_attr_offsets, user_attr_ids, user_attr_vocab = _user_attribute_csr(
        users, tables.user_fields, user_vocab
    )
    steps.update()

    rng = np.random.default_rng(config.split.seed)
    if config.split.eval_negatives == "category":
        attributes = (attr_offsets, attr_ids, attr_vocab)
        test_neg, valid_neg = _category_negatives(
            offsets, item_ids, n_items, config.split, rng, tables, attributes, skipped
        )
    elif config.split.eval_negatives == "query":
        test_neg, valid_neg = _query_negatives(
            offsets, item_ids, query_ids, n_items, config.split, rng, skipped
        )
    else:
        test_neg = sample_negatives(
            offsets, item_ids, n_items, config.split.negatives, rng, config.split.sampling
        )
        valid_neg = sample_negatives(
            offsets, item_ids, n_items, config.split.negatives, rng, config.split.sampling
        )
    rep_query = _representative_queries(item_ids, query_ids, n_items, rng)
    steps.update()

    from seminar.data import content  # local: pulls in torch/transformers only when building

    vectors, tokens, encoders = content.compute_content(tables, items, query_vocab, config)
    steps.update()

    with atomic_directory(out_dir, overwrite=overwrite) as work:
        arrays = {
            "offsets": offsets,
            "items": item_ids,
            "queries": query_ids,
            "timestamps": timestamps,
            "behaviour": behaviour,
            "attr_offsets": attr_offsets,
            "attr_ids": attr_ids,
            "user_attr_offsets": user_attr_offsets,
            "user_attr_ids": user_attr_ids,
            "representative_query": rep_query,
            "test_negatives": test_neg,
            "valid_negatives": valid_neg,
        }
        all_files = {
            **schema.SEQUENCE_FILES,
            **schema.ITEM_FILES,
            **schema.USER_FILES,
            **schema.SPLIT_FILES,
            **schema.TOKEN_FILES,
        }
        arrays.update(tokens)
        for name, arr in arrays.items():
            rel, dtype = all_files[name]
            save_npy_atomic(work / rel, arr.astype(dtype, copy=False))
        for channel, arr in vectors.items():
            save_npy_atomic(work / schema.vector_path(channel), arr.astype(np.float16, copy=False))
        _write_tables(work, user_vocab, items, item_vocab, query_vocab, attr_vocab, user_attr_vocab)
        counts = {
            "users": int(lengths.size),
            "items": int(n_items),
            "queries": int(n_queries),
            "attributes": int(attr_vocab.height),
            "user_attributes": int(user_attr_vocab.height),
            "behaviours": int(offsets[-1]),
            "search_behaviours": int(behaviour.sum()),
        }
        manifest = {
            "schema_version": schema.SCHEMA_VERSION,
            **fingerprint,
            "text_kind": tables.text_kind,
            "synthetic_queries": tables.synthetic_queries,
            "attribute_fields": list(tables.attribute_fields),
            "user_fields": list(tables.user_fields),
            "counts": counts,
            "skipped": skipped,
            "encoders": encoders,
            "vectors": {
                ch: {"dim": int(arr.shape[1]), "encoder": encoders[ch]} for ch, arr in vectors.items()
            },
            "split": {**asdict(config.split), "scheme": "leave-one-out"},
            "build_seconds": round(time.perf_counter() - started, 3),
        }
        written = sorted(p.relative_to(work).as_posix() for p in work.rglob("*") if p.is_file())
        manifest["files"] = file_digests(work, written)  # checked on every load (schema.verify_files)
        write_json_atomic(work / schema.MANIFEST, manifest)  # written last: marks a finished build
    steps.update()
    steps.close()
    return out_dir


def _items_frame(tables: SourceTables, item_vocab: pl.Series, skipped: dict[str, int]) -> pl.DataFrame:
    """Side information aligned with ``item_vocab``; items without a row get empty fields."""
    items = tables.items
    if ITEM not in items.columns:
        raise DataError(f"{tables.name}: items table has no {ITEM!r} column")
    if items[ITEM].dtype != item_vocab.dtype:
        items = items.with_columns(pl.col(ITEM).cast(item_vocab.dtype, strict=False))
    dup = items[ITEM].is_duplicated()
    if dup.any():
        raise DataError(
            f"{tables.name}: item {items[ITEM][int(dup.arg_max())]!r} appears twice in the item table"
        )
    cols = [c for c in (TITLE, IMAGE_PATH) if c in items.columns] + list(tables.attribute_fields)
    for name in tables.attribute_fields:
        if name not in items.columns:
            raise DataError(f"{tables.name}: attribute field {name!r} is not a column of the item table")
    aligned = pl.DataFrame({ITEM: item_vocab}).join(
        items.select(ITEM, *cols), on=ITEM, how="left", maintain_order="left"
    )
    known = item_vocab.is_in(items[ITEM].implode()).sum()
    if known < item_vocab.len():
        skipped["items without side information (kept with empty fields)"] = int(item_vocab.len() - known)
    return aligned


def _users_frame(tables: SourceTables, user_vocab: pl.Series, skipped: dict[str, int]) -> pl.DataFrame:
    """User features aligned with ``user_vocab`` (the kept users); users without a row get none."""
    fields = list(tables.user_fields)
    if tables.users is None:
        if fields:
            raise DataError(f"{tables.name}: user fields {fields} are named but there is no users table")
        return pl.DataFrame({USER: user_vocab})
    users = tables.users
    if USER not in users.columns:
        raise DataError(f"{tables.name}: users table has no {USER!r} column; found {users.columns}")
    missing = [name for name in fields if name not in users.columns]
    if missing:
        raise DataError(f"{tables.name}: user field(s) {missing} are not columns of the users table")
    if users[USER].dtype != user_vocab.dtype:
        # A raw id that does not cast cannot be a user of the interactions: it is ignored.
        users = users.with_columns(pl.col(USER).cast(user_vocab.dtype, strict=False))
    users = users.filter(pl.col(USER).is_not_null())
    unused = int((~users[USER].is_in(user_vocab.implode())).sum()) + tables.users.height - users.height
    if unused:
        skipped["users-table rows of no kept user (no or too few behaviours; ignored)"] = unused
    dup = users[USER].is_duplicated()
    if dup.any():
        raise DataError(
            f"{tables.name}: user {users[USER][int(dup.arg_max())]!r} appears twice in the users table"
        )
    known = int(user_vocab.is_in(users[USER].implode()).sum())
    if known < user_vocab.len():
        skipped["users without features (kept with none)"] = int(user_vocab.len() - known)
    return pl.DataFrame({USER: user_vocab}).join(
        users.select(USER, *fields), on=USER, how="left", maintain_order="left"
    )


def _write_tables(
    work: Path,
    users: pl.Series,
    items: pl.DataFrame,
    item_vocab: pl.Series,
    query_vocab: pl.Series,
    attr_vocab: pl.DataFrame,
    user_attr_vocab: pl.DataFrame,
) -> None:
    frames = {
        "users": pl.DataFrame(
            {"user_index": np.arange(users.len(), dtype=np.int32), "raw_id": users.cast(pl.String)}
        ),
        "items": items.with_columns(pl.col(ITEM).cast(pl.String).alias("raw_id"))
        .drop(ITEM)
        .with_columns(pl.int_range(1, item_vocab.len() + 1, dtype=pl.Int32).alias("item_id")),
        "queries": pl.DataFrame(
            {
                "query_id": np.arange(schema.EMPTY_QUERY, query_vocab.len() + 2, dtype=np.int32),
                "text": pl.concat([pl.Series([None], dtype=pl.String), query_vocab.cast(pl.String)]),
            }
        ),
        "attributes": attr_vocab,
        "user_attributes": user_attr_vocab,
    }
    for name, frame in frames.items():
        with atomic_path(work / schema.TABLE_FILES[name]) as tmp:
            frame.write_parquet(tmp)
