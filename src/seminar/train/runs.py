"""Rebuild the model of a finished run from its checkpoint, below the orchestration in experiment.

A run's checkpoint config names the model class and its config; classes come from an explicit
registry, never from importing a stored string. Kept here so lower layers (retrieval, serving)
can load a run without importing :mod:`seminar.experiment`.
"""

from __future__ import annotations

from dataclasses import fields
from pathlib import Path
from typing import Any

from torch import nn

from seminar.models.features import FeatureTables
from seminar.models.psu import PretrainConfig, PretrainingSearchUnit
from seminar.models.ranker import Ranker, RankerConfig
from seminar.models.registry import REFERENCE_MODELS
from seminar.train.checkpoint import load_weights, read_checkpoint_config
from seminar.train.trainer import BEST

__all__ = ["MODEL_REGISTRY", "load_run_model", "run_max_length"]

MODEL_REGISTRY: dict[str, tuple[type[nn.Module], type]] = {
    "seminar.models.ranker.Ranker": (Ranker, RankerConfig),
    "seminar.models.psu.PretrainingSearchUnit": (PretrainingSearchUnit, PretrainConfig),
    **{f"{cls.__module__}.{cls.__qualname__}": (cls, RankerConfig) for cls in REFERENCE_MODELS.values()},
}


def _config_from_dict(cls: type, values: dict[str, Any]) -> Any:
    """A saved model config; a config class with its own ``from_dict`` (legacy keys) decides itself."""
    if hasattr(cls, "from_dict"):
        return cls.from_dict(values)
    known = {f.name for f in fields(cls)}
    return cls(**{k: v for k, v in values.items() if k in known})


def load_run_model(run_dir: Path | str, tables: FeatureTables, checkpoint: str = BEST) -> nn.Module:
    """Rebuild the model of a finished run from its checkpoint config and load its weights."""
    directory = Path(run_dir) / checkpoint
    config = read_checkpoint_config(directory)
    name = config.get("model_class")
    if name not in MODEL_REGISTRY:
        raise ValueError(f"{directory}: unknown model class {name!r}; known: {sorted(MODEL_REGISTRY)}")
    model_cls, config_cls = MODEL_REGISTRY[name]
    model = model_cls(tables, _config_from_dict(config_cls, config.get("model_config") or {}))
    load_weights(directory, model)
    return model


def run_max_length(run_dir: Path | str, checkpoint: str = BEST) -> int:
    """The history window L a run was trained with (read from its checkpoint)."""
    return int(read_checkpoint_config(Path(run_dir) / checkpoint)["train"]["max_length"])
