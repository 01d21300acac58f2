"""FeatureTables to and from one safetensors file, so a model rebuilds without the dataset directory.

Id tables are stored as int32 and content vectors as float16 when that is lossless (the dataset
keeps them in float16), and widened again on load to exactly what ``FeatureTables.from_dataset``
builds.
"""

from __future__ import annotations

from dataclasses import fields
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.numpy import load_file, save_file

from seminar.io import atomic_path
from seminar.models.features import FeatureTables

SIZES = ("n_users", "n_items", "n_queries", "n_attributes", "n_tokens", "n_user_attributes")
ID_TABLES = (
    "item_attributes",
    "item_category",
    "item_tokens",
    "query_tokens",
    "user_attributes",
    "item_counts",  # training counts (the item-popularity input); absent from older exports
)
VECTOR_TABLES = ("query_vectors", "item_text_vectors", "item_image_vectors")


def _narrow(name: str, tensor: torch.Tensor) -> np.ndarray:
    array = tensor.detach().cpu().numpy()
    if name in ID_TABLES and array.size and np.abs(array).max() < 2**31:
        return array.astype(np.int32)
    if name in VECTOR_TABLES:
        half = array.astype(np.float16)
        if np.array_equal(half.astype(array.dtype), array):
            return half
    return np.ascontiguousarray(array)


def save_feature_tables(tables: FeatureTables, path: Path) -> dict[str, Any]:
    """Write every tensor of ``tables``; returns the sizes to keep in the export manifest."""
    arrays = {
        f.name: _narrow(f.name, getattr(tables, f.name))
        for f in fields(tables)
        if isinstance(getattr(tables, f.name), torch.Tensor)
    }
    with atomic_path(path) as tmp:
        save_file(arrays, str(tmp), metadata={"format": "seminar.FeatureTables/1"})
    return {name: int(getattr(tables, name)) for name in SIZES}


def load_feature_tables(path: Path, sizes: dict[str, Any]) -> FeatureTables:
    """Inverse of :func:`save_feature_tables` (ids widened to int64, vectors to float32)."""
    arrays = load_file(str(path))
    tensors: dict[str, torch.Tensor] = {}
    for name, array in arrays.items():
        if name in ID_TABLES:
            tensors[name] = torch.from_numpy(array.astype(np.int64))
        elif name in VECTOR_TABLES:
            tensors[name] = torch.from_numpy(array.astype(np.float32))
        else:
            raise ValueError(f"{path}: unexpected table {name!r}")
    # exports made before user features existed have no n_user_attributes: they had none
    return FeatureTables(**{name: int(sizes.get(name, 0)) for name in SIZES}, **tensors)
