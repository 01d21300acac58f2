"""The reproduce config: a YAML file parsed with ``yaml.safe_load`` into typed dataclasses.

The dataclasses declare the keys, their types and defaults, and check their values in
``__post_init__``; :func:`seminar.parsing.parse_dataclass` (pydantic) builds them from the
loaded YAML. An unknown key, a missing required key or a value of the wrong type is a
:class:`ConfigError` that names the file and the key's path (``datasets[0].build.negatives``), so a
typo fails before hours of training instead of being silently ignored. Strings are never
evaluated. docs/reproduce.md describes every key.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any, Literal

import yaml

from seminar.data.sources.options import NO_TEXT_ENCODER_SOURCES, SOURCE_OPTIONS, BuildOptions
from seminar.errors import InvalidValue
from seminar.models.names import ALL_MODELS
from seminar.models.names import REFERENCE_MODEL_NAMES as REFERENCE_MODELS
from seminar.parsing import YAML_FIELDS, parse_dataclass
from seminar.reproduce.errors import ConfigError
from seminar.settings import ExperimentSettings
from seminar.train.metric_names import DEFAULT_KS, ranking_metric_names

__all__ = [
    "PSU_TASKS",
    "BuildOptions",
    "ConfigError",
    "DatasetConfig",
    "FusionLambdaSweep",
    "PretrainEpochsSweep",
    "ReportConfig",
    "ReproduceConfig",
    "RetrievalConfig",
    "SweepsConfig",
    "VariantConfig",
    "load_config",
    "parse_config",
]

PSU_TASKS = ("next_pair", "align", "relevance")
TEST_MODES = ("recommendation", "search", "pair")
METRICS = (*ranking_metric_names(DEFAULT_KS), "auc", "gauc")


def _positive(obj: Any, *names: str) -> None:
    for name in names:
        value = getattr(obj, name)
        if value is not None and value < 1:
            raise InvalidValue(name, f"must be >= 1, got {value}")


def _unique(name: str, values: list[Any]) -> None:
    seen = [v for i, v in enumerate(values) if v in values[:i]]
    if seen:
        raise InvalidValue(name, f"{seen[0]!r} is listed twice")


def _metric_names(name: str, values: list[str]) -> None:
    bad = [v for v in values if v not in METRICS]
    if bad:
        raise InvalidValue(name, f"unknown metric(s) {bad}; choose from {list(METRICS)}")


@dataclass
class DatasetConfig:
    """One dataset of the grid: a source, its reader options and build options."""

    __pydantic_config__ = YAML_FIELDS

    name: str
    source: Literal["ml-100k", "recbole", "tables", "sequences", "kuaisar", "amazon", "synthetic", "lifelong"]
    options: Any = None  # parsed into the source's options dataclass (see sources.py)
    build: BuildOptions = field(default_factory=BuildOptions)
    data_dir: Path | None = None  # default OUT/data/NAME

    def __post_init__(self) -> None:
        _check_name("name", self.name)
        if not isinstance(self.options, SOURCE_OPTIONS[self.source]):
            self.options = parse_dataclass(SOURCE_OPTIONS[self.source], self.options or {}, "options")
        if self.build.text_encoder is None:
            default = "none" if self.source in NO_TEXT_ENCODER_SOURCES else "minilm"
            self.build = replace(self.build, text_encoder=default)


@dataclass
class VariantConfig:
    """A row of the tables: a ranker model and, optionally, the PSU tasks it is pretrained with."""

    __pydantic_config__ = YAML_FIELDS

    name: str
    model: str
    pretrain: list[str] | str | None = None  # PSU tasks, "all", or null for no pretraining
    tables: list[int] | None = None  # default: baselines 2, full SEMINAR 2 and 3, ablations 3
    user_features: bool | None = None  # default: training.user_features
    recent: int = 0  # of the K kept behaviours, the last R always (RankerConfig.recent)
    gsu_recency: bool | None = None  # default: training.gsu_recency
    item_popularity: bool | None = None  # default: training.item_popularity
    user_id: bool | None = None  # a learned embedding per user id; default: training.user_id
    # its own window L (default: training.max_length): SASRec's usual last 200 beside long-window GSUs
    max_length: int | None = None

    def __post_init__(self) -> None:
        if not self.name.strip():
            raise InvalidValue("name", "must not be empty")
        if self.max_length is not None and self.max_length < 1:
            raise InvalidValue("max_length", f"must be a positive window, got {self.max_length}")
        if self.recent < 0:
            raise InvalidValue("recent", f"must be >= 0, got {self.recent}")
        if self.recent and self.model in REFERENCE_MODELS:
            raise InvalidValue("recent", f"{self.model} is a reference ranker; it has no GSU to share K with")
        if self.gsu_recency and self.model in REFERENCE_MODELS:
            raise InvalidValue("gsu_recency", f"{self.model} is a reference ranker; it has no GSU")
        if self.item_popularity and self.model in REFERENCE_MODELS:
            raise InvalidValue("item_popularity", f"{self.model} is a reference ranker, not a learned head")
        if self.user_id is False and self.model in REFERENCE_MODELS:
            raise InvalidValue("user_id", f"{self.model} is a reference ranker; it has no user id embedding")
        if self.model not in ALL_MODELS:
            raise InvalidValue("model", f"unknown model {self.model!r}; choose one of {list(ALL_MODELS)}")
        if self.model in REFERENCE_MODELS and self.pretrain is not None:
            raise InvalidValue("pretrain", f"{self.model} is a reference ranker; it has no PSU to pretrain")
        if isinstance(self.pretrain, str):
            if self.pretrain != "all":
                raise InvalidValue("pretrain", f"use a list of {list(PSU_TASKS)}, 'all' or null")
            self.pretrain = list(PSU_TASKS)
        if self.pretrain is not None:
            bad = [t for t in self.pretrain if t not in PSU_TASKS]
            if bad:
                raise InvalidValue("pretrain", f"unknown PSU task(s) {bad}; choose from {list(PSU_TASKS)}")
            if not self.pretrain:
                raise InvalidValue("pretrain", "an empty task list pretrains nothing; use null")
            self.pretrain = [t for t in PSU_TASKS if t in self.pretrain]  # canonical order, no repeats
        if self.tables is None:
            full = self.pretrain is not None and len(self.pretrain) == len(PSU_TASKS)
            if self.model != "seminar":
                self.tables = [2]
            else:
                self.tables = [2, 3] if full else [3]
        bad_tables = [t for t in self.tables if t not in (2, 3)]
        if bad_tables:
            raise InvalidValue(
                "tables", f"tables are 2 (models) and 3 (pretraining ablations), got {bad_tables}"
            )

    @property
    def psu_tasks(self) -> tuple[str, ...] | None:
        return tuple(self.pretrain) if isinstance(self.pretrain, list) else None


def _check_sweep(values: list[Any], datasets: list[str] | None, seeds: list[int] | None) -> None:
    if not values:
        raise InvalidValue("values", "give at least one value")
    _unique("values", values)
    if datasets is not None:
        _unique("datasets", datasets)
    if seeds is not None:
        if not seeds:
            raise InvalidValue("seeds", "give at least one seed or leave the key out")
        _unique("seeds", seeds)


@dataclass
class PretrainEpochsSweep:
    """Figure 3: one variant fine-tuned after 0 (no pretraining), 1, 2, ... PSU epochs."""

    __pydantic_config__ = YAML_FIELDS

    values: list[int]
    variant: str | None = None  # default: the first SEMINAR variant with full pretraining
    datasets: list[str] | None = None  # default: every dataset
    seeds: list[int] | None = None  # default: the grid's seeds

    def __post_init__(self) -> None:
        _check_sweep(self.values, self.datasets, self.seeds)
        if any(v < 0 for v in self.values):
            raise InvalidValue("values", f"pretraining epochs must be >= 0, got {self.values}")


@dataclass
class FusionLambdaSweep:
    """Figure 4: one variant trained (and pretrained) at each query/item fusion weight λ."""

    __pydantic_config__ = YAML_FIELDS

    values: list[float]
    variant: str | None = None  # default: the first SEMINAR variant
    datasets: list[str] | None = None
    seeds: list[int] | None = None

    def __post_init__(self) -> None:
        _check_sweep(self.values, self.datasets, self.seeds)
        if any(not 0.0 <= v <= 1.0 for v in self.values):
            raise InvalidValue("values", f"λ must lie in [0, 1], got {self.values}")


@dataclass
class SweepsConfig:
    """The sweeps; a bare list of values is short for ``{values: [...]}``."""

    __pydantic_config__ = YAML_FIELDS

    pretrain_epochs: PretrainEpochsSweep | list[int] | None = None
    fusion_lambda: FusionLambdaSweep | list[float] | None = None

    def __post_init__(self) -> None:
        for key, sweep in (("pretrain_epochs", PretrainEpochsSweep), ("fusion_lambda", FusionLambdaSweep)):
            value = getattr(self, key)
            if isinstance(value, list):
                try:
                    setattr(self, key, sweep(values=value))
                except InvalidValue as err:
                    raise InvalidValue(f"{key}.{err.key}", err.message) from None


@dataclass
class RQVAEOptions:
    """Overrides of :class:`seminar.retrieval.baselines.RQVAEConfig` (null keeps the preset's value)."""

    __pydantic_config__ = YAML_FIELDS

    latent_dim: int | None = None
    hidden_dim: int | None = None
    n_quantizers: int | None = None
    codebook_size: int | None = None
    steps: int | None = None
    batch_size: int | None = None
    lr: float | None = None
    commitment_weight: float | None = None


@dataclass
class RetrievalConfig:
    """Figure 2: the synthetic Recall@K grid of :func:`seminar.retrieval.bench.run_recall_grid`.

    ``preset`` picks the base grid (``paper``: the paper's setup; ``quick``: seconds); every other
    key overrides one field of it.
    """

    __pydantic_config__ = YAML_FIELDS

    preset: Literal["paper", "quick"] = "paper"
    lengths: list[int] | None = None
    ks: list[int] | None = None
    groups: list[str] | None = None
    methods: list[str] | None = None
    dim: int | None = None
    same_mu: float | None = None
    n_users: int | None = None
    n_targets: int | None = None
    table_size: int | None = None
    rerank_factor: int | None = None
    pq_iter: int | None = None
    hnsw_m: int | None = None
    hnsw_ef_construction: int | None = None
    hnsw_ef_search: int | None = None
    lsh_bits: int | None = None
    rqvae: RQVAEOptions | None = None
    seed: int | None = None

    def __post_init__(self) -> None:
        names = [f.name for f in fields(self) if f.name not in ("preset", "rqvae", "same_mu", "seed")]
        for name in names:
            value = getattr(self, name)
            if isinstance(value, list):
                if not value:
                    raise InvalidValue(name, "give at least one value or leave the key out")
                if isinstance(value[0], int) and min(value) < 1:
                    raise InvalidValue(name, f"values must be >= 1, got {value}")
            elif value is not None and value < 1:
                raise InvalidValue(name, f"must be >= 1, got {value}")
        try:
            self.recall_config()
        except ValueError as err:
            raise InvalidValue("methods" if "method" in str(err) else "groups", str(err)) from err

    def recall_config(self, out: Path | None = None, progress: bool = True) -> Any:
        """The :class:`~seminar.retrieval.bench.RecallConfig` this section describes."""
        from seminar.retrieval.bench import RecallConfig

        base = RecallConfig.quick() if self.preset == "quick" else RecallConfig()
        overrides: dict[str, Any] = {}
        for f in fields(self):
            value = getattr(self, f.name)
            if f.name in ("preset", "rqvae") or value is None:
                continue
            overrides[f.name] = tuple(value) if isinstance(value, list) else value
        if self.rqvae is not None:
            rq = {k: v for k, v in asdict(self.rqvae).items() if v is not None}
            overrides["rqvae"] = replace(base.rqvae, **rq)
        return replace(base, **overrides, out=None if out is None else str(out), progress=progress)


DEFAULT_COLUMNS = ["ndcg@5", "ndcg@10", "ndcg@50", "hr@1", "hr@10", "mrr", "auc"]


@dataclass
class ReportConfig:
    """What the report shows; metrics absent from every cell (e.g. AUC) are left out of the tables."""

    __pydantic_config__ = YAML_FIELDS

    columns: list[str] = field(default_factory=lambda: list(DEFAULT_COLUMNS))
    figure_metrics: list[str] = field(default_factory=lambda: ["ndcg@5", "ndcg@10", "ndcg@50"])
    model_recall: bool = True  # Table 4: Recall@K on the first seed's SEMINAR/TWIN/SIM-soft GSU keys
    model_recall_ks: list[int] = field(default_factory=lambda: [16, 32, 64])
    model_recall_min_length: int = 256  # users with at least this many behaviours before the test one
    model_recall_users: int = 100

    def __post_init__(self) -> None:
        if not self.model_recall_ks or min(self.model_recall_ks) <= 0:
            raise InvalidValue("model_recall_ks", "give positive K values")
        if self.model_recall_users <= 0 or self.model_recall_min_length <= 0:
            raise InvalidValue("model_recall_users", "model_recall_users and _min_length must be positive")
        for name in ("columns", "figure_metrics"):
            values = getattr(self, name)
            if not values:
                raise InvalidValue(name, "give at least one metric")
            _metric_names(name, values)
            _unique(name, values)


@dataclass
class ReproduceConfig:
    """An experiment grid: datasets × model variants × seeds, sweeps, and the retrieval grid."""

    __pydantic_config__ = YAML_FIELDS

    datasets: list[DatasetConfig] = field(default_factory=list)
    models: list[VariantConfig] = field(default_factory=list)
    seeds: list[int] = field(default_factory=lambda: [0])
    training: ExperimentSettings = field(default_factory=ExperimentSettings)
    modes: list[Literal["recommendation", "search", "pair"]] = field(
        default_factory=lambda: ["recommendation", "search"]
    )
    sweeps: SweepsConfig = field(default_factory=SweepsConfig)
    retrieval: RetrievalConfig | None = None
    report: ReportConfig = field(default_factory=ReportConfig)
    name: str | None = None  # the report's title; default: the config file's stem
    out: Path | None = None  # default output folder; --out overrides it

    def __post_init__(self) -> None:
        if not self.datasets and self.retrieval is None:
            raise InvalidValue("datasets", "nothing to run: give at least one dataset or a retrieval section")
        _unique("datasets", [d.name for d in self.datasets])
        if self.datasets and not self.models:
            raise InvalidValue("models", "give at least one model variant")
        _unique("models", [m.name for m in self.models])
        if not self.seeds:
            raise InvalidValue("seeds", "give at least one seed")
        _unique("seeds", self.seeds)
        if min(self.seeds) < 0:
            raise InvalidValue("seeds", f"seeds must be >= 0, got {self.seeds}")
        if not self.modes:
            raise InvalidValue("modes", "give at least one test mode")
        _unique("modes", list(self.modes))
        sasrec = [m.name for m in self.models if m.model == "sasrec"]
        if sasrec and self.training.dim % self.training.heads:  # its heads split d; the MHTA's do not
            raise InvalidValue(
                "training.heads",
                f"dim {self.training.dim} is not divisible by {self.training.heads} heads, "
                f"which SASRec ({sasrec[0]!r}) needs",
            )
        for variant in self.models:
            if variant.recent > self.training.top_k:
                raise InvalidValue(
                    "models.recent",
                    f"{variant.name!r} keeps {variant.recent} recent of K={self.training.top_k}",
                )
        self._resolve_sweeps()

    def _resolve_sweeps(self) -> None:
        """Fill in each sweep's default variant and check the names it refers to."""
        datasets = [d.name for d in self.datasets]
        for key in ("pretrain_epochs", "fusion_lambda"):
            sweep = getattr(self.sweeps, key)
            if sweep is None:
                continue
            where = f"sweeps.{key}"
            if not self.datasets:
                raise InvalidValue(where, "a sweep needs at least one dataset")
            if sweep.variant is None:
                sweep.variant = self._default_sweep_variant(key, where)
            variant = self.variant(sweep.variant)
            if variant is None:
                raise InvalidValue(
                    f"{where}.variant",
                    f"no model variant named {sweep.variant!r}; known: {self.variant_names}",
                )
            if key == "pretrain_epochs" and variant.psu_tasks is None:
                raise InvalidValue(
                    f"{where}.variant",
                    f"{variant.name!r} is not pretrained; sweeping its PSU epochs means nothing",
                )
            unknown = [d for d in sweep.datasets or [] if d not in datasets]
            if unknown:
                raise InvalidValue(f"{where}.datasets", f"unknown dataset(s) {unknown}; known: {datasets}")

    def _default_sweep_variant(self, key: str, where: str) -> str:
        for v in self.models:
            if v.model == "seminar" and (key == "fusion_lambda" or v.psu_tasks == PSU_TASKS):
                return v.name
        wanted = (
            "a SEMINAR variant pretrained with all PSU tasks"
            if key == "pretrain_epochs"
            else "a SEMINAR variant"
        )
        raise InvalidValue(f"{where}.variant", f"name the variant to sweep (no {wanted} in models)")

    @property
    def variant_names(self) -> list[str]:
        return [v.name for v in self.models]

    def variant(self, name: str) -> VariantConfig | None:
        return next((v for v in self.models if v.name == name), None)

    def user_features(self, variant: VariantConfig) -> bool:
        """Whether the variant's ranker uses user profiles: its own setting, else the training's."""
        return self.training.user_features if variant.user_features is None else variant.user_features

    def max_length(self, variant: VariantConfig) -> int | None:
        """The variant's own window L, or None where it is the training's (the same run)."""
        own = variant.max_length
        return None if own is None or own == self.training.max_length else own

    def gsu_recency(self, variant: VariantConfig) -> bool:
        """Whether the variant's GSU adds the recency bias: its own setting, else the training's."""
        return self.training.gsu_recency if variant.gsu_recency is None else variant.gsu_recency

    def item_popularity(self, variant: VariantConfig) -> bool:
        """Whether the variant's head sees item counts: its own setting, else the training's."""
        return self.training.item_popularity if variant.item_popularity is None else variant.item_popularity

    def user_id(self, variant: VariantConfig) -> bool:
        """Whether the variant's ranker learns a user id embedding: its own setting, else the training's."""
        return self.training.user_id if variant.user_id is None else variant.user_id

    def dataset(self, name: str) -> DatasetConfig | None:
        return next((d for d in self.datasets if d.name == name), None)

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-ready values (paths as strings, the source options as a mapping)."""
        return _plain(asdict(self))


def _plain(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, Path):
        return str(value)
    return value


def _check_name(key: str, name: str) -> None:
    """Names become folder names: letters, digits, '-', '_' and '.' only."""
    if not name or name.startswith(".") or not all(c.isalnum() or c in "-_." for c in name):
        raise InvalidValue(key, f"{name!r} must be a folder-safe name (letters, digits, '-', '_', '.')")


class UniqueKeyLoader(yaml.SafeLoader):
    """``yaml.SafeLoader`` that refuses a key repeated in one mapping (YAML would keep the last
    silently, so a setting written twice would be half-ignored) and reads ``1e-3`` as a number
    (YAML 1.1, PyYAML's dialect, wants a dot in the mantissa and would hand over a string)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: dict[Any, int] = {}
        for key_node, _value in node.value:
            key = self.construct_object(key_node, deep=deep)
            line = key_node.start_mark.line + 1
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    None,
                    None,
                    f"key {key!r} on line {line} repeats the one on line {seen[key]}",
                    key_node.start_mark,
                )
            seen[key] = line
        return super().construct_mapping(node, deep=deep)


UniqueKeyLoader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:[0-9][0-9_]*(?:\.[0-9_]*)?|\.[0-9_]+)[eE][-+]?[0-9]+$"),
    list("-+0123456789."),
)


