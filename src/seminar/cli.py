"""The `seminar` command: thin argument parsing over library calls a user can also make from Python."""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable, Sequence
from dataclasses import MISSING, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any, get_args, get_origin, get_type_hints

from rich.console import Console

from seminar import cli_types as types
from seminar.allocator import retain_freed_memory
from seminar.data.sources.options import NO_TEXT_ENCODER_SOURCES
from seminar.data.tables import DataError
from seminar.errors import CheckpointError, ConfigError, InvalidValue, NoPretrainingTask, StaleRun

if TYPE_CHECKING:
    from seminar.settings import ExperimentSettings

console = Console(width=None if sys.stdout.isatty() else 120)
errors = Console(stderr=True)


def _is_main_process() -> bool:
    """Under torchrun only rank 0 reports; every rank still runs the work."""
    return os.environ.get("RANK", "0") == "0"


def _add_build_options(parser: argparse.ArgumentParser, *, text_encoder: str = "minilm") -> None:
    """`--out` and every :class:`~seminar.data.sources.options.BuildOptions` field as a flag of its
    own name; a refused value exits 2 before the source is read (:func:`prepare_from_args`)."""
    from seminar.data.sources.options import BuildOptions

    parser.add_argument("--out", type=Path, required=True, help="dataset directory to write")
    hints = get_type_hints(BuildOptions)
    defaults = {"text_encoder": text_encoder}
    for f in fields(BuildOptions):
        types.add_field_flag(
            parser,
            "--" + f.name.replace("_", "-"),
            hints[f.name],
            dest=f.name,
            default=defaults.get(f.name, f.default),
            help=f.metadata["help"],
        )
    parser.add_argument("--force", action="store_true", help="rebuild even if the dataset is up to date")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")


def _add_source_options(parser: argparse.ArgumentParser, source: str) -> None:
    """One argument per field of the source's options dataclass (:data:`SOURCE_OPTIONS`), named
    after it, typed and described by it; :func:`_source_from_options` builds the dataclass back, whose
    own check bounds the values (exit 2 naming the flag)."""
    from seminar.data.sources.options import SOURCE_OPTIONS

    cls = SOURCE_OPTIONS[source]
    hints = get_type_hints(cls)
    for f in fields(cls):
        help_text = f.metadata.get("help", "")
        if f.metadata.get("positional"):
            parser.add_argument(f.name, type=Path, help=help_text or None)
            continue
        flag = "--" + f.name.replace("_", "-")
        required = f.default is MISSING and f.default_factory is MISSING
        default = None if required else f.default if f.default is not MISSING else f.default_factory()
        if get_origin(hints[f.name]) is list or list in [get_origin(a) for a in get_args(hints[f.name])]:
            parser.add_argument(
                flag, dest=f.name, type=_comma_list, default=default, help=f"{help_text} (comma list)"
            )
            continue
        types.add_field_flag(
            parser,
            flag,
            hints[f.name],
            dest=f.name,
            default=default,
            help=help_text,
            required=required,
            metavar=f.metadata.get("metavar"),
        )


def _comma_list(value: str | None) -> list[str] | None:
    """``a,b`` -> ``["a", "b"]``; None stays None (the option was not given: use the default)."""
    return None if value is None else [v.strip() for v in value.split(",") if v.strip()]


def _as_flag(exc: InvalidValue) -> str:
    """A refused option value, named as the flag that set it."""
    return f"--{exc.key.replace('_', '-')}: {exc.message}"


def _source_from_options(args: argparse.Namespace):
    """Read a source through the option dataclass a reproduce config uses for it.

    Every option of ``seminar prepare SOURCE`` is named after a field of that dataclass, so the
    mapping from options to the reader's arguments is written once (in seminar.data.sources.options).
    """
    from seminar.data.sources.options import SOURCE_OPTIONS, read_source

    cls = SOURCE_OPTIONS[args.source]
    values = {f.name: getattr(args, f.name) for f in fields(cls) if hasattr(args, f.name)}
    try:
        options = cls(**values)
    except InvalidValue as exc:
        raise DataError(_as_flag(exc)) from exc
    return read_source(args.source, options, args.seed)


