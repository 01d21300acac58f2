"""`seminar reproduce CONFIG`: thin argparse front-end over :func:`seminar.reproduce.run_reproduce`."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from seminar import cli_types as types
from seminar.reproduce.config import load_config


def _reproduce(args: argparse.Namespace) -> int:
    from seminar.reproduce.grid import WorkerFailed, default_out, run_reproduce  # (imports torch)

    config = load_config(args.config)
    out = args.out if args.out is not None else default_out(config)
    try:
        results = run_reproduce(
            config,
            out,
            only_datasets=args.only_datasets,
            only_models=args.only_models,
            seeds=args.seeds,
            retrieval=not args.skip_retrieval,
            progress=not args.quiet,
            jobs=args.jobs,
        )
    except WorkerFailed as exc:  # the report is written; some runs are missing from it
        print(f"error: {exc}; report: {out / 'README.md'}", file=sys.stderr)
        return 1
    missing = len(results["missing"])
    note = f"; {missing} cells not finished (see the report)" if missing else ""
    print(f"report: {out / 'README.md'} ({len(results['cells'])} finished cells{note})")
    return 0


def add_reproduce_command(subparsers: argparse._SubParsersAction) -> None:
    """Register `reproduce` on the top-level CLI's sub-parsers."""
    p = subparsers.add_parser(
        "reproduce",
        help="run an experiment grid from a YAML config and write a report folder",
        description=(
            "Run the datasets × models × seeds grid, the sweeps and the retrieval grid of a YAML config "
            "(see docs/reproduce.md) and write Markdown tables, PNG figures and results.json. "
            "Finished cells are skipped on a re-run; an interrupted run resumes from its last checkpoint."
        ),
    )
    p.add_argument("config", type=Path, help="a YAML config, e.g. configs/ml100k-quick.yaml")
    p.add_argument(
        "--out",
        type=Path,
        default=None,
        help="report folder (default: the config's out, else runs/reproduce/NAME)",
    )
    p.add_argument("--only-datasets", nargs="+", metavar="NAME", default=None, help="run only these datasets")
    p.add_argument(
        "--only-models",
        nargs="+",
        metavar="NAME",
        default=None,
        help="run only these rows (their names in the config's models, quoted when they hold spaces); "
        "the report still covers every finished cell",
    )
    p.add_argument(
        "--seeds",
        nargs="+",
        type=int,
        default=None,
        help="run only these seeds (seeds not in the config are added)",
    )
    p.add_argument("--skip-retrieval", action="store_true", help="do not run the retrieval grid (Figure 2)")
    p.add_argument(
        "--jobs",
        type=types.positive_int,
        default=1,
        help="runs trained at once, one process each with an equal share of the CPU's threads "
        "(several commands on one --out folder also share the runs)",
    )
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.set_defaults(func=_reproduce)
