"""Reader for Amazon Reviews 2018 (Ni, Li & McAuley, EMNLP'19), e.g. Movies and TV.

Amazon has no query log; as in product-search work (Van Gysel et al. CIKM'16, Ai et al.
SIGIR'17) every review is treated as a purchase made through a search whose query is built from
the item's own metadata by :mod:`seminar.data.querygen`. All behaviours are therefore search
behaviours with ``synthetic_queries=True``.

Files (gzipped JSON lines, one object per line; plain uncompressed files are also accepted):

``Movies_and_TV_5.json.gz`` (reviews)
    ``reviewerID`` (user), ``asin`` (item), ``unixReviewTime`` (Unix seconds). ``overall``,
    ``reviewText``, ``summary``, ``vote``, ``style`` ... are ignored.
``meta_Movies_and_TV.json.gz`` (metadata)
    ``asin``; ``title`` (string, may hold HTML entities/tags); ``brand`` (string, often ``""``);
    ``category`` (list of strings, root first, e.g. ``["Movies & TV", "Movies"]``);
    ``description`` (list of strings, sometimes a single string). ``imageURL`` /
    ``imageURLHighRes`` are URLs and are not fetched (see ``image_dir``); ``also_buy``,
    ``rank``, ``price`` ... are ignored.

Conventions:

* iterative k-core: users and items with fewer than ``core`` reviews are removed, repeatedly,
  until every remaining user and item has at least ``core``. It is applied even to a published
  5-core file, so the property holds for whatever file is given; the removed reviews are counted
  with :meth:`SourceTables.count_skip`, removed users/items in ``params``;
* text fields are cleaned: HTML tags removed, entities unescaped (``&amp;`` -> ``&``),
  whitespace collapsed; empty strings count as missing;
* attributes: ``brand`` is a one-element list (empty when missing or blank); ``categories`` is
  the list of category strings in file order, de-duplicated, blanks dropped (a nested list is
  flattened one level). Strings are never split into characters;
* items without a meta record keep empty side information; a repeated meta record for an asin
  is ignored after the first;
* ``image_path`` is ``"<asin>.jpg"`` relative to ``image_dir`` when that file exists (point
  ``image_dir`` at thumbnails downloaded from ``imageURLHighRes``), otherwise null;
* the query generator gets the items frame with an extra ``description`` column (used only for
  query building and not returned) and must return one non-empty query per item row.

Errors name the file and the 1-based line: a malformed JSON line, a truncated or corrupt gzip
stream, a missing or ill-typed required field (ids must be non-empty strings, integers are
accepted; ``unixReviewTime`` an integer or integral number). Reviews are parsed in blocks by
Polars for speed; a block with any doubt is re-parsed line by line, so the checks and the line
numbers are those of the exact parser. The 2014 format (Python-literal lines) is not supported.
"""

from __future__ import annotations

import gzip
import html
import io
import json
import re
import zlib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import polars as pl

from seminar.data.querygen import generate_queries
from seminar.data.tables import (
    IMAGE_PATH,
    ITEM,
    QUERY,
    TIMESTAMP,
    TITLE,
    USER,
    DataError,
    SourceTables,
)

QueryGenerator = Callable[[pl.DataFrame], pl.Series]

ATTRIBUTE_FIELDS = ["brand", "categories"]
DESCRIPTION = "description"
QUERY_FIELDS = ("categories", TITLE, DESCRIPTION)

_TAG = re.compile(r"<[^>]*>")
_SPACE = re.compile(r"\s+")


def category_queries(items: pl.DataFrame) -> pl.Series:
    """Default Amazon queries: category path terms, topped up with title/description terms."""
    return generate_queries(items, fields=QUERY_FIELDS, max_terms=6, seed=0)


def _is_gzip(path: Path) -> bool:
    with path.open("rb") as fh:
        return fh.read(2) == b"\x1f\x8b"


def _complete_lines(path: Path) -> int:
    """Lines readable before a gzip stream breaks (slow; only run to report the error)."""
    count = 0
    try:
        with gzip.open(path, "rb") as fh:
            for _ in fh:
                count += 1
    except (EOFError, OSError, zlib.error):
        pass
    return count


def _lines(path: Path) -> Iterator[tuple[int, bytes]]:
    """(1-based line number, raw line); a broken gzip stream becomes a DataError naming the line."""
    if not path.is_file():
        raise DataError(f"{path}: file not found")
    if not _is_gzip(path):
        with path.open("rb") as fh:
            yield from enumerate(fh, start=1)
        return
    try:
        # A large buffer in front of GzipFile makes line iteration run in C, not per-line Python.
        with io.BufferedReader(gzip.GzipFile(path, "rb"), buffer_size=1 << 20) as fh:  # type: ignore[arg-type]
            yield from enumerate(fh, start=1)
    except (EOFError, OSError, zlib.error) as exc:
        done = _complete_lines(path)
        raise DataError(
            f"{path}: line {done + 1}: truncated or corrupt gzip stream after {done} complete line(s) ({exc})"
        ) from exc


