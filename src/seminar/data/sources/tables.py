"""A user's own data as plain tables (CSV or Parquet): the format most people start from.

Interactions need user and item columns, a timestamp column unless the rows are already in time
order (``timestamp=None``: each behaviour's timestamp is then its position in its user's rows),
and may have a query text column (an empty or missing query means a recommendation behaviour).
Items may have a title, an image path and any attribute columns; a multi-valued attribute like
``Adventure|Comedy`` is split on a configurable separator. An optional users file has the
interactions' user column and profile columns (age band, country, ...): each becomes a categorical
user feature with one value per user (every column but the user id, or those named in
``user_features``). Column names are options, so no file needs renaming.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass, field
from pathlib import Path

import polars as pl

from seminar.data.tables import (
    IMAGE_PATH,
    ITEM,
    QUERY,
    TIMESTAMP,
    TITLE,
    USER,
    DataError,
    SourceTables,
    shorten,
)


@dataclass
class TableColumns:
    """Names of the columns in the user's files."""

    user: str = "user"
    item: str = "item"
    timestamp: str | None = "timestamp"  # None: rows in time order, timestamp = position per user
    query: str | None = None
    title: str | None = None
    image_path: str | None = None
    attributes: list[str] = field(default_factory=list)
    multi_value_separator: str = "|"
    user_features: list[str] | None = None  # columns of the users file; None = all but the user id


def read_table(path: Path) -> pl.DataFrame:
    """Read a CSV or Parquet file with every column as text (types are checked per column later)."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: file not found")
    suffix = path.suffix.lower()
    try:
        if suffix in (".parquet", ".pq"):
            frame = pl.read_parquet(path)
            return frame.with_columns(pl.all().cast(pl.String))
        if suffix in (".csv", ".tsv", ".txt"):
            sep = "\t" if suffix == ".tsv" else ","
            return pl.read_csv(path, separator=sep, infer_schema=False, quote_char='"')
    except (pl.exceptions.ComputeError, pl.exceptions.PolarsError, OSError) as exc:
        where = _first_bad_line(path, "\t" if suffix == ".tsv" else ",") if suffix != ".parquet" else None
        reason = shorten(str(exc).split("\n")[0])
        raise DataError(f"{path}: {where or f'cannot be read as {suffix[1:]}'} ({reason})") from exc
    raise DataError(f"{path}: unsupported file type {suffix!r}; use .csv, .tsv or .parquet")


def _first_bad_line(path: Path, separator: str) -> str | None:
    """Where a delimited file stops being readable: the first line that is not UTF-8 or whose
    number of fields differs from the header's ("line N: ..."); None if no such line is found."""
    with open(path, "rb") as raw:
        for number, line in enumerate(raw, start=1):
            try:
                line.decode("utf-8")
            except UnicodeDecodeError as exc:
                return f"line {number}: not UTF-8 text (byte {exc.start} of the line)"
    with open(path, newline="", encoding="utf-8") as text:
        reader = csv.reader(text, delimiter=separator, quotechar='"')
        header = next(reader, None)
        if header is None:
            return None
        try:
            for row in reader:
                if row and len(row) != len(header):
                    return f"line {reader.line_num}: {len(row)} fields, the header has {len(header)}"
        except csv.Error as exc:  # e.g. a field beyond the csv module's size limit
            return f"line {reader.line_num}: {exc}"
    return None


def _require(frame: pl.DataFrame, columns: list[str], path: Path) -> None:
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise DataError(f"{path}: missing column(s) {missing}; the file has {frame.columns}")


def _line(row: int) -> str:
    return f"row {row + 1} (line {row + 2})"


DATE_FORMATS = (
    "%Y-%m-%dT%H:%M:%S%.f%z",  # with a UTC offset (+00:00, +0100): converted to UTC
    "%Y-%m-%d %H:%M:%S%.f%z",
    "%Y-%m-%dT%H:%M:%S%.fZ",
    "%Y-%m-%dT%H:%M:%S%.f",
    "%Y-%m-%d %H:%M:%S%.f",
    "%Y-%m-%dT%H:%M:%S",
    "%Y-%m-%d %H:%M:%S",
    "%Y-%m-%d",
)


def parse_timestamps(values: pl.Series, path: Path, column: str) -> pl.Series:
    """Integers as they are; otherwise ISO dates/datetimes converted to epoch seconds.

    A value with a UTC offset (or ``Z``) is converted by it; one without is taken as UTC.
    """
    text = values.str.strip_chars()
    parsed = text.cast(pl.Int64, strict=False).fill_null(
        text.cast(pl.Float64, strict=False).cast(pl.Int64, strict=False)
    )
    for fmt in DATE_FORMATS:
        if not parsed.is_null().any():
            break
        as_time = text.str.to_datetime(format=fmt, strict=False, time_unit="us").dt.epoch("s")
        parsed = parsed.fill_null(as_time)
    bad = parsed.is_null()
    if bad.any():
        row = int(bad.arg_max())
        value = shorten(repr(values[row]))
        raise DataError(f"{path}: {_line(row)}, column {column!r}: {value} is not a timestamp")
    return parsed