def _source_synthetic(args: argparse.Namespace):
    from seminar.data.sources.synthetic import SyntheticConfig, generate_synthetic

    return generate_synthetic(
        SyntheticConfig(
            users=args.users,
            items=args.items,
            mean_length=args.mean_length,
            max_length=args.max_length,
            topics=args.topics,
            search_fraction=args.search_fraction,
            dim=args.dim,
            seed=args.seed,
            norms={"query": args.query_norm, "text": args.text_norm, "image": args.image_norm},
        )
    )


SOURCE_HELP: dict[str, tuple[str, str | None]] = {
    "ml-100k": ("the embedded MovieLens-100k (from the recbole wheel)", None),
    "recbole": ("RecBole atomic files (.inter/.item/.user)", None),
    "tables": ("your own CSV/Parquet interactions (+ optional items and users)", None),
    "sequences": (
        "one line per user: the user id, then its item ids in time order (S3-Rec's Beauty.txt, ...)",
        "Read a text file with one line per user: the user id followed by that user's item ids "
        "in time order, separated by whitespace (e.g. `1 1 2 3 4 5`). A behaviour's timestamp is its "
        "position in the line; there are no queries and no text.",
    ),
    "kuaisar": ("KuaiSAR (src_inter.csv, rec_inter.csv, item/user features)", None),
    "amazon": ("Amazon Reviews 2018 (*_5.json.gz + meta_*.json.gz)", None),
    "synthetic": ("synthetic lifelong data with controllable channel norms", None),
    "lifelong": (
        "generated lifelong query-item sequences with a planted, known structure (see docs/lifelong.md)",
        "Generate users whose long-term interests (fine topics) recur in bursts hundreds of "
        "behaviours apart, among short-lived interests and random behaviours; items are mostly rare; "
        "search queries name the topic. The generator's parameters go into the manifest, from which the "
        "`oracle` reference ranker recovers the ground truth. --seed also seeds the generator.",
    ),
}


def _add_synthetic_options(p: argparse.ArgumentParser) -> None:
    """The synthetic source's flags: a few of its generator's knobs and one flag per channel norm."""
    p.add_argument("--users", type=types.positive_int, default=1000)
    p.add_argument("--items", type=types.positive_int, default=5000)
    p.add_argument("--mean-length", type=types.positive_float, default=200.0)
    p.add_argument("--max-length", type=types.positive_int, default=10_000)
    p.add_argument("--topics", type=types.positive_int, default=32)
    p.add_argument("--search-fraction", type=types.unit_interval, default=0.3)
    p.add_argument("--dim", type=types.positive_int, default=64)
    p.add_argument("--query-norm", type=float, default=0.5)
    p.add_argument("--text-norm", type=float, default=1.0)
    p.add_argument("--image-norm", type=float, default=2.0)
    p.set_defaults(read=_source_synthetic)


def _register_prepare(sub: argparse._SubParsersAction) -> None:
    prepare = sub.add_parser(
        "prepare",
        help="read raw data into a canonical dataset directory",
        description="Read raw data in its official format and write a validated dataset.",
    )
    sources = prepare.add_subparsers(dest="source", required=True, metavar="SOURCE")

    for source, (help_text, description) in SOURCE_HELP.items():
        p = sources.add_parser(source, help=help_text, description=description)
        if source == "synthetic":  # its channel norms are one mapping of three flags
            _add_synthetic_options(p)
        else:
            _add_source_options(p, source)
            p.set_defaults(read=_source_from_options)
        _add_build_options(p, text_encoder="none" if source in NO_TEXT_ENCODER_SOURCES else "minilm")
    prepare.set_defaults(func=cmd_prepare)