def _id_field(record: dict[str, Any], name: str, path: Path, lineno: int) -> str:
    value = record.get(name)
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    if not isinstance(value, str) or not value.strip():
        what = "missing" if value is None else f"not a non-empty string ({value!r:.60})"
        raise DataError(f"{path}: line {lineno}: field {name!r} is {what}")
    return value.strip()


def _time_field(record: dict[str, Any], name: str, path: Path, lineno: int) -> int:
    value = record.get(name)
    if isinstance(value, bool):
        value = None
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, str) and value.strip().isdigit():
        return int(value.strip())
    what = "missing" if value is None else f"not an integer Unix time ({value!r:.60})"
    raise DataError(f"{path}: line {lineno}: field {name!r} is {what}")


def _clean(value: object) -> str | None:
    """Display text of a meta string: tags removed, entities unescaped, spaces collapsed."""
    if not isinstance(value, str):
        return None
    text = _SPACE.sub(" ", html.unescape(_TAG.sub(" ", value))).strip()
    return text or None


def _strings(value: object) -> list[str]:
    """Whole cleaned strings from a string or a (one-level nested) list; never its characters."""
    if isinstance(value, str):
        raw: list[object] = [value]
    elif isinstance(value, list):
        raw = []
        for v in value:
            raw.extend(v if isinstance(v, list) else [v])
    else:
        raw = []
    cleaned = (_clean(v) for v in raw)
    return list(dict.fromkeys(c for c in cleaned if c))


def k_core(interactions: pl.DataFrame, core: int) -> tuple[pl.DataFrame, int]:
    """Largest sub-log where every user and item has >= ``core`` rows, and the rounds it took."""
    if core < 1:
        raise ValueError(f"core must be >= 1, got {core}")
    frame, rounds = interactions, 0
    while True:
        rounds += 1
        before = frame.height
        frame = frame.filter(pl.len().over(USER) >= core)
        frame = frame.filter(pl.len().over(ITEM) >= core)
        if frame.height == before:
            return frame, rounds


def _parse_records(path: Path, lines: list[tuple[int, bytes]]) -> Iterator[tuple[int, dict[str, Any]]]:
    for lineno, raw in lines:
        if not raw.strip():
            continue
        try:
            record = json.loads(raw)
        except json.JSONDecodeError as exc:
            msg = f"malformed JSON ({exc.msg} at column {exc.colno})"
            raise DataError(f"{path}: line {lineno}: {msg}") from None
        except ValueError as exc:  # undecodable bytes
            raise DataError(f"{path}: line {lineno}: malformed JSON ({exc})") from None
        if not isinstance(record, dict):
            raise DataError(f"{path}: line {lineno}: expected a JSON object, got {type(record).__name__}")
        yield lineno, record


def _records(path: Path) -> Iterator[tuple[int, dict[str, Any]]]:
    for item in _lines(path):
        yield from _parse_records(path, [item])


_REVIEW_SCHEMA = {"reviewerID": pl.String, "asin": pl.String, "unixReviewTime": pl.Int64}
_CHUNK = 1 << 16


def _review_chunk(path: Path, lines: list[tuple[int, bytes]]) -> pl.DataFrame:
    """Fast columnar parse of a block of lines; the exact per-line parser judges any doubt."""
    try:
        fast = pl.read_ndjson(io.BytesIO(b"".join(raw for _, raw in lines)), schema=_REVIEW_SCHEMA)
        ids = pl.concat([fast["reviewerID"], fast["asin"]]).str.strip_chars()
        if fast.null_count().sum_horizontal().item() == 0 and not ids.str.contains(r"^$|^[\[{]").any():
            return fast.with_columns(pl.col("reviewerID", "asin").str.strip_chars())
    except pl.exceptions.PolarsError:
        pass
    rows = [
        (
            _id_field(rec, "reviewerID", path, lineno),
            _id_field(rec, "asin", path, lineno),
            _time_field(rec, "unixReviewTime", path, lineno),
        )
        for lineno, rec in _parse_records(path, lines)
    ]
    return pl.DataFrame(rows, schema=_REVIEW_SCHEMA, orient="row")


