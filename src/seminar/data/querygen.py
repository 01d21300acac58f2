"""Deterministic synthetic search queries for datasets that log no real queries.

Product-search work on Amazon reviews (Van Gysel et al., CIKM'16; Ai et al., SIGIR'17) has no
query log, so it builds one query per item from the item's category hierarchy and treats every
purchase/review of that item as a search issued with that query. We follow that recipe so that
Amazon behaviours can train and evaluate the personalised-search side of the model.

Recipe, applied to each row of the items frame independently:

1. Normalise text: Unicode NFKC, case-folded, split into runs of letters/digits (punctuation,
   ``&``, ``_`` and whitespace separate terms). Terms in :data:`STOP_WORDS` and one-letter terms
   are dropped; digits are kept (years, volume numbers).
2. ``List(String)`` fields named in ``fields`` are category paths. Their values are read from the
   last (most specific) to the first, so a cap keeps the specific end of the hierarchy:
   ``["Movies & TV", "Genres", "Comedy"]`` gives ``comedy genres movies tv``. Several list fields
   are read in the order given.
3. ``String`` fields (title, description) are free text. Their terms only fill the slots the
   category terms left free. When they offer more terms than free slots, the kept ones are
   chosen by a keyed BLAKE2b hash of ``(seed, item id, term)``; the chosen terms keep the order
   in which they appear in the text. ``seed`` thus picks a different, still reproducible, subset.
4. Terms are de-duplicated keeping the first occurrence; the query has at most ``max_terms``
   terms, joined by single spaces.
5. Fallback for items with no usable term: the terms of the item's other ``String`` /
   ``List(String)`` columns (attributes such as brand), in column order; if there are none, the
   query is ``"item <id>"`` built from the raw item id, so a query is never empty and items
   without text do not all collapse onto one shared query.

The output depends only on the row's values and ``seed``: no Python ``hash()``, no set
iteration order, no global term statistics, so it is identical across runs and processes.
"""

from __future__ import annotations

import hashlib
import re
import unicodedata
from collections.abc import Sequence

import polars as pl

from seminar.data.tables import IMAGE_PATH, ITEM

_STOP_TEXT = """
    a about above after again against all am an and any are as at be because been before being
    below between both but by can could did do does doing down during each few for from further
    had has have having he her here hers herself him himself his how i if in into is it its
    itself just me more most my myself no nor not now of off on once only or other our ours
    ourselves out over own same she should so some such than that the their theirs them
    themselves then there these they this those through to too under until up very was we were
    what when where which while who whom why will with would you your yours yourself yourselves
    s t d ll m o re ve y also amp etc inc ltd co vs via per
"""
# English function words (membership tests only; never iterated, so its order cannot leak).
STOP_WORDS: frozenset[str] = frozenset(_STOP_TEXT.split())

_TERM = re.compile(r"[^\W_]+")


def text_terms(text: str | None) -> list[str]:
    """Normalised query terms of ``text`` in order (duplicates kept)."""
    if not text:
        return []
    norm = unicodedata.normalize("NFKC", text).casefold()
    return [t for t in _TERM.findall(norm) if t not in STOP_WORDS and (len(t) > 1 or t.isdigit())]


def _dedup(terms: list[str]) -> list[str]:
    return list(dict.fromkeys(terms))


def _path_terms(values: Sequence[str | None] | None) -> list[str]:
    if not values:
        return []
    out: list[str] = []
    for value in reversed(list(values)):
        out.extend(text_terms(value))
    return out


def _rank_key(seed: int, item: str, term: str) -> bytes:
    msg = f"{seed}\x1f{item}\x1f{term}".encode()
    return hashlib.blake2b(msg, digest_size=8).digest()


def _pick(terms: list[str], k: int, seed: int, item: str) -> list[str]:
    """``k`` of ``terms`` chosen by a keyed hash, returned in their original order."""
    if k <= 0:
        return []
    if len(terms) <= k:
        return terms
    order = sorted(range(len(terms)), key=lambda i: (_rank_key(seed, item, terms[i]), i))
    keep = sorted(order[:k])
    return [terms[i] for i in keep]


def _kind(dtype: pl.DataType, column: str) -> str:
    if dtype in (pl.String, pl.Null):  # an all-null column has dtype Null
        return "text"
    if dtype == pl.List(pl.String):
        return "path"
    raise ValueError(f"query field {column!r} must be String or List(String), got {dtype}")


def generate_queries(
    items: pl.DataFrame,
    *,
    fields: Sequence[str],
    max_terms: int = 6,
    seed: int = 0,
) -> pl.Series:
    """One synthetic query per row of ``items`` (see the module docstring for the recipe).

    ``items`` needs an ``item`` column (used for the seeded choice and the last-resort fallback)
    and every column in ``fields``. Returns a String series named ``query``, aligned with the
    rows of ``items``, with no null or empty value.
    """
    if isinstance(fields, str):
        raise TypeError("fields must be a sequence of column names, not a string")
    if max_terms < 1:
        raise ValueError(f"max_terms must be >= 1, got {max_terms}")
    if not fields:
        raise ValueError("fields must name at least one column")
    if ITEM not in items.columns:
        raise ValueError(f"items frame needs an {ITEM!r} column; found {items.columns}")
    missing = [f for f in fields if f not in items.columns]
    if missing:
        raise ValueError(f"query field(s) {missing} not in items frame; found {items.columns}")
    kinds = [_kind(items.schema[f], f) for f in fields]
    fallback = [
        c
        for c in items.columns
        if c not in fields
        and c not in (ITEM, IMAGE_PATH)
        and items.schema[c] in (pl.String, pl.Null, pl.List(pl.String))
    ]
    fallback_kinds = [_kind(items.schema[c], c) for c in fallback]

    ids = items[ITEM].cast(pl.String).to_list()
    field_rows = items.select(list(fields)).rows()
    fallback_rows = items.select(fallback).rows() if fallback else [()] * items.height

    if None in ids:
        raise ValueError(f"items frame has a null {ITEM!r} at row {ids.index(None)}")

    queries: list[str] = []
    for key, values, extra in zip(ids, field_rows, fallback_rows, strict=True):
        path: list[str] = []
        text: list[str] = []
        for kind, value in zip(kinds, values, strict=True):
            if kind == "path":
                path.extend(_path_terms(value))
            else:
                text.extend(text_terms(value))
        terms = _dedup(path)[:max_terms]
        taken = dict.fromkeys(terms)
        free_text = [t for t in _dedup(text) if t not in taken]
        terms += _pick(free_text, max_terms - len(terms), seed, key)
        if not terms:
            backup: list[str] = []
            for kind, value in zip(fallback_kinds, extra, strict=True):
                backup.extend(_path_terms(value) if kind == "path" else text_terms(value))
            terms = _dedup(backup)[:max_terms]
        queries.append(" ".join(terms) if terms else f"item {key}")
    return pl.Series("query", queries, dtype=pl.String)
