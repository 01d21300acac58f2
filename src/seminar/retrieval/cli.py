"""`seminar retrieval bench|speed|model`: thin argparse front-end over bench.run_recall_grid / run_speed /
model_recall; the heavy modules (torch, faiss) are imported when a command runs, not to build the parser."""

from __future__ import annotations

import argparse
from dataclasses import replace
from pathlib import Path

from seminar.retrieval.methods import METHODS


def _ints(text: str) -> tuple[int, ...]:
    try:
        return tuple(int(v) for v in text.split(",") if v)
    except ValueError as err:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from err


def _names(text: str) -> tuple[str, ...]:
    names = tuple(v for v in text.split(",") if v)
    unknown = [n for n in names if n not in METHODS]
    if unknown:
        raise argparse.ArgumentTypeError(f"unknown methods {unknown}; choose from {', '.join(METHODS)}")
    return names


def _bench(args: argparse.Namespace) -> int:
    from seminar.retrieval.bench import RecallConfig, run_recall_grid
    from seminar.retrieval.report import recall_table

    config = RecallConfig.quick() if args.quick else RecallConfig()
    overrides = {"out": str(args.out), "seed": args.seed}
    for key in ("lengths", "ks", "methods", "n_users", "n_targets", "rerank_factor"):
        if getattr(args, key) is not None:
            overrides[key] = getattr(args, key)
    results = run_recall_grid(replace(config, **overrides))
    print(recall_table(results))
    print(f"wrote {args.out}/results.json, recall_table.md, recall.png")
    return 0


def _speed(args: argparse.Namespace) -> int:
    from seminar.retrieval.speed import SpeedConfig, run_speed, speed_table

    overrides = {"out": str(args.out), "seed": args.seed}
    if args.lengths is not None:
        overrides["lengths"] = args.lengths
    if args.k is not None:
        overrides["k"] = args.k
    print(speed_table(run_speed(replace(SpeedConfig(), **overrides))))
    return 0


def _model_recall(args: argparse.Namespace) -> int:
    from seminar.data.schema import load_dataset
    from seminar.retrieval.model_recall import ModelRecallConfig, run_model_recall
    from seminar.retrieval.report import recall_table

    overrides: dict = {"seed": args.seed, "progress": not args.quiet}
    for key in ("ks", "methods", "min_length", "max_users", "negatives_per_user", "rerank_factor"):
        if getattr(args, key) is not None:
            overrides[key] = getattr(args, key)
    config = ModelRecallConfig(**overrides)
    results = run_model_recall(load_dataset(args.data), args.run, config, out=args.out)
    print(recall_table(results))
    print(f"{results['users']} users; wrote {args.out}/results.json, recall_table.md, recall.png")
    return 0


def add_retrieval_commands(subparsers: argparse._SubParsersAction) -> None:
    """Register `retrieval bench` and `retrieval speed` on the top-level CLI's sub-parsers."""
    retrieval = subparsers.add_parser("retrieval", help="approximate top-K retrieval experiments")
    sub = retrieval.add_subparsers(dest="retrieval_command", required=True)

    bench = sub.add_parser("bench", help="Recall@K grid on the paper's synthetic sequences")
    bench.add_argument("--out", type=Path, default=Path("runs/retrieval"), help="output directory")
    bench.add_argument("--quick", action="store_true", help="a small grid (seconds)")
    bench.add_argument("--lengths", type=_ints, help="sequence lengths, e.g. 2000,5000,10000")
    bench.add_argument("--ks", type=_ints, help="K values, e.g. 32,64,128,256")
    bench.add_argument("--methods", type=_names, help=f"comma-separated subset of: {', '.join(METHODS)}")
    bench.add_argument("--n-users", dest="n_users", type=int, help="sequences per cell")
    bench.add_argument("--n-targets", dest="n_targets", type=int, help="targets per sequence")
    bench.add_argument(
        "--rerank-factor", dest="rerank_factor", type=int, help="re-rank shortlist R = factor·K"
    )
    bench.add_argument("--seed", type=int, default=0)
    bench.set_defaults(func=_bench)

    model = sub.add_parser(
        "model-recall", help="Recall@K on a trained model's own GSU embeddings (the paper's Table 4)"
    )
    model.add_argument("--data", type=Path, required=True, help="the dataset the run was trained on")
    model.add_argument("--run", type=Path, required=True, help="a seminar, twin or sim_soft run")
    model.add_argument("--out", type=Path, default=Path("runs/model_recall"), help="output directory")
    model.add_argument("--ks", type=_ints, help="K values (default 16,32,64)")
    model.add_argument("--methods", type=_names, help="comma-separated subset of the grid's methods")
    model.add_argument("--min-length", dest="min_length", type=int, help="shortest history scored (256)")
    model.add_argument("--max-users", dest="max_users", type=int, help="users, longest histories first (100)")
    model.add_argument(
        "--negatives-per-user", dest="negatives_per_user", type=int, help="negatives scored as targets (4)"
    )
    model.add_argument("--rerank-factor", dest="rerank_factor", type=int, help="shortlist R = factor·K")
    model.add_argument("--seed", type=int, default=0)
    model.add_argument("--quiet", action="store_true")
    model.set_defaults(func=_model_recall)

    speed = sub.add_parser("speed", help="latency of PQ top-K against exact scoring")
    speed.add_argument("--out", type=Path, default=Path("runs/retrieval_speed"), help="output directory")
    speed.add_argument("--lengths", type=_ints, help="sequence lengths, e.g. 1000,10000,100000")
    speed.add_argument("--k", type=int, help="top-K")
    speed.add_argument("--seed", type=int, default=0)
    speed.set_defaults(func=_speed)
