"""Each item's category: what SIM (hard) calls "the same category" and what category-matched
evaluation negatives are drawn from. Computed from the attribute CSR, so the build can use it
before the dataset exists and the models after it is loaded."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:  # annotations only: the models import this module where polars may be absent
    import polars as pl

    from seminar.data.schema import SeminarDataset

CATEGORY_FIELDS = ("category", "class", "categories", "fst_cate", "first_level_category", "genre", "genres")
# Fields holding a category path, root first (Amazon's): the last value is the most specific one.
PATH_FIELDS = ("categories",)


def category_per_item(
    fields: list[str],
    vocab: pl.DataFrame,
    attr_offsets: np.ndarray,
    attr_ids: np.ndarray,
    n_items: int,
    n_attributes: int,
    field: str | None = None,
) -> np.ndarray:
    """One category attribute id per item id (0 = none).

    ``field`` defaults to the first of CATEGORY_FIELDS the dataset has, else its first attribute
    field. An item's category is its first value of that field, or the most specific level of a
    root-first category path (PATH_FIELDS), where "Movies & TV" would put every item in one category.
    ``vocab`` is the attribute vocabulary (field, value, attribute_id); the CSR gives each item's ids.
    """
    out = np.zeros(n_items + 1, dtype=np.int64)
    if field is None:
        field = next((f for f in CATEGORY_FIELDS if f in fields), fields[0] if fields else None)
    if field is None:
        return out
    in_field = np.zeros(max(n_attributes, 1) + 1, dtype=bool)
    in_field[vocab.filter(vocab["field"] == field)["attribute_id"].to_numpy()] = True
    counts = np.diff(attr_offsets)
    item_of = np.repeat(np.arange(counts.size), counts)
    selected = in_field[attr_ids]
    if field in PATH_FIELDS:
        # The most specific level of a path is its rarest value (a sub-category never has more
        # items than its parent); the stored order of an item's values need not be the path's.
        items, values = item_of[selected], attr_ids[selected]
        frequency = np.bincount(values)[values]
        order = np.lexsort((-values, frequency, items))  # by item, then rarest, then larger id
        first = np.ones(order.size, dtype=bool)
        first[1:] = items[order][1:] != items[order][:-1]
        out[items[order][first]] = values[order][first]
    else:
        out[item_of[selected][::-1]] = attr_ids[selected][::-1]  # reversed: the first value wins
    return out


def item_categories(ds: SeminarDataset, field: str | None = None) -> np.ndarray:
    """:func:`category_per_item` of a loaded dataset (0 for every item of a dataset without attributes)."""
    fields = list(ds.manifest.get("attribute_fields", []))
    if field is None and not fields:  # no attribute at all: nothing to read (in-memory datasets too)
        return np.zeros(ds.n_items + 1, dtype=np.int64)
    return category_per_item(
        fields, ds.table("attributes"), ds.attr_offsets, ds.attr_ids, ds.n_items, ds.n_attributes, field
    )
