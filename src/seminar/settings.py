"""The experiment's settings, declared once: what `train`, `pretrain`, `demo` and a reproduce grid's
``training:`` section set, and the one mapping from them to the model and trainer configs.

:class:`ExperimentSettings` is a plain validated dataclass. The reproduce YAML is parsed into it
(its checker reads the field types), the `train` and `pretrain` flags are generated from its
fields (:func:`add_setting_flags`, each field's ``metadata`` says which command shows it and under
which flag), the demo is a set of overrides of it, and :meth:`ExperimentSettings.ranker_config`,
:meth:`~ExperimentSettings.pretrain_config` and the two ``*train_config`` methods are the only
places that turn settings into :class:`RankerConfig`, :class:`PretrainConfig` and
:class:`TrainConfig`. A new training knob is one field here (and, if a model reads it, one line in
the mapping).

What a run *is* rather than how it is trained stays outside: the model, its PSU tasks, the
recent window R and the seed (a reproduce grid's variants and seeds, a command's own flags).
"""

from __future__ import annotations

import argparse
import json
import math
from collections.abc import Callable, Sequence
from dataclasses import MISSING, asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, get_args, get_type_hints

from seminar import cli_types as types
from seminar.errors import InvalidValue
from seminar.io import write_json_atomic
from seminar.parsing import YAML_FIELDS
from seminar.train.metric_names import DEFAULT_KS, ranking_metric_names

if TYPE_CHECKING:  # the model and trainer configs import torch: only the mapping below needs them
    from seminar.models.psu import PretrainConfig
    from seminar.models.ranker import RankerConfig
    from seminar.train.trainer import TrainConfig

__all__ = [
    "COMMANDS",
    "SETTINGS_FILE",
    "DemoConfig",
    "ExperimentSettings",
    "add_setting_flags",
    "demo_settings",
    "settings_from_args",
]

COMMANDS = ("train", "pretrain")
SETTINGS_FILE = "settings.json"  # beside a run's checkpoints: the settings it was trained with
_SAME = object()  # a flag whose default is the field's own


@dataclass(frozen=True)
class Flag:
    """How one command shows a setting: its flag (default ``--field-name``) and default."""

    name: str | None = None
    default: Any = _SAME


def _knob(
    default: Any,
    help: str = "",
    *,
    parse: Callable[[str], Any] | None = None,
    train: Flag | None = None,
    pretrain: Flag | None = None,
) -> Any:
    """A settings field and how the CLI shows it (a command not named does not show it)."""
    cli = {name: flag for name, flag in (("train", train), ("pretrain", pretrain)) if flag is not None}
    return field(default=default, metadata={"help": help, "parse": parse, "cli": cli})


BOTH = {"train": Flag(), "pretrain": Flag()}


