"""The in-memory form every raw-format reader returns before it becomes a canonical dataset.

Each source (RecBole atomic files, generic CSV/Parquet, KuaiSAR, Amazon, synthetic) reads its
own files and returns one :class:`SourceTables`. :func:`seminar.data.build.build_dataset` then
does the work they share: id maps, per-user CSR sequences, the split, content vectors and the
manifest. Keeping that boundary means a new format is one small reader.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Literal

import numpy as np

if TYPE_CHECKING:  # annotations only: DataError and the column names load without polars
    import polars as pl

TextKind = Literal["text", "tokens"]

# Column names of the interactions frame.
USER = "user"
ITEM = "item"
TIMESTAMP = "timestamp"
QUERY = "query"
# Column names of the items frame.
TITLE = "title"
IMAGE_PATH = "image_path"


class DataError(ValueError):
    """Raw input that cannot be turned into a dataset; the message names file, row and column."""


def shorten(text: str, limit: int = 200) -> str:
    """An error message (or a value quoted in one) cut to a readable length: a malformed file must
    not flood the terminal."""
    return text if len(text) <= limit else text[: limit - 3] + "..."


@dataclass
class SourceTables:
    """Raw behaviours and item side information, with raw (not yet internal) ids.

    interactions
        One row per behaviour with columns ``user``, ``item`` (String or integer raw ids),
        ``timestamp`` (Int64, any monotone unit) and ``query`` (String or null). A null query is
        a recommendation behaviour; a non-null one a search behaviour. Rows are in file order;
        ties in timestamp keep that order.
    items
        One row per item with column ``item`` (same dtype as in ``interactions``), optional
        ``title`` (String), optional ``image_path`` (String, absolute or relative to
        ``image_root``) and one ``List(String)`` column per attribute field named in
        ``attribute_fields``. Items seen in interactions but missing here get empty side info.
    text_kind
        ``"text"``: titles and queries are natural language (encoded with a text encoder).
        ``"tokens"``: they are space-separated integer token ids (KuaiSAR), encoded as bags of
        learned token embeddings.
    item_vectors / query_vectors
        Precomputed content vectors (synthetic data): channel name -> array aligned with the
        rows of ``items``; query vectors keyed by the distinct query values, aligned with
        ``query_values``.
    users
        Optional user profile: one row per user with column ``user`` (same dtype as in
        ``interactions``) and one ``List(String)`` column per field named in ``user_fields``.
        Like item attributes, each (field, value) pair becomes a categorical user attribute
        with its own vocabulary; users missing here (or all users, when ``None``) get none.
    user_fields
        The columns of ``users`` that are stored as user attribute fields, in order.
    """

    name: str
    interactions: pl.DataFrame
    items: pl.DataFrame
    attribute_fields: list[str] = field(default_factory=list)
    text_kind: TextKind = "text"
    raw_files: list[Path] = field(default_factory=list)
    synthetic_queries: bool = False
    image_root: Path | None = None
    params: dict[str, object] = field(default_factory=dict)
    item_vectors: dict[str, np.ndarray] = field(default_factory=dict)
    query_values: pl.Series | None = None
    query_vectors: np.ndarray | None = None
    skipped: dict[str, int] = field(default_factory=dict)
    users: pl.DataFrame | None = None
    user_fields: list[str] = field(default_factory=list)

    def count_skip(self, reason: str, n: int) -> None:
        """Record rows dropped by a documented convention (reported in the manifest)."""
        if n:
            self.skipped[reason] = self.skipped.get(reason, 0) + int(n)


def require_columns(frame: pl.DataFrame, columns: list[str], source: Path | str) -> None:
    """Raise a :class:`DataError` naming the file and every missing column."""
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise DataError(f"{source}: missing column(s) {missing}; found {frame.columns}")