def _read_reviews(path: Path) -> pl.DataFrame:
    chunks: list[pl.DataFrame] = []
    block: list[tuple[int, bytes]] = []
    for item in _lines(path):
        block.append(item)
        if len(block) == _CHUNK:
            chunks.append(_review_chunk(path, block))
            block = []
    if block:
        chunks.append(_review_chunk(path, block))
    frame = pl.concat(chunks) if chunks else pl.DataFrame(schema=_REVIEW_SCHEMA)
    return frame.rename({"reviewerID": USER, "asin": ITEM, "unixReviewTime": TIMESTAMP})


def _read_meta(path: Path, wanted: set[str], tables: SourceTables) -> dict[str, dict[str, Any]]:
    found: dict[str, dict[str, Any]] = {}
    seen: set[str] = set()
    repeats = 0
    for lineno, rec in _records(path):
        asin = _id_field(rec, "asin", path, lineno)
        if asin in seen:
            repeats += 1
            continue
        seen.add(asin)
        if asin not in wanted:
            continue
        description = " ".join(_strings(rec.get("description")))
        found[asin] = {
            TITLE: _clean(rec.get("title")),
            "brand": _strings(rec.get("brand"))[:1],
            "categories": _strings(rec.get("category")),
            DESCRIPTION: description or None,
        }
    tables.count_skip(f"{path.name}: repeated asin record", repeats)
    return found


def read_amazon(
    reviews: Path,
    meta: Path,
    *,
    core: int = 5,
    query_generator: QueryGenerator = category_queries,
    image_dir: Path | None = None,
) -> SourceTables:
    """Read Amazon 2018 reviews + metadata as k-core search behaviours with synthetic queries."""
    reviews, meta = Path(reviews), Path(meta)
    tables = SourceTables(
        name="amazon",
        interactions=pl.DataFrame(),
        items=pl.DataFrame(),
        attribute_fields=list(ATTRIBUTE_FIELDS),
        text_kind="text",
        raw_files=[reviews, meta],
        synthetic_queries=True,
        image_root=Path(image_dir) if image_dir is not None else None,
    )
    raw = _read_reviews(reviews)
    inter, rounds = k_core(raw, core)
    tables.count_skip(f"{reviews.name}: removed by iterative {core}-core filter", raw.height - inter.height)

    item_ids = inter[ITEM].unique(maintain_order=True).to_list()
    info = _read_meta(meta, set(item_ids), tables)
    empty: dict[str, Any] = {TITLE: None, "brand": [], "categories": [], DESCRIPTION: None}
    rows = [info.get(asin, empty) for asin in item_ids]
    images = [
        f"{asin}.jpg" if image_dir is not None and (Path(image_dir) / f"{asin}.jpg").is_file() else None
        for asin in item_ids
    ]
    items = pl.DataFrame(
        {
            ITEM: item_ids,
            TITLE: [r[TITLE] for r in rows],
            IMAGE_PATH: images,
            "brand": [r["brand"] for r in rows],
            "categories": [r["categories"] for r in rows],
            DESCRIPTION: [r[DESCRIPTION] for r in rows],
        },
        schema={
            ITEM: pl.String,
            TITLE: pl.String,
            IMAGE_PATH: pl.String,
            "brand": pl.List(pl.String),
            "categories": pl.List(pl.String),
            DESCRIPTION: pl.String,
        },
    )

    queries = query_generator(items)
    if not isinstance(queries, pl.Series) or queries.len() != items.height:
        raise ValueError("query_generator must return a polars Series with one query per item row")
    queries = queries.cast(pl.String)
    if queries.is_null().any() or (queries.str.strip_chars() == "").any():
        raise ValueError("query_generator returned a null or empty query")
    item_queries = pl.DataFrame({ITEM: items[ITEM], QUERY: queries})
    inter = inter.join(item_queries, on=ITEM, how="left", maintain_order="left")

    tables.interactions = inter.select(USER, ITEM, TIMESTAMP, QUERY)
    tables.items = items.drop(DESCRIPTION)
    tables.params = {
        "reviews": str(reviews),
        "meta": str(meta),
        "core": core,
        "kcore_rounds": rounds,
        "n_users": int(inter[USER].n_unique()),
        "n_items": len(item_ids),
        "users_removed_by_kcore": int(raw[USER].n_unique() - inter[USER].n_unique()),
        "items_removed_by_kcore": int(raw[ITEM].n_unique() - len(item_ids)),
        "items_without_meta": sum(1 for asin in item_ids if asin not in info),
        "query_generator": getattr(query_generator, "__name__", repr(query_generator)),
        "image_dir": str(image_dir) if image_dir is not None else None,
        "timestamp_unit": "s",
    }
    return tables
