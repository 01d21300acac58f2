"""Dataset-level lookup tables a model needs (content vectors, attributes, token bags), as tensors.

Content vectors become non-trainable buffers: they are inputs, projected by learned ``W_q, W_t,
W_i``; no weight initialiser touches them.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from seminar.data.categories import item_categories
from seminar.data.loader import training_item_counts
from seminar.data.schema import SeminarDataset, padded_rows

MAX_ATTRIBUTES = 16
MAX_TOKENS = 32


@dataclass
class FeatureTables:
    """Everything id-indexed a model looks up: sizes plus optional content/attribute/token tables."""

    n_users: int
    n_items: int
    n_queries: int
    n_attributes: int
    item_attributes: Tensor  # [n_items + 1, A] attribute ids, 0 = pad
    item_category: Tensor  # [n_items + 1] category attribute id, 0 = none
    query_vectors: Tensor | None = None  # [n_queries + 1, Dq]
    item_text_vectors: Tensor | None = None  # [n_items + 1, Dt]
    item_image_vectors: Tensor | None = None  # [n_items + 1, Di]
    n_tokens: int = 0
    item_tokens: Tensor | None = None  # [n_items + 1, T] token ids (+1 shifted), 0 = pad
    query_tokens: Tensor | None = None  # [n_queries + 1, T]
    n_user_attributes: int = 0
    user_attributes: Tensor | None = None  # [n_users, A] user attribute ids (profile), 0 = pad
    item_counts: Tensor | None = None  # [n_items + 1] occurrences in the training histories

    @classmethod
    def from_dataset(
        cls, ds: SeminarDataset, max_attributes: int = MAX_ATTRIBUTES, max_tokens: int = MAX_TOKENS
    ) -> FeatureTables:
        def vectors(name: str) -> Tensor | None:
            arr = ds.vectors.get(name)
            return None if arr is None else torch.from_numpy(np.asarray(arr, dtype=np.float32))

        tables = cls(
            n_users=ds.n_users,
            n_items=ds.n_items,
            n_queries=ds.n_queries,
            n_attributes=ds.n_attributes,
            item_attributes=torch.from_numpy(ds.item_attributes_padded(max_attributes).astype(np.int64)),
            item_category=torch.from_numpy(item_categories(ds)),
            query_vectors=vectors("query_text"),
            item_text_vectors=vectors("item_text"),
            item_image_vectors=vectors("item_image"),
            item_counts=torch.from_numpy(training_item_counts(ds).astype(np.int64)),
        )
        if ds.n_user_attributes:
            tables.n_user_attributes = ds.n_user_attributes
            profile = ds.user_attributes_padded(max_attributes).astype(np.int64)
            tables.user_attributes = torch.from_numpy(profile)
        if ds.tokens:
            item_tok = padded_rows(ds.tokens["item_token_offsets"], ds.tokens["item_token_ids"], max_tokens)
            query_tok = padded_rows(
                ds.tokens["query_token_offsets"], ds.tokens["query_token_ids"], max_tokens
            )
            tables.item_tokens, tables.query_tokens = torch.from_numpy(item_tok), torch.from_numpy(query_tok)
            tables.n_tokens = int(max(item_tok.max(initial=0), query_tok.max(initial=0)))
        return tables
