"""Reader for the official KuaiSAR release (unified search and recommendation logs from Kuaishou).

KuaiSAR (Sun et al., CIKM'23; zenodo record 8181109: ``KuaiSAR_v2.zip`` for KuaiSAR,
``KuaiSAR.zip`` for KuaiSAR-small, unpacked as ``KuaiSAR_final/`` or ``KuaiSAR_v2/``) is the one
public dataset with genuine search *and* recommendation behaviours of the same users, which is
what the SEMINAR setting needs. Field names and value formats follow the dataset's own
description page (github.com/Ethan00Si/KuaiSAR, ``pages/decriptions.md``).

Columns relied on (others are ignored):

``src_inter.csv`` (search behaviours)
    ``user_id``, ``item_id`` (integers); ``search_session_timestamp`` (Unix time in
    milliseconds, written as an integer or a float such as ``1684763932919.0``); ``keyword``
    (the anonymised query as a list of token ids, ``"[20, 34, 3]"``); ``click_cnt`` (> 0 when
    the shown item was clicked).
``rec_inter.csv`` (recommendation behaviours)
    ``user_id``, ``item_id``; ``timestamp`` (Unix time in milliseconds, float64 in the release);
    ``click`` (1 when the recommended item was clicked).
``item_features.csv``
    ``item_id``; ``caption`` (token-id list like ``keyword``); ``author_id`` (0 is padding);
    ``first_level_category_id`` ... ``fourth_level_category_id`` (0 means "empty"). The short
    names ``fst_cate``, ``snd_cate``, ``trd_cate``, ``fth_cate`` are accepted as aliases.
``user_features.csv`` (optional)
    ``user_id`` plus anonymised categorical columns (``search_active_level``,
    ``rec_active_level``, ``onehot_feat*``). Every column other than ``user_id`` becomes a user
    feature field whose value is the cell as written (a one-element list of the string; an empty
    cell is no value). Users with behaviours but no row get no features (the build counts them).

Conventions (each dropped row is counted with :meth:`SourceTables.count_skip`):

* only clicked rows are behaviours: ``click_cnt > 0`` in search, ``click > 0`` in
  recommendation; the others are exposures and are dropped;
* a clicked search row whose keyword list is empty or missing has no query and is dropped;
* both files are in milliseconds, so their timestamps are merged as they are. Search rows are
  emitted before recommendation rows; the sort by (user, timestamp) happens downstream;
* a query is the canonical form of ``keyword``: its token ids (leading zeros removed) joined by
  single spaces, e.g. ``"20 34 3"``; an item's ``title`` is its caption in the same form, so
  ``text_kind="tokens"``. Lists may be JSON-like (``[1, 2]``, ``['1', '2']``) or already
  space-separated; anything else raises :class:`DataError`;
* attributes ``author`` and ``category_l1`` ... ``category_l4`` are one-element lists of the id
  as a string, or empty lists when the id is 0, negative or missing;
* only items that occur in the kept behaviours are returned (the full item file is large);
  a repeated ``item_id`` row in ``item_features.csv`` is dropped after the first;
* ``max_users`` keeps the behaviours of the ``max_users`` smallest user ids (a deterministic
  subset for quick experiments), after the click filters;
* only users with kept behaviours are returned from ``user_features.csv``; such a user on two
  rows raises :class:`DataError`.

Line numbers in errors are 1-based lines of the CSV file (the header is line 1), assuming one
record per line, which holds for the release (no field contains a line break).
"""

from __future__ import annotations

import csv
from pathlib import Path

import polars as pl

from seminar.data.tables import (
    ITEM,
    QUERY,
    TIMESTAMP,
    TITLE,
    USER,
    DataError,
    SourceTables,
)

SRC_FILE = "src_inter.csv"
REC_FILE = "rec_inter.csv"
ITEM_FILE = "item_features.csv"
USER_FILE = "user_features.csv"

ATTRIBUTE_FIELDS = ["author", "category_l1", "category_l2", "category_l3", "category_l4"]
# Official column name first, accepted alias second.
_CATEGORY_COLUMNS = [
    ("first_level_category_id", "fst_cate"),
    ("second_level_category_id", "snd_cate"),
    ("third_level_category_id", "trd_cate"),
    ("fourth_level_category_id", "fth_cate"),
]

_ROW = "__row"
_INT = r"['\"]?[0-9]+['\"]?"
_TOKEN_LIST = rf"^(?:\[\s*(?:{_INT}(?:\s*,\s*{_INT})*\s*,?)?\s*\]|[0-9]+(?:[\s,]+[0-9]+)*)$"
_EMPTY_LISTS = ("", "[]")


def _find_root(root: Path) -> Path:
    """The folder holding ``src_inter.csv``: ``root`` itself or its single sub-folder that does."""
    root = Path(root)
    if (root / SRC_FILE).is_file():
        return root
    if root.is_dir():
        hits = sorted(p for p in root.iterdir() if p.is_dir() and (p / SRC_FILE).is_file())
        if len(hits) == 1:
            return hits[0]
    raise DataError(f"{root / SRC_FILE}: file not found (looked in {root} and its sub-folders)")


