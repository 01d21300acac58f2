"""Typed options of each dataset source (`seminar prepare`, reproduce configs) and how each is read.

One dataclass per source; ``seminar prepare SOURCE`` builds the same dataclass from its options
(each option is named after a field), and a reproduce config names the same keys, so both reach
the reader through one mapping. It lives with the readers so the data command does not depend on
the experiment grid. ``read`` returns the :class:`~seminar.data.tables.SourceTables` that
:func:`seminar.data.build.prepare` turns into a dataset. Readers are imported when called, so
parsing a config never loads data code.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, Literal

from seminar.data.sources.lifelong import LifelongConfig, generate_lifelong
from seminar.data.sources.synthetic import SyntheticConfig, generate_synthetic
from seminar.data.tables import DataError, SourceTables
from seminar.errors import InvalidValue
from seminar.parsing import YAML_FIELDS, described

TEXT_ENCODER_HEADS = ("minilm", "hashing", "clip", "none")


@dataclass
class BuildOptions:
    """How a dataset is built: the options every `seminar prepare` source shares (its flags are
    named after these fields) and a reproduce config's ``build:`` section. :meth:`build_config` is
    the one mapping to :class:`~seminar.data.build.BuildConfig`."""

    __pydantic_config__ = YAML_FIELDS  # reproduce YAML: unknown keys are errors

    # unset: minilm, or none for the sources that bring their own vectors (NO_TEXT_ENCODER_SOURCES)
    text_encoder: str | None = described(
        None,
        "minilm | hashing[:DIM] | clip:CHECKPOINT_DIR | none",
    )
    image_encoder: str = described("none", "clip:CHECKPOINT_DIR to encode item images, or none")
    negatives: int = described(99, "sampled negatives per test/validation user")
    sampling: Literal["uniform", "popularity"] = described("uniform", "how evaluation negatives are drawn")
    eval_negatives: Literal["uniform", "category", "query"] = described(
        "uniform",
        "test/validation negatives from all items, from the held-out positive's own category "
        "(so a query naming the category does not single the positive out), or from the items "
        "clicked under the held-out behaviour's own query (query)",
    )
    seed: int = described(0, "split and sampling seed (and a generated source's seed)")
    min_behaviours: int = described(
        3, "users with fewer behaviours are dropped (counted in the manifest); at least 3"
    )
    max_behaviours: int | None = described(None, "keep only each user's latest N behaviours (default: all)")
    cache_dir: Path | None = described(None, "content vector cache (default: ~/.cache/seminar)")

    def __post_init__(self) -> None:
        for name in ("negatives", "max_behaviours"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise InvalidValue(name, f"must be >= 1, got {value}")
        if self.min_behaviours < 3:
            raise InvalidValue("min_behaviours", "must be >= 3 (test, validation and one training target)")
        if self.seed < 0:
            raise InvalidValue("seed", f"must be >= 0, got {self.seed}")
        if self.text_encoder is not None:
            head = self.text_encoder.strip().partition(":")[0].lower()
            if head not in TEXT_ENCODER_HEADS:
                raise InvalidValue(
                    "text_encoder",
                    f"unknown encoder {self.text_encoder!r}; use minilm, hashing[:DIM], clip:CHECKPOINT_DIR "
                    "or none",
                )
        head = self.image_encoder.strip().partition(":")[0].lower()
        if head not in ("clip", "none"):
            raise InvalidValue(
                "image_encoder", f"use clip:CHECKPOINT_DIR or none, got {self.image_encoder!r}"
            )

    def build_config(self, progress: bool = True) -> Any:
        """The :class:`~seminar.data.build.BuildConfig` these options describe."""
        from seminar.data.build import BuildConfig
        from seminar.data.split import SplitConfig

        return BuildConfig(
            text_encoder=self.text_encoder or "none",
            image_encoder=self.image_encoder,
            split=SplitConfig(
                negatives=self.negatives,
                sampling=self.sampling,
                eval_negatives=self.eval_negatives,
                seed=self.seed,
                min_behaviours=self.min_behaviours,
            ),
            max_behaviours=self.max_behaviours,
            cache_dir=self.cache_dir,
            progress=progress,
        )


@dataclass
class Ml100kOptions:
    """The embedded MovieLens-100k; ``query_fraction`` of behaviours get a generated genre query."""

    __pydantic_config__ = YAML_FIELDS  # reproduce YAML: unknown keys are errors

    query_fraction: float = described(0.5, "share of behaviours that get a generated genre query")

    def __post_init__(self) -> None:
        _check_fraction("query_fraction", self.query_fraction)

    def read(self, seed: int) -> SourceTables:
        from seminar.data.sources.recbole import read_ml100k

        return read_ml100k(query_fraction=self.query_fraction, seed=seed)


@dataclass
class RecboleOptions:
    """RecBole atomic files (``.inter``/``.item``/``.user``) in ``directory``."""

    __pydantic_config__ = YAML_FIELDS  # reproduce YAML: unknown keys are errors

    directory: Path = described(help="folder with the atomic files", positional=True)
    name: str | None = described(None, "file stem (default: the directory name)")
    user_field: str = described("user_id", "user id field of the .inter file")
    item_field: str = described("item_id", "item id field of the .inter and .item files")
    time_field: str = described("timestamp", "timestamp field of the .inter file")
    title_field: str | None = described(None, "item title field of the .item file (default: none)")
    query_fields: list[str] | None = described(
        None, "item fields to generate queries from (default: none: recommendation only)"
    )
    query_fraction: float = described(1.0, "share of behaviours that get a generated query")
    user_feature_fields: list[str] | None = described(
        None, "token fields of the .user file stored as user features (default: all)"
    )

    def __post_init__(self) -> None:
        _check_fraction("query_fraction", self.query_fraction)

    def read(self, seed: int) -> SourceTables:
        from seminar.data.sources.recbole import read_recbole

        return read_recbole(
            self.directory,
            self.name,
            user_field=self.user_field,
            item_field=self.item_field,
            time_field=self.time_field,
            title_field=self.title_field,
            query_fields=self.query_fields,
            query_fraction=self.query_fraction,
            seed=seed,
            user_feature_fields=self.user_feature_fields,
        )


@dataclass
class TablesOptions:
    """The user's own CSV/Parquet interactions and optional items and users files (as `prepare tables`)."""

    __pydantic_config__ = YAML_FIELDS  # reproduce YAML: unknown keys are errors

    interactions: Path = described(help="CSV or Parquet file, one behaviour per row")
    items: Path | None = described(None, "CSV or Parquet file, one item per row (default: none)")
    user_col: str = described("user", "user id column")
    item_col: str = described("item", "item id column, in both files")
    time_col: str | None = described(
        "timestamp",
        "integers or ISO dates/datetimes, or 'none': the rows are in time order and a behaviour's "
        "timestamp is its position among its user's rows",
    )
    query_col: str | None = described(None, "query text column (default: none: recommendation only)")
    title_col: str | None = described(None, "item title/description column of the items file")
    image_col: str | None = described(None, "image path column of the items file")
    image_root: Path | None = described(None, "relative image paths start here")
    attribute_cols: list[str] = described([], "attribute columns of the items file")
    multi_value_sep: str = described("|", "separator inside multi-valued attributes")
    users: Path | None = described(None, "CSV or Parquet file, one user per row (user profile)")
    user_features: list[str] | None = described(
        None, "user feature columns of the users file (default: every column but the user id)"
    )

    def read(self, seed: int) -> SourceTables:
        from seminar.data.sources.tables import TableColumns, read_interaction_tables

        columns = TableColumns(
            user=self.user_col,
            item=self.item_col,
            timestamp=None if self.time_col in (None, "none") else self.time_col,
            query=self.query_col,
            title=self.title_col,
            image_path=self.image_col,
            attributes=list(self.attribute_cols),
            multi_value_separator=self.multi_value_sep,
            user_features=self.user_features,
        )
        return read_interaction_tables(
            self.interactions, self.items, columns, image_root=self.image_root, users=self.users
        )