@dataclass
class ExperimentSettings:
    """How rankers are fine-tuned and the PSU pretrained; defaults are the validated ones
    (docs/results.md)."""

    __pydantic_config__ = YAML_FIELDS  # reproduce YAML: unknown keys are errors

    # ---- the history window and the model's size, shared by the PSU and the ranker
    max_length: int = _knob(200, "history window L", parse=types.positive_int, **BOTH)
    top_k: int = _knob(50, "behaviours the GSU keeps for the ESU", parse=types.positive_int, train=Flag())
    dim: int = _knob(64, "embedding size d", parse=types.positive_int, **BOTH)
    heads: int = _knob(4, "attention heads", parse=types.positive_int, **BOTH)
    fusion_lambda: float = _knob(
        0.0,
        "λ of the query/item fusion (0.0: chosen by validation on MovieLens-100k, see docs/results.md)",
        parse=types.unit_interval,
        **BOTH,
    )
    # ---- ranker fine-tuning
    epochs: int = _knob(
        15, "training epochs (at most, with early stopping)", parse=types.positive_int, train=Flag()
    )
    pretrain_epochs: int = _knob(
        2, "PSU pretraining epochs", parse=types.positive_int, pretrain=Flag("--epochs", 10)
    )
    positions_per_user: int | None = _knob(
        None,
        "cap training targets per user and epoch (default: every position is a target)",
        parse=types.positive_int,
        train=Flag(),
    )
    patience: int | None = _knob(3, "early-stopping patience in epochs", parse=types.positive_int, **BOTH)
    batch_size: int = _knob(512, "training targets per step", parse=types.positive_int, train=Flag())
    eval_batch_size: int = _knob(256, "users per evaluation batch", parse=types.positive_int, **BOTH)
    lr: float = _knob(3e-3, "learning rate", parse=types.positive_float, train=Flag())
    weight_decay: float = _knob(0.0, "AdamW weight decay", parse=types.non_negative_float, **BOTH)
    train_negatives: int = _knob(10, "sampled negatives per target", parse=types.positive_int, train=Flag())
    targets_per_window: int = _knob(
        32,
        "rankers: consecutive targets scored on one shared history window",
        parse=types.positive_int,
        **BOTH,
    )
    negative_sampling: Literal["uniform", "popularity", "category", "mixed"] = _knob(
        "uniform",
        "training negatives (popularity: with the log-Q correction in the softmax loss; category: from "
        "the positive's own category; mixed: half from it, half uniform)",
        **BOTH,
    )
    loss: Literal["softmax", "bce"] = _knob("softmax", "ranking loss", train=Flag())
    dropout: float = _knob(
        0.2, "dropout (ranker head, SASRec blocks)", parse=types.dropout_rate, train=Flag()
    )
    user_id: bool = _knob(
        True,
        "no per-user id embedding: the user vector is the profile alone, so a user absent from "
        "training is scored like any other (serving)",
        train=Flag("--no-user-id"),
    )
    gsu_recency: bool = _knob(
        False,
        "a content GSU (SIM soft, ETA, TWIN, QIN, SEMINAR) adds the ESU's learned recency bias to its scores",
        train=Flag(),
    )
    item_popularity: bool = _knob(
        False,
        "the ranker's head also sees each candidate's training count (log2 bucket), as popularity does",
        train=Flag(),
    )
    # ---- reference rankers
    knn_history: int = _knob(20, "itemknn: the user's last N items", parse=types.positive_int, train=Flag())
    knn_neighbours: int = _knob(
        1000, "itemknn: neighbours kept per item", parse=types.positive_int, train=Flag()
    )
    knn_span: int | None = _knob(
        None,
        "itemknn: items co-occur only within spans of N consecutive behaviours (long histories)",
        parse=types.positive_int,  # 1 passes here and is refused by validation (exit 2)
        train=Flag(),
    )
    layers: int = _knob(2, "sasrec: transformer blocks", parse=types.positive_int, train=Flag())
    # ---- PSU pretraining
    pretrain_batch_size: int = _knob(
        256, "PSU samples per step", parse=types.positive_int, pretrain=Flag("--batch-size")
    )
    pretrain_negatives: int = _knob(
        1, "PSU next-pair negatives per sample", parse=types.positive_int, pretrain=Flag("--train-negatives")
    )
    pretrain_positions_per_user: int | None = _knob(
        20,
        "PSU training targets per user and epoch (default: every position is a target)",
        parse=types.positive_int,
        pretrain=Flag("--positions-per-user", None),
    )
    pretrain_lr: float | None = _knob(
        None, "PSU learning rate (default: lr)", parse=types.positive_float, pretrain=Flag("--lr", 1e-3)
    )
    monitor: str = _knob("ndcg@10", "validation metric to keep the best checkpoint by", train=Flag())
    eval_mode: Literal["recommendation", "search", "pair"] = _knob(
        "recommendation", "the test mode training validates and tests in", **BOTH
    )
    user_features: bool = _knob(
        True,
        "leave the dataset's user profile attributes out of the user vector (id embedding only)",
        train=Flag("--no-user-features"),
    )
    align_chunks: int = _knob(
        4, "N_ch chunks for the alignment loss", parse=types.positive_int, pretrain=Flag()
    )
    align_window: int = _knob(
        512,
        "the alignment loss contrasts the latest N behaviours of the window (its cost is quadratic in N)",
        parse=types.positive_int,
        pretrain=Flag(),
    )
    temperature: float = _knob(0.07, "InfoNCE temperature", parse=types.positive_float, pretrain=Flag())
    # ---- where it runs (never changes a result)
    device: str = _knob("auto", "auto | cpu | mps | cuda | cuda:N", parse=types.device, **BOTH)
    workers: int = _knob(0, "DataLoader worker processes", parse=types.non_negative_int, **BOTH)

    def __post_init__(self) -> None:
        for name in (
            "max_length",
            "top_k",
            "dim",
            "heads",
            "epochs",
            "positions_per_user",
            "patience",
            "batch_size",
            "eval_batch_size",
            "train_negatives",
            "targets_per_window",
            "knn_history",
            "knn_neighbours",
            "layers",
            "pretrain_batch_size",
            "pretrain_negatives",
            "pretrain_positions_per_user",
            "align_chunks",
            "align_window",
        ):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise InvalidValue(name, f"must be >= 1, got {value}")
        if self.knn_span is not None and self.knn_span < 2:
            raise InvalidValue("knn_span", f"a pair needs two behaviours: must be >= 2, got {self.knn_span}")
        if self.pretrain_epochs < 0:
            raise InvalidValue("pretrain_epochs", f"must be >= 0, got {self.pretrain_epochs}")
        for name in ("lr", "temperature", "pretrain_lr"):
            value = getattr(self, name)
            if value is not None and not (math.isfinite(value) and value > 0):
                raise InvalidValue(name, f"must be a positive number, got {value}")
        if not (math.isfinite(self.weight_decay) and self.weight_decay >= 0):
            raise InvalidValue("weight_decay", f"must be >= 0, got {self.weight_decay}")
        if not 0.0 <= self.dropout < 1.0:
            raise InvalidValue("dropout", f"must lie in [0, 1), got {self.dropout}")
        if not 0.0 <= self.fusion_lambda <= 1.0:
            raise InvalidValue("fusion_lambda", f"must lie in [0, 1], got {self.fusion_lambda}")
        hints = get_type_hints(type(self))
        for name in ("negative_sampling", "loss", "eval_mode"):
            allowed = get_args(hints[name])
            if getattr(self, name) not in allowed:
                raise InvalidValue(name, f"choose one of {list(allowed)}, got {getattr(self, name)!r}")
        if self.workers < 0:
            raise InvalidValue("workers", "must be >= 0")
        if not types.DEVICE_SPEC.match(self.device):
            raise InvalidValue("device", f"use auto, cpu, mps, cuda or cuda:N, got {self.device!r}")
        if self.monitor not in ranking_metric_names(DEFAULT_KS):
            raise InvalidValue(
                "monitor",
                f"unknown metric {self.monitor!r}; choose from {list(ranking_metric_names(DEFAULT_KS))}",
            )

    def replace(self, **changes: Any) -> ExperimentSettings:
        """A copy with some settings changed (validated again)."""
        return replace(self, **changes)

    def save(self, run_dir: Path | str) -> None:
        """Record the settings beside a run's checkpoints (atomically)."""
        write_json_atomic(Path(run_dir) / SETTINGS_FILE, asdict(self))

    @classmethod
    def read(cls, run_dir: Path | str) -> ExperimentSettings | None:
        """The settings a run was trained with, or None for a run that did not record them (made
        by an older version, or by a Python caller that passed none). Keys this version does not
        know are ignored; a value it refuses raises :class:`~seminar.errors.InvalidValue`."""
        path = Path(run_dir) / SETTINGS_FILE
        if not path.is_file():
            return None
        values = json.loads(path.read_text(encoding="utf-8"))
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in values.items() if k in known})

    # ---- the one mapping to the model and trainer configs -------------------------------------

    def ranker_config(self, model: str, *, seed: int, recent: int = 0) -> RankerConfig:
        """The ranker ``model`` fine-tuned with these settings; R = ``recent`` of its K kept always."""
        from seminar.models.ranker import RankerConfig

        return RankerConfig(
            model=model,
            dim=self.dim,
            heads=self.heads,
            top_k=self.top_k,
            recent=recent,
            fusion_lambda=self.fusion_lambda,
            user_features=self.user_features,
            user_id=self.user_id,
            loss=self.loss,
            dropout=self.dropout,
            knn_history=self.knn_history,
            knn_neighbours=self.knn_neighbours,
            knn_span=self.knn_span,
            layers=self.layers,
            gsu_recency=self.gsu_recency,
            item_popularity=self.item_popularity,
            seed=seed,
        )

    def pretrain_config(self, tasks: Sequence[str], *, seed: int) -> PretrainConfig:
        """The PSU pretrained on ``tasks`` (of next_pair, align, relevance)."""
        from seminar.models.psu import PretrainConfig

        return PretrainConfig(
            dim=self.dim,
            heads=self.heads,
            fusion_lambda=self.fusion_lambda,
            next_pair="next_pair" in tasks,
            align="align" in tasks,
            relevance="relevance" in tasks,
            align_chunks=self.align_chunks,
            align_window=self.align_window,
            temperature=self.temperature,
            seed=seed,
        )

    def train_config(self, *, seed: int, progress: bool = False) -> TrainConfig:
        """The ranker's training loop (also what evaluation of its run reads)."""
        from seminar.train.trainer import TrainConfig

        return TrainConfig(
            epochs=self.epochs,
            lr=self.lr,
            weight_decay=self.weight_decay,
            batch_size=self.batch_size,
            eval_batch_size=self.eval_batch_size,
            max_length=self.max_length,
            train_negatives=self.train_negatives,
            positions_per_user=self.positions_per_user,
            targets_per_window=self.targets_per_window,
            negative_sampling=self.negative_sampling,
            early_stopping_patience=self.patience,
            monitor=self.monitor,
            eval_mode=self.eval_mode,
            seed=seed,
            device=self.device,
            num_workers=self.workers,
            progress=progress,
        )

    def pretrain_train_config(self, *, seed: int, progress: bool = False) -> TrainConfig:
        """The PSU's training loop: its own epochs, batch, negatives and sample, monitored by its loss
        (it has no ranking head)."""
        return replace(
            self.train_config(seed=seed, progress=progress),
            epochs=self.pretrain_epochs,
            lr=self.lr if self.pretrain_lr is None else self.pretrain_lr,
            batch_size=self.pretrain_batch_size,
            train_negatives=self.pretrain_negatives,
            positions_per_user=self.pretrain_positions_per_user,
            monitor="loss",
        )