def _header(path: Path) -> list[str]:
    if not path.is_file():
        raise DataError(f"{path}: file not found")
    with path.open(encoding="utf-8-sig", newline="") as fh:
        first = next(csv.reader(fh), None)
    if not first:
        raise DataError(f"{path}: line 1: empty file, expected a CSV header")
    return [c.strip() for c in first]


def _pick_column(header: list[str], names: tuple[str, ...], path: Path) -> str:
    for name in names:
        if name in header:
            return name
    alias = f" (or alias {names[1:]})" if len(names) > 1 else ""
    raise DataError(f"{path}: line 1 (header): missing column {names[0]!r}{alias}; found {header}")


def _read(path: Path, columns: list[str]) -> pl.DataFrame:
    """The named columns as strings, plus the 1-based file line of each record."""
    header = _header(path)
    for col in columns:
        _pick_column(header, (col,), path)
    try:
        frame = pl.read_csv(
            path,
            columns=columns,
            infer_schema=False,
            has_header=True,
            encoding="utf8-lossy",
        )
    except (pl.exceptions.PolarsError, OSError) as exc:
        raise DataError(f"{path}: cannot parse CSV: {exc}") from exc
    return frame.select(columns).with_row_index(_ROW, offset=2)


def _fail(path: Path, frame: pl.DataFrame, bad: pl.Series, column: str, what: str) -> None:
    """Raise a DataError for the first row flagged in ``bad``."""
    idx = bad.arg_true()
    if len(idx):
        i = int(idx[0])
        value = frame[column][i]
        shown = "empty" if value is None or value.strip() == "" else repr(value[:80])
        raise DataError(
            f"{path}: line {frame[_ROW][i]}: column {column!r}: {shown} is not {what}"
            f" ({len(idx)} bad row(s) in all)"
        )


def _integers(path: Path, frame: pl.DataFrame, column: str, *, allow_null: bool = False) -> pl.Series:
    """Parse a column of integers; integral floats such as ``1684742000000.0`` are accepted."""
    raw = frame[column].str.strip_chars()
    out = raw.cast(pl.Int64, strict=False)
    blank = raw.is_null() | (raw == "")
    if (out.is_null() & ~blank).any():
        as_float = raw.cast(pl.Float64, strict=False)
        integral = as_float.is_finite() & (as_float == as_float.round(0)) & (as_float.abs() < 2.0**63)
        from_float = pl.select(
            pl.when(integral).then(as_float).otherwise(None).cast(pl.Int64, strict=False)
        ).to_series()
        out = out.fill_null(from_float)
    bad = out.is_null() & ~blank if allow_null else out.is_null()
    _fail(path, frame, bad, column, "an integer")
    return out.alias(column)


def _token_lists(path: Path, frame: pl.DataFrame, column: str) -> pl.Series:
    """Canonical space-separated token ids of a list column; null where the list is empty."""
    raw = frame[column].str.strip_chars()
    empty = raw.is_null() | raw.is_in(_EMPTY_LISTS) | raw.str.contains(r"^\[\s*\]$")
    ok = raw.str.contains(_TOKEN_LIST)
    _fail(path, frame, ~empty & ~ok.fill_null(False), column, "a list of integer token ids")
    tokens = raw.str.extract_all(r"[0-9]+")
    if raw.str.contains(r"(?:^|[^0-9])0[0-9]").any():  # leading zeros: "007" -> "7"
        tokens = tokens.list.eval(pl.element().str.replace(r"^0+([0-9])", "${1}"))
    joined = tokens.list.join(" ")
    return pl.select(pl.when(empty).then(None).otherwise(joined)).to_series().alias(column)


def _id_list(values: pl.Series, name: str) -> pl.Series:
    """One-element List(String) of a positive id; an empty list for 0, negative or missing."""
    keep = values.fill_null(0) > 0
    frame = pl.DataFrame({"v": values, "k": keep})
    out = frame.select(
        pl.when(pl.col("k"))
        .then(pl.concat_list(pl.col("v").cast(pl.String)))
        .otherwise(pl.lit([], dtype=pl.List(pl.String)))
        .alias(name)
    )
    return out.to_series()


