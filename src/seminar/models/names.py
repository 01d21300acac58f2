"""Every ranker's name, without importing a model: the CLI's ``--model`` choices and a reproduce
config's check are built from these before any command needs torch (``seminar --help`` stays quick).

The models themselves are :data:`seminar.models.ranker.SEARCHES` (two-stage) and
:data:`seminar.models.registry.REFERENCE_MODELS`; tests hold their names equal to these.
"""

from __future__ import annotations

__all__ = ["ALL_MODELS", "REFERENCE_MODEL_NAMES", "TWO_STAGE_MODELS"]

REFERENCE_MODEL_NAMES: tuple[str, ...] = ("popularity", "itemknn", "sasrec", "oracle")
"""Rankers without a GSU and ESU: counting (popularity, item-kNN), SASRec, and the lifelong oracle."""

TWO_STAGE_MODELS: tuple[str, ...] = ("recency", "sim_hard", "sim_soft", "eta", "twin", "qin", "seminar")
"""GSU/ESU rankers; only the GSU differs between them."""

ALL_MODELS: tuple[str, ...] = (*REFERENCE_MODEL_NAMES, *TWO_STAGE_MODELS)