# ---- the CLI flags, generated from the fields ------------------------------------------------


def _shown(command: str) -> list[tuple[Any, Flag]]:
    if command not in COMMANDS:
        raise ValueError(f"unknown command {command!r}; settings flags exist for {COMMANDS}")
    return [
        (f, f.metadata["cli"][command]) for f in fields(ExperimentSettings) if command in f.metadata["cli"]
    ]


def _flag_name(f: Any, flag: Flag) -> str:
    return flag.name or "--" + f.name.replace("_", "-")


def add_setting_flags(parser: argparse.ArgumentParser, command: str) -> None:
    """Add the flags ``command`` shows (``train`` or ``pretrain``); their values land in
    ``args.setting_<field>`` and :func:`settings_from_args` reads them back."""
    hints = get_type_hints(ExperimentSettings)
    for f, flag in _shown(command):
        types.add_field_flag(
            parser,
            _flag_name(f, flag),
            hints[f.name],
            dest=f"setting_{f.name}",
            default=f.default if flag.default is _SAME else flag.default,
            help=f.metadata["help"],
            parse=f.metadata["parse"],
        )


def settings_from_args(
    args: argparse.Namespace, base: ExperimentSettings | None = None
) -> ExperimentSettings:
    """The settings a command's flags give, over ``base`` (default: the defaults); an invalid
    combination raises :class:`~seminar.errors.InvalidValue`."""
    base = base or ExperimentSettings()
    given = {
        f.name: getattr(args, f"setting_{f.name}")
        for f in fields(ExperimentSettings)
        if hasattr(args, f"setting_{f.name}")
    }
    return base.replace(**given)