def _behaviours(
    path: Path,
    *,
    time_col: str,
    click_col: str,
    keyword_col: str | None,
    tables: SourceTables,
) -> pl.DataFrame:
    cols = ["user_id", "item_id", time_col, click_col] + ([keyword_col] if keyword_col else [])
    frame = _read(path, cols)
    users = _integers(path, frame, "user_id")
    items = _integers(path, frame, "item_id")
    times = _integers(path, frame, time_col)
    clicks = _integers(path, frame, click_col)
    clicked = clicks > 0
    tables.count_skip(f"{path.name}: {click_col} == 0 (exposure without click)", int((~clicked).sum()))
    out = pl.DataFrame({USER: users, ITEM: items, TIMESTAMP: times}).filter(clicked)
    if keyword_col is None:
        return out.with_columns(pl.lit(None, dtype=pl.String).alias(QUERY))
    kept = frame.filter(clicked)
    queries = _token_lists(path, kept, keyword_col)
    has_query = queries.is_not_null()
    tables.count_skip(f"{path.name}: clicked row with empty {keyword_col}", int((~has_query).sum()))
    return out.with_columns(queries.alias(QUERY)).filter(has_query)


def _items(path: Path, wanted: pl.Series, tables: SourceTables) -> pl.DataFrame:
    header = _header(path)
    cat_cols = [_pick_column(header, names, path) for names in _CATEGORY_COLUMNS]
    frame = _read(path, ["item_id", "caption", "author_id", *cat_cols])
    ids = _integers(path, frame, "item_id")
    frame = frame.with_columns(ids.alias("__item"))
    dup = frame["__item"].is_duplicated() & ~frame["__item"].is_first_distinct()
    tables.count_skip(f"{path.name}: repeated item_id row", int(dup.sum()))
    frame = frame.filter(~dup & frame["__item"].is_in(wanted.implode()))
    columns: dict[str, pl.Series] = {
        ITEM: frame["__item"],
        TITLE: _token_lists(path, frame, "caption").alias(TITLE),
        "author": _id_list(_integers(path, frame, "author_id", allow_null=True), "author"),
    }
    for name, col in zip(ATTRIBUTE_FIELDS[1:], cat_cols, strict=True):
        columns[name] = _id_list(_integers(path, frame, col, allow_null=True), name)
    return pl.DataFrame(columns)


def _users(path: Path, wanted: pl.Series) -> tuple[pl.DataFrame, list[str]]:
    """User feature rows of the users in ``wanted``: ``user`` plus one List(String) per column."""
    fields = [c for c in _header(path) if c != "user_id"]
    frame = _read(path, ["user_id", *fields])
    frame = frame.with_columns(_integers(path, frame, "user_id").alias("__user"))
    frame = frame.filter(pl.col("__user").is_in(wanted.implode()))
    dup = frame["__user"].is_duplicated() & ~frame["__user"].is_first_distinct()
    if dup.any():
        i = int(dup.arg_max())
        raise DataError(f"{path}: line {frame[_ROW][i]}: user_id {frame['__user'][i]} appears on two rows")
    columns: dict[str, pl.Expr] = {USER: pl.col("__user")}
    for name in fields:
        value = pl.col(name).str.strip_chars()
        columns[name] = (
            pl.concat_list(value).list.drop_nulls().list.eval(pl.element().filter(pl.element() != ""))
        )
    return frame.select(**columns), fields


def read_kuaisar(root: Path, *, max_users: int | None = None) -> SourceTables:
    """Read a KuaiSAR / KuaiSAR-small folder into merged search + recommendation behaviours."""
    if max_users is not None and max_users < 1:
        raise ValueError(f"max_users must be >= 1 or None, got {max_users}")
    base = _find_root(Path(root))
    src, rec, item_file, user_file = (base / n for n in (SRC_FILE, REC_FILE, ITEM_FILE, USER_FILE))
    tables = SourceTables(
        name="kuaisar",
        interactions=pl.DataFrame(),
        items=pl.DataFrame(),
        attribute_fields=list(ATTRIBUTE_FIELDS),
        text_kind="tokens",
    )
    search = _behaviours(
        src, time_col="search_session_timestamp", click_col="click_cnt", keyword_col="keyword", tables=tables
    )
    recs = _behaviours(rec, time_col="timestamp", click_col="click", keyword_col=None, tables=tables)
    inter = pl.concat([search, recs], how="vertical")

    if max_users is not None:
        keep = inter[USER].unique().sort().head(max_users)
        mask = inter[USER].is_in(keep.implode())
        tables.count_skip(f"max_users={max_users}: behaviours of other users", int((~mask).sum()))
        inter = inter.filter(mask)

    raw_files = [src, rec, item_file]
    if user_file.is_file():
        tables.users, tables.user_fields = _users(user_file, inter[USER].unique())
        raw_files.append(user_file)

    tables.interactions = inter
    tables.items = _items(item_file, inter[ITEM].unique(), tables)
    tables.raw_files = raw_files
    tables.params = {
        "root": str(base),
        "max_users": max_users,
        "timestamp_unit": "ms",
        "search_click": "click_cnt > 0",
        "rec_click": "click > 0",
        "n_search": int(inter[QUERY].is_not_null().sum()),
        "n_rec": int(inter[QUERY].is_null().sum()),
        "items_without_features": int((~inter[ITEM].unique().is_in(tables.items[ITEM].implode())).sum()),
    }
    return tables
