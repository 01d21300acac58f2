"""The packages whose ``__init__`` names are imported on first use, and the torch-free lists the CLI
reads: every advertised name resolves, and the lists match the models they stand for."""

from __future__ import annotations

import importlib
import subprocess
import sys

import pytest

from seminar.models import names, registry
from seminar.models.ranker import MODELS

PACKAGES = ["seminar.serving", "seminar.retrieval", "seminar.reproduce", "seminar.train"]


@pytest.mark.parametrize("package", PACKAGES)
def test_every_exported_name_resolves_and_unknown_ones_fail(package: str) -> None:
    module = importlib.import_module(package)
    assert module.__all__
    for name in module.__all__:
        value = getattr(module, name)
        assert getattr(value, "__name__", name) == name  # the object itself, not a module or a stand-in
    with pytest.raises(AttributeError, match="no attribute 'not_a_name'"):
        module.not_a_name  # noqa: B018


def test_a_submodule_is_an_attribute_of_its_lazy_package() -> None:
    """As with an eager ``__init__``: ``seminar.train.trainer`` without importing it first (checked in
    a fresh interpreter: this one has imported every submodule already)."""
    probe = (
        "import seminar.train, seminar.serving; "
        "assert seminar.train.trainer.Trainer is seminar.train.Trainer; "
        "assert seminar.serving.service.ScoringService is seminar.serving.ScoringService; "
        "print('ok')"
    )
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr


def test_model_names_match_the_models() -> None:
    assert names.TWO_STAGE_MODELS == MODELS
    assert tuple(registry.REFERENCE_MODELS) == names.REFERENCE_MODEL_NAMES
    assert tuple(registry.RANKERS) == names.ALL_MODELS
