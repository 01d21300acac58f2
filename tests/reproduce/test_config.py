"""Parsing and validating reproduce configs: every mistake is a ConfigError naming the key."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
import yaml

from seminar.data.tables import DataError
from seminar.reproduce.cells import plan_cells, unique_specs
from seminar.reproduce.config import PSU_TASKS, ConfigError, load_config, parse_config
from seminar.reproduce.sources import KuaisarOptions, Ml100kOptions, TablesOptions, read_source

CONFIGS = Path(__file__).resolve().parents[2] / "configs"

BASE: dict[str, Any] = {
    "datasets": [{"name": "ml-100k", "source": "ml-100k"}],
    "models": [
        {"name": "TWIN", "model": "twin"},
        {"name": "SEMINAR", "model": "seminar", "pretrain": "all"},
        {"name": "SEMINAR w/o pretraining", "model": "seminar"},
    ],
    "seeds": [0, 1],
}


def config_with(**changes: Any) -> dict[str, Any]:
    data = copy.deepcopy(BASE)
    data.update(changes)
    return data


def error_of(data: Any) -> str:
    with pytest.raises(ConfigError) as info:
        parse_config(data)
    return str(info.value)


def test_minimal_config_gets_defaults() -> None:
    config = parse_config(BASE)
    assert config.training.max_length == 200 and config.modes == ["recommendation", "search"]
    assert isinstance(config.datasets[0].options, Ml100kOptions)
    assert config.datasets[0].build.text_encoder == "minilm"
    twin, seminar, scratch = config.models
    assert (twin.tables, seminar.tables, scratch.tables) == ([2], [2, 3], [3])
    assert seminar.psu_tasks == PSU_TASKS and scratch.psu_tasks is None


def test_a_variant_can_leave_user_features_out() -> None:
    from seminar.reproduce.cells import run_settings

    models = [
        {"name": "SEMINAR", "model": "seminar", "pretrain": "all"},
        {"name": "SEMINAR w/o user features", "model": "seminar", "pretrain": "all", "user_features": False},
    ]
    config = parse_config(config_with(models=models, seeds=[0]))
    with_profile, without = (cell.spec for cell in plan_cells(config))
    assert (with_profile.user_features, without.user_features) == (True, False)
    assert with_profile.key != without.key and without.key.endswith("-no-user-features")
    assert with_profile.psu_key == without.psu_key  # one pretrained PSU serves both
    settings = run_settings(config, without)
    assert settings["user_features"] is False and "user_features" not in settings["training"]
    off = parse_config(config_with(models=models[:1], seeds=[0], training={"user_features": False}))
    assert plan_cells(off)[0].spec.user_features is False  # the training default, when a variant is silent
    with pytest.raises(ConfigError, match="user_features"):
        parse_config(config_with(models=[{**models[0], "user_features": "no"}]))


def test_a_variant_can_keep_recent_behaviours_beside_the_gsus() -> None:
    from seminar.reproduce.cells import run_settings

    models = [
        {"name": "SEMINAR", "model": "seminar", "pretrain": "all"},
        {"name": "SEMINAR + 5 recent", "model": "seminar", "pretrain": "all", "recent": 5},
    ]
    config = parse_config(config_with(models=models, seeds=[0], training={"top_k": 10}))
    plain, recent = (cell.spec for cell in plan_cells(config))
    assert (plain.recent, recent.recent) == (0, 5) and recent.key.endswith("-recent5")
    assert plain.psu_key == recent.psu_key  # one pretrained PSU serves both
    assert "recent" not in run_settings(config, plain)  # cells from before the option keep matching
    assert run_settings(config, recent)["recent"] == 5
    assert "recent" in error_of(config_with(models=[{**models[1], "recent": 11}], training={"top_k": 10}))
    assert "recent" in error_of(config_with(models=[{**models[1], "recent": -1}]))
    assert "recent" in error_of(config_with(models=[{"name": "kNN", "model": "itemknn", "recent": 2}]))


# a row's own training switch: (the setting, the value a row sets, the folder suffix, the grid's default
# left out of the compared settings so that older cells keep matching, a reference model refusing it)
ROW_SWITCHES = [
    ("gsu_recency", True, "-gsu-recency", True, "itemknn"),
    ("item_popularity", True, "-pop", True, "popularity"),
    ("user_id", False, "-no-user-id", False, "sasrec"),
]


@pytest.mark.parametrize(("setting", "value", "suffix", "later", "reference"), ROW_SWITCHES)
def test_a_row_switch_is_the_grids_setting_for_that_row(
    setting: str, value: bool, suffix: str, later: bool, reference: str
) -> None:
    """A switch set on a row (``gsu_recency: true``, ``user_id: false``, ...) is the same run as the
    grid's training setting for that row: a folder of its own, the same compared settings, one PSU
    with the row without it; a reference ranker, which has no such part, refuses it."""
    from seminar.reproduce.cells import run_settings

    models = [
        {"name": "SEMINAR", "model": "seminar", "pretrain": "all"},
        {"name": "SEMINAR switched", "model": "seminar", "pretrain": "all", setting: value},
    ]
    config = parse_config(config_with(models=models, seeds=[0]))
    plain, switched = (cell.spec for cell in plan_cells(config))
    assert (getattr(plain, setting), getattr(switched, setting)) == (not value, value)
    assert switched.key == plain.key + suffix
    assert plain.psu_key == switched.psu_key  # one pretrained PSU serves both
    assert (setting in run_settings(config, plain)["training"]) is not later
    assert run_settings(config, switched)["training"][setting] is value
    on_grid = parse_config(config_with(models=models[:1], seeds=[0], training={setting: value}))
    grid_spec = plan_cells(on_grid)[0].spec
    assert getattr(grid_spec, setting) is value
    assert run_settings(on_grid, grid_spec) == run_settings(config, switched)
    assert setting in error_of(config_with(models=[{"name": "ref", "model": reference, setting: value}]))


def test_unknown_top_level_key_is_named_with_a_suggestion() -> None:
    message = error_of({**BASE, "trainng": {"epochs": 1}})
    assert "trainng: unknown key" in message and "did you mean 'training'" in message


def test_unknown_nested_key_carries_its_path() -> None:
    data = config_with(datasets=[{"name": "ml-100k", "source": "ml-100k", "build": {"negativs": 20}}])
    assert "datasets[0].build.negativs: unknown key" in error_of(data)


def test_source_options_are_checked_per_source() -> None:
    data = config_with(datasets=[{"name": "k", "source": "kuaisar", "options": {"reviews": "x"}}])
    assert "datasets[0].options.reviews: unknown key" in error_of(data)
    data = config_with(datasets=[{"name": "k", "source": "kuaisar", "options": {}}])
    assert "datasets[0].options.directory: missing required key" in error_of(data)
    data = config_with(datasets=[{"name": "k", "source": "kuaisar", "options": {"directory": "raw"}}])
    dataset = parse_config(data).datasets[0]
    assert isinstance(dataset.options, KuaisarOptions) and dataset.options.directory == Path("raw")
    assert dataset.build.text_encoder == "none"  # token ids: no text encoder by default


def test_tables_source_reads_a_users_file(tmp_path: Path) -> None:
    inter, users = tmp_path / "clicks.csv", tmp_path / "users.csv"
    inter.write_text("user,item,timestamp\na,x,1\na,y,2\na,z,3\n")
    users.write_text("user,age,city\na,30,Paris\n")
    options = {"interactions": str(inter), "users": str(users), "user_features": ["city"]}
    dataset = parse_config(config_with(datasets=[{"name": "t", "source": "tables", "options": options}]))
    tables_options = dataset.datasets[0].options
    assert isinstance(tables_options, TablesOptions) and tables_options.users == users
    tables = read_source("tables", tables_options, seed=0)
    assert tables.user_fields == ["city"] and tables.users.rows() == [("a", ["Paris"])]
    users.unlink()
    with pytest.raises(DataError, match=r"users: .*users\.csv does not exist"):
        read_source("tables", tables_options, seed=0)


def test_unknown_source_and_bad_model_name() -> None:
    assert "datasets[0].source: expected one of" in error_of(
        config_with(datasets=[{"name": "x", "source": "movielens"}])
    )
    message = error_of(config_with(models=[{"name": "GRU4Rec", "model": "gru4rec"}]))
    assert "models[0].model: unknown model 'gru4rec'" in message and "sasrec" in message
    message = error_of(config_with(models=[{"name": "kNN", "model": "itemknn", "pretrain": "all"}]))
    assert "models[0].pretrain: itemknn is a reference ranker" in message


def test_empty_or_repeated_seeds() -> None:
    assert "seeds: give at least one seed" in error_of(config_with(seeds=[]))
    assert "seeds: 1 is listed twice" in error_of(config_with(seeds=[1, 1]))


def test_wrong_types_are_refused_not_coerced(tmp_path: Path) -> None:
    assert "training.epochs: expected an integer, got 'four'" in error_of(
        config_with(training={"epochs": "four"})
    )
    assert "training.epochs: expected an integer, got True" in error_of(
        config_with(training={"epochs": True})
    )
    assert "seeds: expected a list" in error_of(config_with(seeds=3))
    assert "training.lr: expected a number, got '0.001'" in error_of(config_with(training={"lr": "0.001"}))
    no_dropout = config_with(training={"dropout": None})
    assert "training.dropout: expected a number, got None" in error_of(no_dropout)
    assert "models[1].pretrain: expected a list or a string, got 3" in error_of(
        config_with(models=[BASE["models"][0], {**BASE["models"][1], "pretrain": 3}])
    )
    assert "expected a mapping, got [1, 2]" in error_of([1, 2])
    # YAML 1.1 (PyYAML) reads 1e-3 as a string; the config's loader reads it as the number it spells
    path = tmp_path / "grid.yaml"
    text = yaml.safe_dump(BASE) + "training:\n  lr: 1e-3\n  weight_decay: -2.5E+1\n"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(ConfigError, match=r"training\.weight_decay: must be >= 0, got -25\.0"):
        load_config(path)
    path.write_text(yaml.safe_dump(BASE) + "training:\n  lr: 1e-3\n", encoding="utf-8")
    assert load_config(path).training.lr == pytest.approx(1e-3)


def test_value_ranges() -> None:
    assert "training.fusion_lambda: must lie in [0, 1]" in error_of(
        config_with(training={"fusion_lambda": 1.5})
    )
    with_sasrec = [*BASE["models"], {"name": "SASRec", "model": "sasrec"}]
    assert "training.heads: dim 64 is not divisible by 3 heads, which SASRec ('SASRec') needs" in error_of(
        config_with(training={"heads": 3}, models=with_sasrec)
    )
    assert parse_config(config_with(training={"heads": 3})).training.heads == 3  # MHTA heads are d wide
    assert "training.monitor: unknown metric" in error_of(config_with(training={"monitor": "auc@10"}))
    bad_task = config_with(models=[{"name": "S", "model": "seminar", "pretrain": ["align", "contrast"]}])
    assert "models[0].pretrain: unknown PSU task(s) ['contrast']" in error_of(bad_task)
    assert "models: 'TWIN' is listed twice" in error_of(config_with(models=[BASE["models"][0]] * 2))
    assert "datasets[0].name" in error_of(config_with(datasets=[{"name": "../x", "source": "ml-100k"}]))
    assert "training.lr: expected a finite number, got nan" in error_of(
        config_with(training={"lr": float("nan")})
    )
    assert "training.temperature: expected a finite number" in error_of(
        config_with(training={"temperature": float("inf")})
    )
    assert "training.device: use auto, cpu, mps, cuda or cuda:N, got 'tpu'" in error_of(
        config_with(training={"device": "tpu"})
    )


def test_sweeps_refer_to_known_variants() -> None:
    config = parse_config(config_with(sweeps={"pretrain_epochs": [0, 1], "fusion_lambda": [0.3, 0.5]}))
    assert config.sweeps.pretrain_epochs.variant == "SEMINAR"
    assert config.sweeps.fusion_lambda.values == [0.3, 0.5]
    unknown = config_with(sweeps={"fusion_lambda": {"variant": "SEMINAR++", "values": [0.5]}})
    assert "sweeps.fusion_lambda.variant: no model variant named 'SEMINAR++'" in error_of(unknown)
    not_pretrained = config_with(sweeps={"pretrain_epochs": {"variant": "TWIN", "values": [1]}})
    assert "'TWIN' is not pretrained" in error_of(not_pretrained)
    assert "sweeps.fusion_lambda.values: λ must lie in [0, 1]" in error_of(
        config_with(sweeps={"fusion_lambda": [0.5, 2.0]})
    )
    assert "sweeps.pretrain_epochs.values: give at least one value" in error_of(
        config_with(sweeps={"pretrain_epochs": []})
    )


def test_retrieval_section_is_validated_against_the_bench() -> None:
    message = error_of(config_with(retrieval={"preset": "quick", "methods": ["faiss-magic"]}))
    assert "retrieval.methods" in message and "faiss-magic" in message
    config = parse_config(config_with(retrieval={"preset": "quick", "ks": [4, 8], "rqvae": {"steps": 5}}))
    recall = config.retrieval.recall_config()
    assert recall.ks == (4, 8) and recall.rqvae.steps == 5 and recall.lengths == (1500,)


def test_files_yaml_errors_and_no_evaluation(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="config file not found"):
        load_config(tmp_path / "absent.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("datasets: [\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(bad)
    evil = tmp_path / "evil.yaml"
    evil.write_text("name: !!python/object/apply:os.system ['echo hacked']\n")
    with pytest.raises(ConfigError, match="not valid YAML"):  # safe_load refuses Python tags
        load_config(evil)
    repeated = tmp_path / "repeated.yaml"
    repeated.write_text("datasets: [{name: d, source: ml-100k}]\ntraining:\n  epochs: 1\n  epochs: 2\n")
    with pytest.raises(ConfigError, match="key 'epochs' on line 4 repeats the one on line 3"):
        load_config(repeated)
    latin = tmp_path / "latin.yaml"
    latin.write_bytes("datasets: []\nname: caf\u00e9\n".encode("latin-1"))
    with pytest.raises(ConfigError, match="line 2: not UTF-8 text"):
        load_config(latin)
    named = tmp_path / "my-grid.yaml"
    named.write_text("datasets: [{name: d, source: ml-100k}]\nmodels: [{name: r, model: recency}]\n")
    assert load_config(named).name == "my-grid"


@pytest.mark.parametrize("path", sorted(CONFIGS.glob("*.yaml")), ids=lambda p: p.name)
def test_shipped_configs_parse(path: Path) -> None:
    config = load_config(path)
    assert config.name == path.stem and plan_cells(config)


def test_ml100k_config_is_the_three_seed_grid_of_docs_results() -> None:
    config = load_config(CONFIGS / "ml100k.yaml")
    t = config.training
    assert (t.max_length, t.top_k, t.dim, t.heads, t.epochs, t.patience) == (100, 50, 32, 2, 15, 3)
    assert (t.pretrain_epochs, t.positions_per_user, t.eval_batch_size) == (2, None, 128)
    assert (t.lr, t.train_negatives, t.loss, t.fusion_lambda) == (0.003, 10, "softmax", 0.0)
    assert config.seeds == [0, 1, 2] and len(config.models) == 17
    assert [v.model for v in config.models[:3]] == ["popularity", "itemknn", "sasrec"]
    cells = plan_cells(config)
    specs = unique_specs(cells)
    # 17 variants; sweeps add epochs 1 and 4 and λ 0.1, 0.3, 0.5, 0.7, 0.9 (0, 2 and 0 reuse the grid)
    assert len(specs) == 3 * (17 + 2 + 5)


def test_errors_name_the_key_a_person_wrote_not_the_parsers_internals() -> None:
    # a sweep is a mapping or a bare list of values: the message follows the shape that was given
    assert "sweeps.fusion_lambda[0]: expected a number, got 'a'" in error_of(
        config_with(sweeps={"fusion_lambda": ["a"]})
    )
    assert "sweeps.fusion_lambda: expected a mapping or a list, got 'a'" in error_of(
        config_with(sweeps={"fusion_lambda": "a"})
    )
    message = error_of(config_with(sweeps={"pretrain_epochs": {"values": [1], "variantt": "SEMINAR"}}))
    assert "sweeps.pretrain_epochs.variantt: unknown key (did you mean 'variant'?)" in message
    assert "PretrainEpochsSweep" not in message
    assert "sweeps.pretrain_epochs[0]: expected an integer, got 1.5" in error_of(
        config_with(sweeps={"pretrain_epochs": [1.5]})
    )
    # every problem of a dataset's options, each at its place in the file
    typo = {"name": "s", "source": "synthetic", "options": {"usrs": 3, "dim": "x"}}
    message = error_of(config_with(datasets=[typo]))
    assert "datasets[0].options.usrs: unknown key (did you mean 'users'?)" in message
    assert "datasets[0].options.dim: expected an integer, got 'x'" in message
    assert "2 problems:\n  datasets[0].options." in message  # one line each
    bad_norm = {"name": "s", "source": "synthetic", "options": {"norms": {"text": "x"}}}
    message = error_of(config_with(datasets=[bad_norm]))
    assert "datasets[0].options.norms.text: expected a number, got 'x'" in message
    assert "datasets[0].options: expected a mapping, got [1]" in error_of(
        config_with(datasets=[{"name": "s", "source": "synthetic", "options": [1]}])
    )


def test_a_variant_can_have_its_own_window() -> None:
    """`max_length` on a row: its own folder and compared window; equal to the grid's, the same run."""
    from seminar.reproduce.cells import Layout, run_settings

    models = [
        {"name": "SASRec", "model": "sasrec"},
        {"name": "SASRec (last 20)", "model": "sasrec", "max_length": 20},
        {"name": "SEMINAR (L = 50)", "model": "seminar", "pretrain": "all", "max_length": 50},
        {"name": "SEMINAR", "model": "seminar", "pretrain": "all"},
    ]
    config = parse_config(config_with(models=models, seeds=[0], training={"max_length": 50, "top_k": 10}))
    grid_window, own_window, seminar_same, seminar = (cell.spec for cell in plan_cells(config))
    assert (grid_window.max_length, own_window.max_length) == (None, 20)
    assert own_window.key == grid_window.key + "-L20"
    assert run_settings(config, own_window)["training"]["max_length"] == 20
    assert run_settings(config, grid_window)["training"]["max_length"] == 50
    assert seminar_same == seminar  # a window equal to the grid's is the grid's run
    layout = Layout(Path("out"))
    own = {**models[3], "max_length": 30}
    windowed = parse_config(config_with(models=[own], training={"max_length": 50}))
    assert layout.psu_dir(plan_cells(windowed)[0].spec) != layout.psu_dir(seminar)  # PSU pretrained at its L
    assert "max_length" in error_of(config_with(models=[{**models[1], "max_length": 0}]))