def prepare_from_args(args: argparse.Namespace) -> Path:
    """Read the source and build the dataset unless an identical one is already there."""
    from seminar.data.build import prepare
    from seminar.data.sources.options import BuildOptions

    options = {f.name: getattr(args, f.name) for f in fields(BuildOptions)}
    try:
        config = BuildOptions(**options).build_config(progress=not args.quiet)
    except InvalidValue as exc:
        raise ConfigError(_as_flag(exc)) from exc
    tables = args.read(args)
    built = prepare(tables, args.out, config, force=args.force)
    if not built:
        console.print(
            f"[green]{args.out} is up to date[/] (same raw inputs and options); use --force to rebuild"
        )
    return args.out


def cmd_prepare(args: argparse.Namespace) -> int:
    out = prepare_from_args(args)
    _print_info(out)
    return 0


def _print_info(path: Path, as_json: bool = False) -> None:
    from seminar.data.schema import load_dataset
    from seminar.data.summary import dataset_summary, summary_table

    summary = dataset_summary(load_dataset(path))
    if as_json:
        print(json.dumps(summary, indent=2))
    else:
        console.print(summary_table(summary, title=str(path)))


def cmd_data_info(args: argparse.Namespace) -> int:
    _print_info(args.directory, args.json)
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    """The main job on the embedded dataset: prepare, pretrain, fine-tune SEMINAR and baselines, evaluate."""
    from seminar.data.schema import load_dataset
    from seminar.experiment import DemoConfig, demo_settings, run_demo
    from seminar.report import results_table

    data = args.out / "data"
    code = main(["prepare", "ml-100k", "--out", str(data), *(["--quiet"] if args.quiet else [])])
    if code:
        return code
    settings = demo_settings().replace(epochs=args.epochs, pretrain_epochs=args.pretrain_epochs)
    config = DemoConfig(settings=settings, baselines=args.baselines, progress=not args.quiet)
    rows = run_demo(load_dataset(data), args.out / "runs", config)
    console.print(results_table(rows, title="MovieLens-100k test metrics (positive + 99 negatives)"))
    return 0


def _add_run_options(parser: argparse.ArgumentParser, command: str) -> None:
    """The flags of `pretrain` and `train`: the run's data, folder and seed by hand, every training
    setting generated from :class:`~seminar.settings.ExperimentSettings` (defaults: the validated ones
    of docs/results.md; the PSU keeps one target and one negative per sample)."""
    from seminar.settings import add_setting_flags

    parser.add_argument("--data", type=Path, required=True, help="a prepared dataset directory")
    parser.add_argument("--out", type=Path, required=True, help="run directory (checkpoints, metrics.jsonl)")
    parser.add_argument("--seed", type=types.non_negative_int, default=0)
    add_setting_flags(parser, command)
    parser.add_argument(
        "--resume", action="store_true", help="continue the run in --out from its last checkpoint"
    )
    parser.add_argument("--quiet", action="store_true")


def _settings(args: argparse.Namespace) -> ExperimentSettings:
    """The experiment settings the flags give; a combination the flags pass one by one but not
    together is a usage error, exit 2, before any work."""
    from seminar.settings import settings_from_args

    try:
        return settings_from_args(args)
    except ValueError as exc:
        raise ConfigError(str(exc)) from exc


def _checked(build: Callable[[], Any]) -> Any:
    """A model config built from valid settings; what they pass one by one but not together
    (SASRec's heads must divide d, R ≤ K) is a usage error, exit 2."""
    try:
        return build()
    except ValueError as exc:
        raise ConfigError(str(exc)) from exc


