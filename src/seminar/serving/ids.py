"""Raw ↔ internal id maps, so clients speak raw user/item ids and query strings, never internal ids.

Internal conventions follow the dataset: users are rows 0..U-1, items 1..I, query id 1 is the empty
query and real queries are 2..Q. Raw ids are strings (as in the dataset's tables); numbers sent by
a client are compared by their decimal text. A user the model was not trained on gets a history row
after the training users' when its first behaviour arrives, and is scored as :data:`NEW_USER`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np
import polars as pl

from seminar.data.schema import EMPTY_QUERY, SeminarDataset
from seminar.io import atomic_path
from seminar.serving.errors import (
    ExportError,
    ServingError,
    UnknownItemError,
    UnknownQueryError,
)

UnknownQueries = Literal["reject", "empty"]
UNKNOWN_QUERY_POLICIES: tuple[str, ...] = ("reject", "empty")
ID_FILES = {"users": "ids/users.parquet", "items": "ids/items.parquet", "queries": "ids/queries.parquet"}
MAX_LISTED = 5  # unknown ids named in one error message
NEW_USER = -1  # the ranker's user index for a user it was not trained on: no id embedding, no profile


def _is_empty_query(query: str | None) -> bool:
    return query is None or not query.strip()


def _read_dense(root: Path, name: str, column: str, first: int) -> pl.DataFrame:
    """One id map, checked to cover ids first, first+1, ... without gaps."""
    path = root / ID_FILES[name]
    try:
        frame = pl.read_parquet(path).sort(column)
    except (OSError, pl.exceptions.PolarsError) as exc:
        raise ExportError(f"{path}: unreadable id map ({exc})") from exc
    if frame[column].to_list() != list(range(first, first + frame.height)):
        raise ExportError(f"{path}: ids are not {first}, {first + 1}, ... without gaps")
    return frame


@dataclass
class IdMaps:
    """Raw ids by internal id (index = internal id; unused rows hold None) and the inverse dicts."""

    users: list[str]  # index = user row
    items: list[str | None]  # index = item id; 0 is padding
    queries: list[str | None]  # index = query id; 0 padding, 1 the empty query
    user_index: dict[str, int] = field(init=False, repr=False)
    item_index: dict[str, int] = field(init=False, repr=False)
    query_index: dict[str, int] = field(init=False, repr=False)
    new_users: list[str] = field(default_factory=list)  # row len(users) + i: first seen in serving
    new_user_index: dict[str, int] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self.user_index = {raw: i for i, raw in enumerate(self.users)}
        self.item_index = {raw: i for i, raw in enumerate(self.items) if raw is not None}
        self.query_index = {raw: i for i, raw in enumerate(self.queries) if raw is not None}
        self.new_user_index = {raw: len(self.users) + i for i, raw in enumerate(self.new_users)}
        if len(self.user_index) != len(self.users) or len(self.item_index) != len(self.items) - 1:
            raise ExportError("id maps hold duplicate raw user or item ids")

    @classmethod
    def from_dataset(cls, ds: SeminarDataset) -> IdMaps:
        users = ds.table("users").sort("user_index")
        items = ds.table("items").sort("item_id")
        queries = ds.table("queries").sort("query_id")
        if users["user_index"].to_list() != list(range(ds.n_users)):
            raise ExportError(f"{ds.root}: users table does not cover user rows 0..{ds.n_users - 1}")
        if items["item_id"].to_list() != list(range(1, ds.n_items + 1)):
            raise ExportError(f"{ds.root}: items table does not cover item ids 1..{ds.n_items}")
        if queries["query_id"].to_list() != list(range(EMPTY_QUERY, ds.n_queries + 1)):
            raise ExportError(f"{ds.root}: queries table does not cover query ids 1..{ds.n_queries}")
        return cls(
            users=users["raw_id"].to_list(),
            items=[None, *items["raw_id"].to_list()],
            queries=[None, None, *queries["text"].to_list()[1:]],
        )

    # ------------------------------------------------------------------ persistence
    def save(self, root: Path) -> list[str]:
        """Write the three maps as Parquet under ``root``; returns the relative paths written."""
        frames = {
            "users": pl.DataFrame(
                {"user_index": np.arange(len(self.users), dtype=np.int32), "raw_id": self.users},
                schema={"user_index": pl.Int32, "raw_id": pl.String},
            ),
            "items": pl.DataFrame(
                {"item_id": np.arange(1, len(self.items), dtype=np.int32), "raw_id": self.items[1:]},
                schema={"item_id": pl.Int32, "raw_id": pl.String},
            ),
            "queries": pl.DataFrame(
                {"query_id": np.arange(2, len(self.queries), dtype=np.int32), "text": self.queries[2:]},
                schema={"query_id": pl.Int32, "text": pl.String},
            ),
        }
        for name, frame in frames.items():
            with atomic_path(root / ID_FILES[name]) as tmp:
                frame.write_parquet(tmp)
        return list(ID_FILES.values())

    @classmethod
    def load(cls, root: Path) -> IdMaps:
        users = _read_dense(root, "users", "user_index", 0)
        items = _read_dense(root, "items", "item_id", 1)
        queries = _read_dense(root, "queries", "query_id", 2)
        return cls(
            users=users["raw_id"].to_list(),
            items=[None, *items["raw_id"].to_list()],
            queries=[None, None, *queries["text"].to_list()],
        )

    # ------------------------------------------------------------------ look-ups
    def user_row(self, raw: str, *, create: bool = False) -> int | None:
        """The history row of a raw user id: a training user's own row, or one after them for a user
        first seen in serving (made by ``create``; the caller holds the store's lock). None for a
        user seen nowhere yet."""
        raw = str(raw)
        row = self.user_index.get(raw, self.new_user_index.get(raw))
        if row is None and create:
            row = len(self.users) + len(self.new_users)
            self.new_users.append(raw)
            self.new_user_index[raw] = row
        return row

    def model_user(self, row: int) -> int:
        """The ranker's user index of a history row: the row itself for a training user, else NEW_USER."""
        return row if row < len(self.users) else NEW_USER

    def restore_new_users(self, raws: Sequence[str]) -> None:
        """Re-register serving's new users in their saved order (rows must come back the same)."""
        if self.new_users:
            raise ServingError("new users are already registered; restore into a fresh service")
        clash = [raw for raw in raws if raw in self.user_index]
        if clash or len(set(raws)) != len(raws):
            raise ServingError(f"saved new users repeat or shadow training users: {clash[:MAX_LISTED]}")
        for raw in raws:
            self.user_row(raw, create=True)

    def item_ids(self, raws: Sequence[str]) -> np.ndarray:
        """Internal ids (int32) of raw item ids; every unknown one is named in the error."""
        get = self.item_index.get
        ids = [get(str(raw), 0) for raw in raws]
        out = np.asarray(ids, dtype=np.int32)
        if (out == 0).any():
            bad = np.flatnonzero(out == 0)
            listed = ", ".join(f"#{i}: {raws[i]!r}" for i in bad[:MAX_LISTED])
            more = f" and {bad.size - MAX_LISTED} more" if bad.size > MAX_LISTED else ""
            raise UnknownItemError(f"unknown item ids (not in the export's item map): {listed}{more}")
        return out

    def query_ids(self, texts: Sequence[str | None], unknown: UnknownQueries = "reject") -> np.ndarray:
        """Internal ids (int32) of query strings; None or blank is the empty query.

        An unseen query is rejected, or with ``unknown="empty"`` treated as the empty query.
        """
        get = self.query_index.get
        out = np.full(len(texts), EMPTY_QUERY, dtype=np.int32)
        bad: list[int] = []
        for i, text in enumerate(texts):
            if text is not None and not isinstance(text, str):
                raise ServingError(f"query #{i} must be a string or None, got {text!r}")
            if _is_empty_query(text):
                continue
            found = get(text)  # type: ignore[arg-type]
            if found is None:
                bad.append(i)
            else:
                out[i] = found
        if bad and unknown == "reject":
            listed = ", ".join(
                f"#{i}: {texts[i]!r}" if len(texts) > 1 else repr(texts[i]) for i in bad[:MAX_LISTED]
            )
            more = f" and {len(bad) - MAX_LISTED} more" if len(bad) > MAX_LISTED else ""
            raise UnknownQueryError(
                f"unknown queries (not in the export's query vocabulary): {listed}{more}; "
                "send null for a recommendation behaviour"
            )
        return out

    def raw_item(self, item: int) -> str:
        return self.items[item] or ""

    def raw_query(self, query: int) -> str | None:
        return self.queries[query]