@dataclass
class SequencesOptions:
    """One line per user (user id, then item ids in time order) and an optional item-attributes JSON."""

    __pydantic_config__ = YAML_FIELDS  # reproduce YAML: unknown keys are errors

    file: Path = described(help="the sequences file (e.g. Beauty.txt)", positional=True)
    attributes: Path | None = described(
        None,
        'JSON object mapping item ids to lists of attribute ids, e.g. {"1": [3, 7]} '
        "(S3-Rec's *_item2attributes.json); items it does not list get no attributes",
        metavar="JSON",
    )

    def read(self, seed: int) -> SourceTables:
        from seminar.data.sources.sequences import read_sequence_file

        return read_sequence_file(self.file, self.attributes)


@dataclass
class KuaisarOptions:
    """A KuaiSAR (or KuaiSAR-small) folder with src_inter.csv, rec_inter.csv and the feature files."""

    __pydantic_config__ = YAML_FIELDS  # reproduce YAML: unknown keys are errors

    directory: Path = described(help="the KuaiSAR folder", positional=True)
    max_users: int | None = described(None, "read only the first N users (default: all)")

    def __post_init__(self) -> None:
        if self.max_users is not None and self.max_users < 1:
            raise InvalidValue("max_users", f"must be >= 1 or null, got {self.max_users}")

    def read(self, seed: int) -> SourceTables:
        from seminar.data.sources.kuaisar import read_kuaisar

        return read_kuaisar(self.directory, max_users=self.max_users)