def read_users(path: Path, cols: TableColumns) -> tuple[pl.DataFrame, list[str]]:
    """The users file as ``user`` plus one single-value List(String) column per feature field.

    Values are taken as text (stripped); an empty or missing value is no value. A user on two
    rows is an error naming the row, since which profile to keep would be a guess.
    """
    path = Path(path)
    raw = read_table(path)
    fields = (
        cols.user_features if cols.user_features is not None else [c for c in raw.columns if c != cols.user]
    )
    _require(raw, [cols.user, *fields], path)
    user = raw[cols.user].str.strip_chars()
    empty = user.is_null() | (user.str.len_chars() == 0)
    if empty.any():
        raise DataError(f"{path}: {_line(int(empty.arg_max()))}, column {cols.user!r}: empty id")
    dup = user.is_duplicated() & ~user.is_first_distinct()
    if dup.any():
        row = int(dup.arg_max())
        raise DataError(f"{path}: {_line(row)}: user {user[row]!r} appears more than once")
    data = {USER: user, **{name: _one_value_lists(raw[name]) for name in fields}}
    return pl.DataFrame(data), list(fields)


def _one_value_lists(values: pl.Series) -> pl.Series:
    """Each stripped value as a one-element list; empty or missing values as an empty list."""
    text = values.str.strip_chars().replace("", None)
    return pl.DataFrame({values.name: text}).select(pl.concat_list(values.name).list.drop_nulls()).to_series()


def read_interaction_tables(
    interactions: Path,
    items: Path | None = None,
    columns: TableColumns | None = None,
    *,
    image_root: Path | None = None,
    users: Path | None = None,
) -> SourceTables:
    """Read the user's interactions (and optional items and users) files into a SourceTables."""
    cols = columns or TableColumns()
    interactions = Path(interactions)
    raw = read_table(interactions)
    wanted = [cols.user, cols.item] + [c for c in (cols.timestamp, cols.query) if c]
    _require(raw, wanted, interactions)
    for name in (cols.user, cols.item):
        empty = raw[name].is_null() | (raw[name].str.strip_chars().str.len_chars() == 0)
        if empty.any():
            raise DataError(f"{interactions}: {_line(int(empty.arg_max()))}, column {name!r}: empty id")
    query = (
        raw[cols.query].str.strip_chars() if cols.query else pl.Series([None] * raw.height, dtype=pl.String)
    )
    user = raw[cols.user].str.strip_chars()
    fractional = 0
    if cols.timestamp:
        stamps = parse_timestamps(raw[cols.timestamp], interactions, cols.timestamp)
        numbers = raw[cols.timestamp].str.strip_chars().cast(pl.Float64, strict=False)
        fractional = int((numbers.is_not_null() & (numbers != numbers.floor())).sum())
    else:  # the file's order is the time order: a behaviour's timestamp is its position per user
        stamps = pl.DataFrame({"u": user}).select(pl.int_range(pl.len()).over("u").cast(pl.Int64)).to_series()
    frame = pl.DataFrame(
        {
            USER: user,
            ITEM: raw[cols.item].str.strip_chars(),
            TIMESTAMP: stamps,
            QUERY: query.replace("", None),
        }
    )
    raw_files = [interactions]
    item_frame = pl.DataFrame({ITEM: frame[ITEM].unique().sort()})
    attributes: list[str] = []
    if items is not None:
        items = Path(items)
        raw_items = read_table(items)
        optional = [c for c in (cols.title, cols.image_path) if c]
        _require(raw_items, [cols.item, *optional, *cols.attributes], items)
        data: dict[str, pl.Series] = {ITEM: raw_items[cols.item].str.strip_chars()}
        if cols.title:
            data[TITLE] = raw_items[cols.title]
        if cols.image_path:
            data[IMAGE_PATH] = raw_items[cols.image_path]
        for name in cols.attributes:
            data[name] = (
                raw_items[name]
                .fill_null("")
                .str.split(cols.multi_value_separator)
                .list.eval(pl.element().str.strip_chars().filter(pl.element().str.len_chars() > 0))
            )
        item_frame = pl.DataFrame(data)
        dup = item_frame[ITEM].is_duplicated()
        if dup.any():
            raise DataError(
                f"{items}: {_line(int(dup.arg_max()))}: item {item_frame[ITEM][int(dup.arg_max())]!r} "
                "appears more than once"
            )
        unknown = ~frame[ITEM].is_in(item_frame[ITEM].implode())
        if unknown.any():
            row = int(unknown.arg_max())
            raise DataError(f"{interactions}: {_line(row)}: item {frame[ITEM][row]!r} is not in {items}")
        raw_files.append(items)
        attributes = list(cols.attributes)
    user_frame: pl.DataFrame | None = None
    user_fields: list[str] = []
    if users is not None:
        users = Path(users)
        user_frame, user_fields = read_users(users, cols)
        raw_files.append(users)
    elif cols.user_features:
        raise DataError(f"user feature columns {cols.user_features} are named but no users file is given")
    tables = SourceTables(
        name=f"tables:{interactions.stem}",
        interactions=frame,
        items=item_frame,
        attribute_fields=attributes,
        raw_files=raw_files,
        image_root=image_root or (items.parent if items is not None else None),
        params={k: v for k, v in vars(cols).items()},
        users=user_frame,
        user_fields=user_fields,
    )
    # kept, and said so: a time unit finer than the stored integer ties behaviours (file order breaks ties)
    tables.count_skip("timestamps with a fraction (truncated to whole units; kept)", fractional)
    return tables
