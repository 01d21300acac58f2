"""ExperimentSettings: one declaration behind the CLI flags, the reproduce YAML and the demo."""

from __future__ import annotations

import argparse
import math
from dataclasses import fields

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from seminar.errors import InvalidValue
from seminar.reproduce.cells import compared_training
from seminar.reproduce.config import ConfigError, parse_config
from seminar.settings import COMMANDS, ExperimentSettings, add_setting_flags, settings_from_args


def parser_for(command: str) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(exit_on_error=False)
    add_setting_flags(parser, command)
    return parser


def shown(command: str) -> dict[str, str]:
    """field name -> flag, as the command shows it."""
    return {
        f.name: f.metadata["cli"][command].name or "--" + f.name.replace("_", "-")
        for f in fields(ExperimentSettings)
        if command in f.metadata["cli"]
    }


def test_no_flags_give_the_defaults_and_pretrain_its_own():
    assert settings_from_args(parser_for("train").parse_args([])) == ExperimentSettings()
    psu = settings_from_args(parser_for("pretrain").parse_args([]))
    assert (psu.pretrain_epochs, psu.pretrain_lr, psu.pretrain_positions_per_user) == (10, 1e-3, None)
    train = psu.pretrain_train_config(seed=0)
    assert (train.epochs, train.lr, train.monitor, train.positions_per_user) == (10, 1e-3, "loss", None)


def test_every_field_is_shown_by_some_command_and_flags_are_unique():
    everywhere = {name for command in COMMANDS for name in shown(command)}
    assert everywhere == {f.name for f in fields(ExperimentSettings)}
    for command in COMMANDS:
        flags = list(shown(command).values())
        assert len(flags) == len(set(flags))


def argv_for(values: ExperimentSettings, command: str) -> list[str]:
    argv = []
    for name, flag in shown(command).items():
        value = getattr(values, name)
        if isinstance(value, bool):  # a flag switches its setting from the default
            argv += [flag] if value != ExperimentSettings.__dataclass_fields__[name].default else []
        elif value is not None:
            argv += [flag, repr(value) if isinstance(value, float) else str(value)]
    return argv


random_settings = st.builds(
    ExperimentSettings,
    max_length=st.integers(1, 5000),
    top_k=st.integers(1, 200),
    dim=st.integers(1, 256),
    epochs=st.integers(1, 50),
    pretrain_epochs=st.integers(1, 20),
    positions_per_user=st.integers(1, 100),
    lr=st.floats(1e-6, 1.0),
    pretrain_lr=st.floats(1e-6, 1.0),
    weight_decay=st.floats(0.0, 1.0),
    dropout=st.floats(0.0, 0.99),
    fusion_lambda=st.floats(0.0, 1.0),
    negative_sampling=st.sampled_from(["uniform", "popularity", "category", "mixed"]),
    loss=st.sampled_from(["softmax", "bce"]),
    eval_mode=st.sampled_from(["recommendation", "search", "pair"]),
    monitor=st.sampled_from(["ndcg@10", "hr@5", "mrr"]),
    user_id=st.booleans(),
    user_features=st.booleans(),
    gsu_recency=st.booleans(),
    knn_span=st.one_of(st.none(), st.integers(2, 1000)),
    device=st.sampled_from(["auto", "cpu", "cuda:1"]),
    workers=st.integers(0, 8),
)


@settings(max_examples=60, deadline=None)
@given(values=random_settings, command=st.sampled_from(COMMANDS))
def test_flags_round_trip_every_setting_a_command_shows(values: ExperimentSettings, command: str):
    parsed = settings_from_args(parser_for(command).parse_args(argv_for(values, command)))
    for name in shown(command):
        got, want = getattr(parsed, name), getattr(values, name)
        assert got == want or (isinstance(want, float) and math.isclose(got, want)), name


@pytest.mark.parametrize(
    ("changes", "key"),
    [
        ({"lr": math.nan}, "lr"),
        ({"pretrain_lr": -1.0}, "pretrain_lr"),
        ({"eval_batch_size": 0}, "eval_batch_size"),
        ({"knn_span": 1}, "knn_span"),
        ({"loss": "hinge"}, "loss"),
        ({"device": "tpu"}, "device"),
        ({"monitor": "ndcg@7"}, "monitor"),
        ({"weight_decay": math.inf}, "weight_decay"),
    ],
)
def test_bad_values_are_refused_by_name(changes, key):
    with pytest.raises(InvalidValue) as err:
        ExperimentSettings(**changes)
    assert err.value.key == key


def test_mapping_carries_every_ranker_setting():
    values = ExperimentSettings(
        dim=16, heads=2, top_k=7, knn_history=3, knn_neighbours=9, layers=4, loss="bce"
    )
    ranker = values.ranker_config("itemknn", seed=5, recent=2)
    assert (ranker.dim, ranker.heads, ranker.top_k, ranker.recent, ranker.seed) == (16, 2, 7, 2, 5)
    assert (ranker.knn_history, ranker.knn_neighbours, ranker.layers, ranker.loss) == (3, 9, 4, "bce")
    psu = values.pretrain_config(["align"], seed=1)
    assert (psu.next_pair, psu.align, psu.relevance, psu.dim) == (False, True, False, 16)
    assert values.pretrain_train_config(seed=0).lr == values.lr  # pretrain_lr None: the ranker's


def test_reproduce_yaml_parses_into_the_same_settings():
    base = {"datasets": [{"name": "d", "source": "synthetic"}], "models": [{"name": "m", "model": "sasrec"}]}
    config = parse_config({**base, "training": {"layers": 3, "knn_history": 5, "pretrain_lr": 0.001}})
    assert isinstance(config.training, ExperimentSettings)
    assert (config.training.layers, config.training.knn_history, config.training.pretrain_lr) == (3, 5, 0.001)
    with pytest.raises(ConfigError, match=r"training\.pretrain_lr"):
        parse_config({**base, "training": {"pretrain_lr": -0.1}})


def test_settings_added_later_leave_old_cells_matching_at_their_default():
    plain = compared_training(ExperimentSettings(), pretrained=True)
    assert not {"knn_history", "knn_neighbours", "layers", "pretrain_lr"} & set(plain)
    assert compared_training(ExperimentSettings(layers=3), pretrained=False)["layers"] == 3
    assert "pretrain_lr" not in compared_training(ExperimentSettings(pretrain_lr=0.01), pretrained=False)
    assert compared_training(ExperimentSettings(pretrain_lr=0.01), pretrained=True)["pretrain_lr"] == 0.01