def cmd_pretrain(args: argparse.Namespace) -> int:
    from seminar.data.schema import load_dataset
    from seminar.experiment import pretrain
    from seminar.models.psu import TASKS

    settings = _settings(args)
    tasks = [t for t in TASKS if not getattr(args, f"no_{t}")]
    config = _checked(lambda: settings.pretrain_config(tasks, seed=args.seed))
    train = settings.pretrain_train_config(seed=args.seed, progress=not args.quiet)
    summary = pretrain(
        load_dataset(args.data), args.out, config, train, resume=args.resume, settings=settings
    )
    if _is_main_process():
        console.print(
            f"pretrained {summary['epochs_run']} epochs ({', '.join(summary['tasks'])}); "
            f"best loss {summary['best_value']:.4f} at epoch {summary['best_epoch']}; "
            f"weights in {args.out / 'best'}"
        )
    return 0


def cmd_train(args: argparse.Namespace) -> int:
    from seminar.data.schema import load_dataset
    from seminar.experiment import finetune
    from seminar.report import results_table

    settings = _settings(args)
    config = _checked(lambda: settings.ranker_config(args.model, seed=args.seed, recent=args.recent))
    summary = finetune(
        load_dataset(args.data),
        args.out,
        config,
        settings.train_config(seed=args.seed, progress=not args.quiet),
        pretrained=args.pretrained,
        resume=args.resume,
        settings=settings,
    )
    rows = [{"model": args.model, "mode": settings.eval_mode, **summary["test"]}]
    console.print(
        results_table(rows, title=f"{args.model}: test metrics (best epoch {summary['best_epoch']})")
    )
    return 0


def cmd_evaluate(args: argparse.Namespace) -> int:
    from seminar.data.schema import load_dataset
    from seminar.experiment import evaluate_run, run_max_length
    from seminar.report import results_table
    from seminar.settings import ExperimentSettings
    from seminar.train.trainer import TrainConfig

    ds = load_dataset(args.data)
    pq_config = types.pq_config_from_args(args)
    max_length = args.max_length or run_max_length(args.run)
    saved = _checked(lambda: ExperimentSettings.read(args.run))  # the run's own evaluation batch
    batch = saved.eval_batch_size if saved is not None else ExperimentSettings().eval_batch_size
    rows = []
    for gsu in args.gsu:
        train = TrainConfig(
            max_length=max_length, eval_batch_size=batch, device=args.device, progress=not args.quiet
        )
        metrics = evaluate_run(
            ds, args.run, train, args.modes, stage=args.stage, gsu=gsu, pq_config=pq_config
        )
        name = args.run.name if len(args.gsu) == 1 else f"{args.run.name} (GSU {gsu})"
        rows += [{"model": name, "gsu": gsu, "mode": mode, **values} for mode, values in metrics.items()]
    if args.json:
        print(json.dumps(rows, indent=2))
    else:
        console.print(results_table(rows, title=f"{args.stage} metrics"))
    return 0


