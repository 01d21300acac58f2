"""One line per user: the user id, then that user's item ids in time order (S3-Rec style files).

The format of the widely shared ``Beauty.txt``/``Sports.txt``/``Toys.txt``/``Yelp.txt`` files::

    1 1 2 3 4 5
    2 6 7 3 8

Ids are separated by whitespace (or by ``separator``); blank lines are skipped. There are no
timestamps, queries or titles: a behaviour's timestamp is its position in its user's line
(0, 1, 2, ...), and every behaviour is a recommendation. An optional JSON object maps an item id
to its attribute ids (``{"1": [3, 7], "2": [7]}``, as in S3-Rec's ``*_item2attributes.json``);
they become the multi-valued attribute field ``attribute``. Items of the sequences that the JSON
does not list get no attributes (counted in the manifest); JSON items no sequence contains are
not used.
"""

from __future__ import annotations

import json
from itertools import repeat
from pathlib import Path

import numpy as np
import polars as pl

from seminar.data.tables import ITEM, QUERY, TIMESTAMP, USER, DataError, SourceTables

ATTRIBUTE = "attribute"
_SHOWN = 80  # characters of an input value echoed in an error message


def _shown(value: object) -> str:
    """``repr`` of a value from the input, cut to a readable length."""
    text = repr(value)
    return text if len(text) <= _SHOWN else text[: _SHOWN - 3] + "..."


def _read_text(path: Path) -> str:
    """The file's text (UTF-8, an optional byte-order mark dropped); a bad byte names its line."""
    if not path.is_file():
        raise DataError(f"{path}: file not found")
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise DataError(f"{path}: cannot be read ({exc.strerror or exc})") from exc
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        raise DataError(f"{path}: line {line}: not UTF-8 text (byte {exc.start})") from exc


def _split_lines(path: Path, separator: str | None) -> tuple[list[str], list[int], list[str]]:
    """Users in file order, their number of items, and all items flattened in the same order."""
    users: list[str] = []
    lengths: list[int] = []
    items: list[str] = []
    first_line: dict[str, int] = {}
    for number, line in enumerate(_read_text(path).split("\n"), start=1):
        if separator is None:
            tokens = line.split()
        else:
            tokens = [t for t in (t.strip() for t in line.split(separator)) if t]
        if not tokens:
            continue
        user = tokens[0]
        if len(tokens) == 1:
            raise DataError(f"{path}: line {number}: user {_shown(user)} has no items")
        if user in first_line:
            raise DataError(
                f"{path}: line {number}: user {_shown(user)} already has a line (line {first_line[user]}); "
                "each user's items must be on one line"
            )
        first_line[user] = number
        users.append(user)
        lengths.append(len(tokens) - 1)
        items.extend(tokens[1:])
    if not users:
        raise DataError(f"{path}: no user lines (the file is empty or blank)")
    return users, lengths, items


def read_item_attributes(path: Path) -> dict[str, list[str]]:
    """The JSON object ``{item id: [attribute id, ...]}`` with every id as text.

    Attribute ids may be JSON integers or non-empty strings; a value repeated for one item is
    kept once. Anything else is a :class:`DataError` naming the offending key.
    """
    path = Path(path)
    text = _read_text(path)
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise DataError(f"{path}: line {exc.lineno}, column {exc.colno}: not valid JSON ({exc.msg})") from exc
    if not isinstance(data, dict):
        raise DataError(
            f"{path}: expected a JSON object mapping item ids to lists of attribute ids, "
            f"got a {type(data).__name__}"
        )
    out: dict[str, list[str]] = {}
    for key, values in data.items():
        item = key.strip()
        if not item:
            raise DataError(f"{path}: key {_shown(key)}: empty item id")
        if not isinstance(values, list):
            raise DataError(
                f"{path}: key {_shown(key)}: expected a list of attribute ids, got {_shown(values)}"
            )
        ids: dict[str, None] = {}
        for value in values:
            if isinstance(value, str) and value.strip():
                ids[value.strip()] = None
            elif isinstance(value, int) and not isinstance(value, bool):
                ids[str(value)] = None
            else:
                raise DataError(
                    f"{path}: key {_shown(key)}: {_shown(value)} is not an attribute id "
                    "(use integers or non-empty strings)"
                )
        if item in out:
            raise DataError(f"{path}: key {_shown(key)}: item {_shown(item)} appears more than once")
        out[item] = list(ids)
    return out


def read_sequence_file(
    path: Path | str, attributes: Path | str | None = None, *, separator: str | None = None
) -> SourceTables:
    """Read a one-line-per-user sequence file (and an optional item-attributes JSON) into a SourceTables."""
    path = Path(path)
    if separator == "":
        raise DataError("the separator must not be empty (None splits on any whitespace)")
    users, lengths, item_ids = _split_lines(path, separator)
    counts = np.asarray(lengths, dtype=np.int64)
    starts = np.repeat(np.cumsum(counts) - counts, counts)
    user_column: list[str] = []
    for user, n in zip(users, lengths, strict=True):
        user_column.extend(repeat(user, n))
    frame = pl.DataFrame(
        {
            USER: pl.Series(user_column, dtype=pl.String),
            ITEM: pl.Series(item_ids, dtype=pl.String),
            TIMESTAMP: pl.Series(np.arange(counts.sum(), dtype=np.int64) - starts, dtype=pl.Int64),
            QUERY: pl.Series([None] * len(item_ids), dtype=pl.String),
        }
    )
    item_column = frame[ITEM].unique().sort()
    item_frame = pl.DataFrame({ITEM: item_column})
    raw_files = [path]
    fields: list[str] = []
    missing = 0
    if attributes is not None:
        attributes = Path(attributes)
        mapping = read_item_attributes(attributes)
        values = [mapping.get(item) for item in item_column.to_list()]
        missing = sum(v is None for v in values)
        item_frame = item_frame.with_columns(
            pl.Series(ATTRIBUTE, [v or [] for v in values], dtype=pl.List(pl.String))
        )
        raw_files.append(attributes)
        fields = [ATTRIBUTE]
    tables = SourceTables(
        name=f"sequences:{path.stem}",
        interactions=frame,
        items=item_frame,
        attribute_fields=fields,
        raw_files=raw_files,
        params={"attributes": None if attributes is None else str(attributes), "separator": separator},
    )
    tables.count_skip("items not in the attributes JSON (kept with no attributes)", missing)
    return tables
