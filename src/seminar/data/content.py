"""Content channels of a dataset: vectors per item/query row, or token bags for token-id text.

Rows follow the dataset's id spaces: row 0 is padding (zeros) for items and queries, and query
row 1 is the empty query of recommendation behaviours (zeros: its meaning is learned).
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import polars as pl

from seminar.data import schema
from seminar.data.tables import IMAGE_PATH, ITEM, TITLE, DataError, SourceTables

if TYPE_CHECKING:
    from seminar.data.build import BuildConfig


def _with_padding(rows: np.ndarray, lead: int) -> np.ndarray:
    out = np.zeros((rows.shape[0] + lead, rows.shape[1]), dtype=np.float16)
    out[lead:] = rows
    return out


def _check_vectors(arr: np.ndarray, rows: int, what: str) -> np.ndarray:
    if arr.ndim != 2 or arr.shape[0] != rows:
        raise DataError(f"{what}: vectors of shape {arr.shape}, expected ({rows}, dim)")
    finite = np.isfinite(arr).all(axis=1)
    if not finite.all():
        raise DataError(f"{what}: vector row {int(np.argmin(finite))} contains NaN or infinite values")
    return arr


def _realign(values: pl.Series, vectors: np.ndarray, wanted: pl.Series, what: str) -> np.ndarray:
    """Reorder source-provided vectors (aligned with ``values``) to the dataset's id order."""
    _check_vectors(vectors, values.len(), what)
    index = pl.DataFrame({"key": values.cast(wanted.dtype, strict=False), "row": np.arange(values.len())})
    rows = pl.DataFrame({"key": wanted}).join(index, on="key", how="left", maintain_order="left")["row"]
    if rows.null_count():
        missing = wanted.filter(rows.is_null())[0]
        raise DataError(f"{what}: no vector for {missing!r}")
    return vectors[rows.to_numpy()]


def compute_content(
    tables: SourceTables, items: pl.DataFrame, query_vocab: pl.Series, config: BuildConfig
) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray], dict[str, str]]:
    """Return (vectors per channel, token CSR arrays, encoder name per channel)."""
    from seminar.data import encoders as enc

    vectors: dict[str, np.ndarray] = {}
    tokens: dict[str, np.ndarray] = {}
    names: dict[str, str] = {}
    cache = enc.VectorCache(Path(config.cache_dir)) if config.cache_dir else enc.VectorCache()
    titles = _texts(items, TITLE)
    queries = [str(q) for q in query_vocab.to_list()]

    if tables.text_kind == "tokens":
        item_off, item_tok = enc.parse_token_bags(_optional(items, TITLE), f"{tables.name} item {TITLE}")
        query_off, query_tok = enc.parse_token_bags(queries, f"{tables.name} query")
        # Row 0 = padding for both; query row 1 = the empty query: empty bags.
        tokens = {
            "item_token_offsets": np.concatenate([[0], item_off]),
            "item_token_ids": item_tok,
            "query_token_offsets": np.concatenate([[0, 0], query_off]),
            "query_token_ids": query_tok,
        }
    else:
        text_encoder = enc.make_text_encoder(config.text_encoder)
        if text_encoder is not None and TITLE in items.columns:
            rows = cache.get_or_compute(
                text_encoder.name,
                "text",
                titles,
                lambda: text_encoder.encode_texts(titles, progress=config.progress),
            )
            vectors["item_text"], names["item_text"] = _with_padding(rows, 1), text_encoder.name
        if text_encoder is not None and queries:
            rows = cache.get_or_compute(
                text_encoder.name,
                "text",
                queries,
                lambda: text_encoder.encode_texts(queries, progress=config.progress),
            )
            vectors["query_text"], names["query_text"] = _with_padding(rows, 2), text_encoder.name

    image_encoder = enc.make_text_encoder(config.image_encoder) if config.image_encoder != "none" else None
    if image_encoder is not None:
        if not hasattr(image_encoder, "encode_images"):
            raise DataError(f"image encoder {config.image_encoder!r} cannot encode images (use clip:PATH)")
        if IMAGE_PATH not in items.columns:
            raise DataError(f"{tables.name}: --image-encoder given but the items have no {IMAGE_PATH} column")
        paths = [_resolve(p, tables.image_root) for p in items[IMAGE_PATH].to_list()]
        keys = [_image_key(p) for p in paths]
        rows = cache.get_or_compute(
            image_encoder.name,
            "image",
            keys,
            lambda: image_encoder.encode_images(paths, progress=config.progress),
        )
        vectors["item_image"], names["item_image"] = _with_padding(rows, 1), image_encoder.name

    for channel, arr in tables.item_vectors.items():
        name = f"item_{channel}" if not channel.startswith("item_") else channel
        rows = _realign(tables.items[ITEM], arr, items[ITEM], f"{tables.name} {name}")
        vectors[name], names[name] = _with_padding(rows.astype(np.float16), 1), f"{tables.name}-provided"
    if tables.query_vectors is not None and tables.query_values is not None and queries:
        rows = _realign(
            tables.query_values, tables.query_vectors, query_vocab, f"{tables.name} query vectors"
        )
        vectors["query_text"], names["query_text"] = (
            _with_padding(rows.astype(np.float16), 2),
            (f"{tables.name}-provided"),
        )
    for channel, arr in vectors.items():
        _check_vectors(arr.astype(np.float32), arr.shape[0], f"{tables.name} {channel}")
        if channel not in schema.VECTOR_CHANNELS:
            raise DataError(f"unknown content channel {channel!r}; known: {sorted(schema.VECTOR_CHANNELS)}")
    return vectors, tokens, names


def _texts(items: pl.DataFrame, column: str) -> list[str]:
    if column not in items.columns:
        return []
    return [t if t is not None else "" for t in items[column].cast(pl.String).to_list()]


def _optional(items: pl.DataFrame, column: str) -> list[str | None]:
    if column not in items.columns:
        return [None] * items.height
    return items[column].cast(pl.String).to_list()


def _image_key(path: Path | None) -> str:
    """Cache key of an image: a digest of its bytes, so a replaced file is re-encoded even when its
    size and modification time were kept (a copy with ``rsync -t``, an archive extraction), and a
    moved or duplicated file is not encoded again. An unreadable path keys by name (the encoder
    then reports it)."""
    if path is None:
        return ""
    try:
        with open(path, "rb") as handle:
            return "blake2b:" + hashlib.file_digest(handle, "blake2b").hexdigest()
    except OSError:
        return str(path)


def _resolve(path: str | None, root: Path | None) -> Path | None:
    if path is None or path == "":
        return None
    p = Path(path)
    return p if p.is_absolute() or root is None else root / p
