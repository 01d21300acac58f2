"""`seminar export` and `seminar serve`: thin argparse front-ends over export_run and create_app."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from seminar import cli_types as types
from seminar.serving.ids import UNKNOWN_QUERY_POLICIES


def _fail(message: str) -> int:
    print(f"error: {message}", file=sys.stderr)
    return 2


def _export(args: argparse.Namespace) -> int:
    from seminar.data.schema import load_dataset
    from seminar.retrieval.gsu import PQGsuConfig
    from seminar.serving.export import export_run
    from seminar.train.checkpoint import CheckpointError

    try:
        config = PQGsuConfig(
            n_sub=args.pq_sub,
            n_centroids=args.pq_centroids,
            rerank_factor=args.rerank_factor,
            n_iter=args.pq_iter,
            seed=args.seed,
        )
        out = export_run(
            load_dataset(args.data),
            args.run,
            args.out,
            config,
            checkpoint=args.checkpoint,
            overwrite=args.force,
        )
    except FileExistsError:
        return _fail(f"{args.out} exists; add --force to replace it")
    except (ValueError, CheckpointError) as exc:
        return _fail(str(exc))
    print(f"wrote {out}")
    return 0


def _serve(args: argparse.Namespace) -> int:
    import faiss
    import torch
    import uvicorn

    from seminar.serving.app import create_app
    from seminar.serving.service import ScoringService
    from seminar.serving.state import load_histories, save_histories

    threads = args.threads if args.threads > 0 else None
    try:
        service = ScoringService.load(
            args.export,
            unknown_queries=args.unknown_queries,
            rerank_factor=args.rerank_factor,
            threads=threads,
        )
        if args.state is not None and args.state.exists():
            users = load_histories(service, args.state)
            print(f"restored the histories of {users} users from {args.state}", file=sys.stderr)
    except ValueError as exc:
        return _fail(str(exc))
    if threads is not None:  # concurrency comes from requests; one thread per request scans fastest
        torch.set_num_threads(threads)
        faiss.omp_set_num_threads(threads)

    def save_state() -> None:
        users = save_histories(service, args.state)
        print(f"saved the histories of {users} users to {args.state}", file=sys.stderr)

    app = create_app(service, on_shutdown=save_state if args.state is not None else None)
    uvicorn.run(app, host=args.host, port=args.port, log_level=args.log_level)
    return 0


def add_serve_commands(subparsers: argparse._SubParsersAction) -> None:
    """Register `export` and `serve` on the top-level CLI's sub-parsers."""
    p = subparsers.add_parser(
        "export",
        help="write a self-contained scoring export of a trained run",
        description="Ranker weights and config, feature tables, the GSU's PQ codebooks and the id maps, "
        "verified by a sha256 manifest. Only inner-product GSUs (seminar, twin, sim_soft) can be exported.",
    )
    p.add_argument("--data", type=Path, required=True, help="the dataset the run was trained on")
    p.add_argument("--run", type=Path, required=True, help="a `seminar train` run directory")
    p.add_argument("--out", type=Path, required=True, help="export directory to write")
    p.add_argument("--checkpoint", choices=["best", "last"], default="best")
    p.add_argument(
        "--pq-sub",
        type=types.positive_int,
        default=None,
        help="PQ sub-vectors per channel (default: the largest divisor of the model's dimension ≤ 32)",
    )
    p.add_argument(
        "--pq-centroids", type=types.positive_int, default=256, help="PQ centroids per sub-vector (≤ 256)"
    )
    p.add_argument("--pq-iter", type=types.positive_int, default=20, help="k-means iterations")
    p.add_argument(
        "--rerank-factor",
        type=types.non_negative_int,
        default=4,
        help="exact re-rank of the top factor·K (0: none)",
    )
    p.add_argument("--seed", type=types.non_negative_int, default=0, help="k-means seed")
    p.add_argument("--force", action="store_true", help="replace an existing export")
    p.set_defaults(func=_export)

    p = subparsers.add_parser(
        "serve",
        help="serve an export over HTTP (FastAPI)",
        description="Append behaviours and score candidates over HTTP; OpenAPI docs at /docs.",
    )
    p.add_argument("export", type=Path, help="a `seminar export` directory")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument(
        "--unknown-queries",
        choices=UNKNOWN_QUERY_POLICIES,
        default="reject",
        help="a query string the model has never seen: reject it (422) or treat it as the empty query",
    )
    p.add_argument(
        "--rerank-factor",
        type=types.non_negative_int,
        default=None,
        help="override the export's re-rank factor",
    )
    p.add_argument(
        "--threads",
        type=types.non_negative_int,
        default=1,
        help="torch and faiss threads per process (0: leave)",
    )
    p.add_argument(
        "--log-level", default="warning", choices=["critical", "error", "warning", "info", "debug"]
    )
    p.add_argument(
        "--state",
        type=Path,
        default=None,
        help="history snapshot: restored at start when it exists, written (atomically) at a graceful stop",
    )
    p.set_defaults(func=_serve)