def _register_model_commands(sub: argparse._SubParsersAction) -> None:
    from seminar.models.names import ALL_MODELS

    p = sub.add_parser("pretrain", help="pretrain the PSU (next pair, alignment, query-item relevance)")
    _add_run_options(p, "pretrain")
    p.add_argument("--no-next-pair", action="store_true", help="switch off next-pair prediction")
    p.add_argument("--no-align", action="store_true", help="switch off multi-modal alignment")
    p.add_argument("--no-relevance", action="store_true", help="switch off query-item relevance")
    p.set_defaults(func=cmd_pretrain)

    p = sub.add_parser("train", help="train SEMINAR or a baseline ranker and report test metrics")
    _add_run_options(p, "train")
    p.add_argument("--model", choices=ALL_MODELS, default="seminar")
    p.add_argument(
        "--recent",
        type=types.non_negative_int,
        default=0,
        help="of the K behaviours, the last R are always kept (short-term interest); the GSU picks K - R",
    )
    p.add_argument(
        "--pretrained", type=Path, default=None, help="a `seminar pretrain` run to initialise from"
    )
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("evaluate", help="evaluate a trained run in one or more test modes")
    p.add_argument("--data", type=Path, required=True)
    p.add_argument("--run", type=Path, required=True, help="a `seminar train` run directory")
    p.add_argument(
        "--modes",
        nargs="+",
        default=["recommendation", "search", "pair"],
        choices=["recommendation", "search", "pair"],
    )
    p.add_argument("--stage", choices=["test", "valid"], default="test")
    p.add_argument(
        "--gsu",
        nargs="+",
        choices=["exact", "pq"],
        default=["exact"],
        help="GSU at inference: the trained one (exact), its product-quantized version (pq), or both",
    )
    types.add_pq_options(p)
    p.add_argument(
        "--max-length",
        type=types.positive_int,
        default=None,
        help="history window L (default: the run's own)",
    )
    p.add_argument("--device", type=types.device, default="auto", help="auto | cpu | mps | cuda | cuda:N")
    p.add_argument("--json", action="store_true")
    p.add_argument("--quiet", action="store_true")
    p.set_defaults(func=cmd_evaluate)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="seminar",
        description="Lifelong multi-modal sequential recommendation and personalised search (SEMINAR).",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    _register_prepare(sub)

    data = sub.add_parser("data", help="inspect prepared datasets")
    data_sub = data.add_subparsers(dest="data_command", required=True, metavar="SUBCOMMAND")
    info = data_sub.add_parser("info", help="validate a dataset and print its summary")
    info.add_argument("directory", type=Path)
    info.add_argument("--json", action="store_true", help="print the summary as JSON")
    info.set_defaults(func=cmd_data_info)

    _register_model_commands(sub)

    from seminar.models.names import ALL_MODELS
    from seminar.settings import DemoConfig

    demo = sub.add_parser("demo", help="the main job on the embedded MovieLens-100k, end to end")
    demo.add_argument(
        "--out",
        type=Path,
        default=Path("runs/ml-100k"),
        help="folder of the dataset, the runs and the results table; an interrupted demo resumes "
        "there (default: %(default)s)",
    )
    defaults = DemoConfig()
    demo.add_argument(
        "--epochs",
        type=types.positive_int,
        default=defaults.settings.epochs,
        help="ranker epochs, at most (early stopping) (default: %(default)s)",
    )
    demo.add_argument(
        "--pretrain-epochs",
        type=types.positive_int,
        default=defaults.settings.pretrain_epochs,
        help="PSU pretraining epochs (default: %(default)s)",
    )
    demo.add_argument(
        "--baselines",
        nargs="*",
        default=defaults.baselines,
        choices=[m for m in ALL_MODELS if m not in ("seminar", "oracle")],  # the oracle: lifelong data only
        help="models to train beside SEMINAR (reference rankers first)",
    )
    demo.add_argument("--quiet", action="store_true", help="no progress bars")
    demo.set_defaults(func=cmd_demo)

    from seminar.retrieval.cli import add_retrieval_commands

    add_retrieval_commands(sub)
    from seminar.serving.cli import add_serve_commands

    add_serve_commands(sub)

    from seminar.reproduce.cli import add_reproduce_command

    add_reproduce_command(sub)

    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    func: Callable[[argparse.Namespace], int] = args.func
    retain_freed_memory()  # each training step's large tensors reuse the last step's pages
    try:
        return func(args)
    except FileExistsError as exc:
        hint = " (add --resume to continue it)" if args.command in ("pretrain", "train") else ""
        errors.print(f"[bold red]error:[/] {exc}{hint}", highlight=False, soft_wrap=True)
        return 2
    except (DataError, ConfigError, FileNotFoundError, NoPretrainingTask) as exc:
        errors.print(f"[bold red]error:[/] {exc}", highlight=False, soft_wrap=True)
        return 2
    except (StaleRun, CheckpointError) as exc:  # a run that cannot be resumed as asked
        errors.print(f"[bold red]error:[/] {exc}", highlight=False, soft_wrap=True)
        return 2


if __name__ == "__main__":
    sys.exit(main())