def field_defaults() -> dict[str, Any]:
    """Every setting's default (what a reproduce cell omits when a later-added setting sits at it)."""
    return {f.name: f.default for f in fields(ExperimentSettings) if f.default is not MISSING}


# ---- the main job (`seminar demo`) ----------------------------------------------------------


def demo_settings() -> ExperimentSettings:
    """The main job's training: the validated settings of docs/results.md at a smaller window and
    model, few epochs, and a PSU pretrained on a sample of positions per user (enough for an
    initialisation), so that it finishes in a few minutes on 2 CPU cores."""
    return ExperimentSettings(
        max_length=100,
        dim=32,
        heads=2,
        epochs=5,
        dropout=0.0,
        pretrain_lr=1e-3,
    )


@dataclass
class DemoConfig:
    """What the main job trains: SEMINAR and the baselines with :func:`demo_settings`."""

    settings: ExperimentSettings = field(default_factory=demo_settings)
    # SEMINAR's ESU sees its last 25 behaviours beside the GSU's 25 (the best MovieLens-100k row of
    # docs/results.md); the baselines keep their plain GSU
    seminar_recent: int = 25
    baselines: list[str] = field(default_factory=lambda: ["popularity", "itemknn", "sasrec", "twin"])
    modes: list[str] = field(default_factory=lambda: ["recommendation", "search"])
    seed: int = 0
    progress: bool = True
