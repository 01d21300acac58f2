"""PretrainConfig refuses values no run could use, and feasible_tasks switches off what a dataset
cannot support (alignment without two item channels, relevance without queries)."""

from __future__ import annotations

import pytest
import torch

from seminar.data.schema import EMPTY_QUERY
from seminar.models.features import FeatureTables
from seminar.models.psu import NoPretrainingTask, PretrainConfig, feasible_tasks


@pytest.mark.parametrize(
    "bad",
    [
        {"dim": 0},
        {"heads": 0},
        {"align_chunks": 0},
        {"fusion_lambda": 1.5},
        {"temperature": 0.0},
        {"temperature": float("nan")},
        {"align_weight": -1.0},
        {"relevance_weight": float("inf")},
        {"align_window": 0},
    ],
)
def test_bad_values_are_refused(bad: dict[str, float]) -> None:
    with pytest.raises(ValueError):
        PretrainConfig(**bad)


def tables(*, text: bool, queries: int) -> FeatureTables:
    n_items = 5
    return FeatureTables(
        n_users=3,
        n_items=n_items,
        n_queries=queries,
        n_attributes=2,
        item_attributes=torch.zeros((n_items + 1, 1), dtype=torch.long),
        item_category=torch.zeros(n_items + 1, dtype=torch.long),
        item_text_vectors=torch.zeros((n_items + 1, 4)) if text else None,
    )


def test_feasible_tasks_switch_off_what_the_dataset_cannot_support() -> None:
    config = PretrainConfig()
    kept, dropped = feasible_tasks(config, tables(text=True, queries=EMPTY_QUERY + 3))
    assert kept == config and dropped == {}
    kept, dropped = feasible_tasks(config, tables(text=False, queries=EMPTY_QUERY + 3))
    assert kept.tasks() == ["next_pair", "relevance"] and list(dropped) == ["align"]
    assert "one (attributes)" in dropped["align"]
    kept, dropped = feasible_tasks(config, tables(text=True, queries=EMPTY_QUERY))
    assert kept.tasks() == ["next_pair", "align"] and "no queries" in dropped["relevance"]
    with pytest.raises(NoPretrainingTask, match="align needs two item channels"):
        feasible_tasks(PretrainConfig(next_pair=False, relevance=False), tables(text=False, queries=9))
