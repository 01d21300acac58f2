"""`seminar export` and `seminar serve`: thin argparse front-ends over export_run and create_app."""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

from seminar import cli_types as types
from seminar.serving.ids import UNKNOWN_QUERY_POLICIES
from seminar.serving.schemas import (
    GSU_MODES,
    MAX_BODY_BYTES,
    MAX_HISTORY,
    MAX_LISTED_BEHAVIOURS,
    MAX_SCORE_ROWS,
)


def _fail(message: str) -> int:
    print(f"error: {message}", file=sys.stderr)
    return 2


def _export(args: argparse.Namespace) -> int:
    from seminar.data.schema import load_dataset
    from seminar.serving.export import export_run
    from seminar.train.checkpoint import CheckpointError

    try:
        config = types.pq_config_from_args(args)
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


def _state_problem(path: Path) -> str | None:
    """Why histories could not be saved to ``path`` (None: they can).

    Checked before serving: otherwise a typo or a read-only folder is only found at the first
    save, and at shutdown every history is lost. Probed by creating a file there, as the save does.
    """
    folder = path.parent
    if path.is_dir():
        return f"--state {path} is a folder; give the path of a file"
    if folder.exists() and not folder.is_dir():
        return f"--state {path}: {folder} is not a folder"
    if not folder.is_dir():
        return f"--state {path}: the folder {folder} does not exist; create it first"
    try:
        with tempfile.NamedTemporaryFile(dir=folder, prefix=f".{path.name}.", suffix=".probe"):
            pass
    except OSError as exc:
        return f"--state {path}: cannot write in {folder} ({exc.strerror or exc})"
    return None


def _serve(args: argparse.Namespace) -> int:
    if args.state is not None and (problem := _state_problem(args.state)) is not None:
        return _fail(problem)

    import faiss
    import torch
    import uvicorn
    from threadpoolctl import threadpool_limits

    from seminar.serving.app import Limits, create_app
    from seminar.serving.service import ScoringService
    from seminar.serving.state import load_histories, save_histories

    threads = args.threads if args.threads > 0 else None
    limits = Limits(
        max_body_bytes=max(1, int(args.max_body_mb * 2**20)),
        max_score_rows=args.max_score_rows,
        max_listed_behaviours=args.max_listed_behaviours,
    )
    try:
        service = ScoringService.load(
            args.export,
            unknown_queries=args.unknown_queries,
            gsu=args.gsu,
            rerank_factor=args.rerank_factor,
            threads=threads,
            max_history=args.max_history or None,  # before restoring: a longer history keeps its newest
        )
        if args.state is not None and args.state.exists():
            users = load_histories(service, args.state)
            print(f"restored the histories of {users} users from {args.state}", file=sys.stderr)
    except ValueError as exc:
        return _fail(str(exc))
    if threads is not None:  # concurrency comes from requests; one thread per request scans fastest
        torch.set_num_threads(threads)
        faiss.omp_set_num_threads(threads)
        threadpool_limits(threads)  # numpy's BLAS: the exact GSU's GEMM

    def save_state() -> None:
        users = save_histories(service, args.state)
        print(f"saved the histories of {users} users to {args.state}", file=sys.stderr)

    def save_periodically() -> None:  # quiet: a failure is logged by the app, which retries
        save_histories(service, args.state)

    stateful = args.state is not None
    app = create_app(
        service,
        on_shutdown=save_state if stateful else None,
        limits=limits,
        periodic=save_periodically if stateful else None,
        every_s=args.save_every,
    )
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
    types.add_pq_options(p)
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
        "--gsu",
        choices=GSU_MODES,
        default="exact",
        help="exact: every behaviour scored with the per-id exact keys (one GEMM for all candidates; "
        "no codes stored); pq: ADC over PQ codes held per behaviour, then an exact re-rank",
    )
    p.add_argument(
        "--rerank-factor",
        type=types.non_negative_int,
        default=None,
        help="with --gsu pq: override the export's re-rank factor",
    )
    p.add_argument(
        "--threads",
        type=types.non_negative_int,
        default=1,
        help="torch, faiss and BLAS threads per process (0: leave)",
    )
    p.add_argument(
        "--log-level", default="warning", choices=["critical", "error", "warning", "info", "debug"]
    )
    p.add_argument(
        "--state",
        type=Path,
        default=None,
        help="history snapshot: restored at start when it exists, written (atomically) every "
        "--save-every seconds and at a graceful stop; its folder must exist and be writable",
    )
    p.add_argument(
        "--save-every",
        type=types.non_negative_float,
        default=300.0,
        help="seconds between background saves of --state (0: only at a graceful stop)",
    )
    p.add_argument(
        "--max-body-mb",
        type=types.positive_float,
        default=MAX_BODY_BYTES / 2**20,
        help="request bodies over this many MiB are refused (413) before they are parsed",
    )
    p.add_argument(
        "--max-score-rows",
        type=types.positive_int,
        default=MAX_SCORE_ROWS,
        help="most items × k one /score may ask for (422 beyond)",
    )
    p.add_argument(
        "--max-listed-behaviours",
        type=types.positive_int,
        default=MAX_LISTED_BEHAVIOURS,
        help="most items × k one /score may list with include_behaviours (422 beyond: set it to false)",
    )
    p.add_argument(
        "--max-history",
        type=types.non_negative_int,
        default=MAX_HISTORY,
        help="behaviours kept per user; an append beyond drops the oldest (0: no cap)",
    )
    p.set_defaults(func=_serve)