def parse_config(data: Any, source: str = "config") -> ReproduceConfig:
    """A :class:`ReproduceConfig` from an already-loaded mapping; errors are prefixed by ``source``."""
    try:
        return parse_dataclass(ReproduceConfig, data)
    except ConfigError as err:
        raise ConfigError(f"{source}: {err}") from None


def load_config(config: ReproduceConfig | Mapping[str, Any] | Path | str) -> ReproduceConfig:
    """Read a YAML config file (or accept a mapping or a ready config); the name defaults to the file stem."""
    if isinstance(config, ReproduceConfig):
        return config
    if isinstance(config, Mapping):
        return parse_config(dict(config))
    path = Path(config)
    if not path.is_file():
        raise ConfigError(f"{path}: config file not found")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as err:
        line = path.read_bytes().count(b"\n", 0, err.start) + 1
        raise ConfigError(f"{path}: line {line}: not UTF-8 text (byte {err.start})") from None
    try:
        data = yaml.load(text, Loader=UniqueKeyLoader)  # a SafeLoader subclass: safe
    except yaml.YAMLError as err:
        raise ConfigError(f"{path}: not valid YAML: {err}") from None
    if data is None:
        raise ConfigError(f"{path}: the file is empty")
    parsed = parse_config(data, str(path))
    if parsed.name is None:
        parsed.name = path.stem
    return parsed