@dataclass
class AmazonOptions:
    """Amazon Reviews 2018: a ``*_5.json.gz`` reviews file and its ``meta_*.json.gz``."""

    __pydantic_config__ = YAML_FIELDS  # reproduce YAML: unknown keys are errors

    reviews: Path = described(help="the *_5.json.gz reviews file")
    meta: Path = described(help="its meta_*.json.gz item metadata")
    core: int = described(5, "keep users and items with at least N reviews (k-core)")
    image_dir: Path | None = described(None, "folder with <asin>.jpg thumbnails")

    def __post_init__(self) -> None:
        if self.core < 1:
            raise InvalidValue("core", f"must be >= 1, got {self.core}")

    def read(self, seed: int) -> SourceTables:
        from seminar.data.sources.amazon import read_amazon

        return read_amazon(self.reviews, self.meta, core=self.core, image_dir=self.image_dir)


@dataclass
class SyntheticOptions(SyntheticConfig):
    """Generated lifelong data: the keys of :class:`seminar.data.sources.synthetic.SyntheticConfig`.

    Its ``seed`` is not a key: each of the grid's seeds generates its own data.
    """

    __pydantic_config__ = YAML_FIELDS  # reproduce YAML: unknown keys are errors

    def __post_init__(self) -> None:
        if self.seed != 0:
            raise InvalidValue("seed", "the grid's `seeds` set the generator's seed; remove this key")
        for name in ("users", "items", "max_length", "min_length", "topics", "dim"):
            if getattr(self, name) < 1:
                raise InvalidValue(name, f"must be >= 1, got {getattr(self, name)}")
        _check_fraction("search_fraction", self.search_fraction)
        unknown = sorted(set(self.norms) - {"query", "text", "image"})
        if unknown:
            raise InvalidValue("norms", f"unknown channel(s) {unknown}; use query, text, image")

    def read(self, seed: int) -> SourceTables:
        values = {f.name: getattr(self, f.name) for f in fields(SyntheticConfig)}
        return generate_synthetic(SyntheticConfig(**{**values, "seed": seed}))


@dataclass
class LifelongOptions(LifelongConfig):
    """The planted-structure lifelong benchmark: the keys of
    :class:`seminar.data.sources.lifelong.LifelongConfig` (checked there).

    It has no ``seed`` key: the build seed (``build.seed`` in a reproduce config, or ``--seed``)
    generates the data.
    """

    __pydantic_config__ = YAML_FIELDS  # reproduce YAML: unknown keys are errors

    def read(self, seed: int) -> SourceTables:
        values = {f.name: getattr(self, f.name) for f in fields(LifelongConfig)}
        return generate_lifelong(LifelongConfig(**values), seed)


SOURCE_OPTIONS: dict[str, type] = {
    "ml-100k": Ml100kOptions,
    "recbole": RecboleOptions,
    "tables": TablesOptions,
    "sequences": SequencesOptions,
    "kuaisar": KuaisarOptions,
    "amazon": AmazonOptions,
    "synthetic": SyntheticOptions,
    "lifelong": LifelongOptions,
}
# Sources whose text is token ids or vectors, or that have no text: no text encoder unless asked
# (as in `seminar prepare`).
NO_TEXT_ENCODER_SOURCES = frozenset({"kuaisar", "sequences", "synthetic", "lifelong"})


def _check_fraction(name: str, value: float) -> None:
    if not 0.0 <= value <= 1.0:
        raise InvalidValue(name, f"must lie in [0, 1], got {value}")


def missing_inputs(options: Any) -> list[str]:
    """Every path option that names nothing on disk, as ``key: path`` lines (empty when all exist)."""
    problems = []
    for f in fields(options):
        value = getattr(options, f.name)
        if isinstance(value, Path) and not value.exists():
            problems.append(f"{f.name}: {value} does not exist")
    return problems


def read_source(source: str, options: Any, seed: int) -> SourceTables:
    """Read a configured source; missing inputs fail here with every bad path named."""
    problems = missing_inputs(options)
    if problems:
        raise DataError(f"source {source!r}: " + "; ".join(problems))
    return options.read(seed)
