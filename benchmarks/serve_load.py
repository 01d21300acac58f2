"""Load test of `seminar serve`: /score throughput and latency at L = 10^4 behaviours per user (CPU).

    .venv/bin/python benchmarks/serve_load.py                    # the MovieLens-100k run in runs/, if any
    .venv/bin/python benchmarks/serve_load.py --data D --run R   # any seminar/twin/sim_soft run
    .venv/bin/python benchmarks/serve_load.py --export E --users 50 --requests 5000 --concurrency 16

Without a run (or with --train-tiny) it prepares MovieLens-100k and trains a one-epoch SEMINAR
under --work. It exports the run, starts `seminar serve` as a subprocess on localhost, fills
--users users with --length synthetic behaviours each (items and queries drawn from the export's
ids, half of them searches) through POST /users/{user}/behaviours, then drives POST /score with
--concurrency concurrent httpx clients. Client and server share this machine's cores, so the
HTTP figures include the client's own work. It also times the Python API in-process on the same
histories, and reports memory per user: the code bytes, what the service's arrays hold, and the
server's RSS delta.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import numpy as np

DEFAULT_DATA = Path("runs/ml100k-table/data")
DEFAULT_RUN = Path("runs/ml100k-table/runs/seed0/seminar")


def rss_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError("no VmRSS in /proc status")


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def train_tiny(work: Path) -> tuple[Path, Path]:
    """Prepare MovieLens-100k and train a one-epoch SEMINAR: a model to serve when none is given."""
    from seminar.data.build import BuildConfig, prepare
    from seminar.data.schema import load_dataset
    from seminar.data.sources.recbole import read_ml100k
    from seminar.experiment import finetune
    from seminar.models.ranker import RankerConfig
    from seminar.train.trainer import LAST, TrainConfig

    data, run = work / "data", work / "run"
    prepare(read_ml100k(), data, BuildConfig(progress=False))
    if not (run / LAST).exists():
        train = TrainConfig(epochs=1, max_length=100, positions_per_user=10, progress=False)
        finetune(load_dataset(data), run, RankerConfig(model="seminar", dim=32, heads=2, top_k=50), train)
    return data, run


def make_export(args: argparse.Namespace) -> Path:
    from seminar.data.schema import load_dataset
    from seminar.retrieval.gsu import PQGsuConfig
    from seminar.serving.export import export_run

    if args.export is not None:
        return args.export
    data, run = args.data, args.run
    if data is None or run is None:
        if DEFAULT_DATA.is_dir() and DEFAULT_RUN.is_dir() and not args.train_tiny:
            data, run = DEFAULT_DATA, DEFAULT_RUN
        else:
            data, run = train_tiny(args.work)
    started = time.perf_counter()
    out = export_run(load_dataset(data), run, args.work / "export", PQGsuConfig(), overwrite=True)
    print(f"exported {run} in {time.perf_counter() - started:.1f} s -> {out}")
    return out


def synthetic_behaviours(ids, n: int, rng: np.random.Generator) -> list[dict]:
    items = rng.integers(1, len(ids.items), n)
    queries = rng.integers(2, len(ids.queries), n)
    search = rng.random(n) < 0.5
    stamps = np.cumsum(rng.integers(1, 600, n)) + 1_000_000_000
    return [
        {"item": ids.items[i], "query": ids.queries[q] if s else None, "timestamp": int(t)}
        for i, q, s, t in zip(items.tolist(), queries.tolist(), search.tolist(), stamps.tolist(), strict=True)
    ]


def score_requests(
    ids, users: list[str], n: int, candidates: int, rng: np.random.Generator, behaviours: bool = True
) -> list[dict]:
    """/score bodies; ``behaviours`` False asks for scores only (no kept behaviours listed)."""
    out = []
    for _ in range(n):
        query = ids.queries[int(rng.integers(2, len(ids.queries)))] if rng.random() < 0.5 else None
        items = [ids.items[int(i)] for i in rng.integers(1, len(ids.items), candidates)]
        user = users[int(rng.integers(len(users)))]
        out.append({"user": user, "items": items, "query": query, "include_behaviours": behaviours})
    return out


async def drive(url: str, bodies: list[dict], concurrency: int) -> tuple[float, np.ndarray]:
    """POST every body to /score with ``concurrency`` requests in flight; (wall seconds, latencies ms)."""
    latencies = np.empty(len(bodies))
    queue: asyncio.Queue[int] = asyncio.Queue()
    for i in range(len(bodies)):
        queue.put_nowait(i)
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(base_url=url, limits=limits, timeout=60) as client:

        async def worker() -> None:
            while not queue.empty():
                i = queue.get_nowait()
                started = time.perf_counter()
                response = await client.post("/score", json=bodies[i])
                latencies[i] = (time.perf_counter() - started) * 1000
                if response.status_code != 200:
                    raise RuntimeError(f"/score answered {response.status_code}: {response.text}")

        started = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        return time.perf_counter() - started, latencies


def wait_ready(url: str, server: subprocess.Popen, timeout_s: float = 180) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise RuntimeError(f"the server exited with code {server.returncode}")
        try:
            if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.3)
    raise TimeoutError("the server did not answer /health in time")


def percentiles(values: np.ndarray) -> str:
    return f"p50 {np.percentile(values, 50):.2f} ms, p99 {np.percentile(values, 99):.2f} ms"


def http_run(
    args: argparse.Namespace, export: Path, fills: dict[str, list[dict]], bodies: list[dict]
) -> None:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    command = [sys.executable, "-m", "seminar.cli", "serve", str(export), "--port", str(port)]
    command += ["--threads", str(args.threads), "--gsu", args.gsu]
    server = subprocess.Popen(command, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    try:
        wait_ready(url, server)
        before = rss_bytes(server.pid)
        started = time.perf_counter()
        with httpx.Client(base_url=url, timeout=120) as client:
            for user, behaviours in fills.items():
                response = client.post(f"/users/{user}/behaviours", json={"behaviours": behaviours})
                response.raise_for_status()
            info = client.get(f"/users/{next(iter(fills))}").json()
            health = client.get("/health").json()
        fill_s = time.perf_counter() - started
        delta = (rss_bytes(server.pid) - before) / len(fills)
        per_behaviour = health["code_bytes_per_behaviour"]
        print(f"filled {len(fills)} users x {args.length} behaviours over HTTP in {fill_s:.1f} s")
        print(
            f"memory per user: codes {args.length * per_behaviour / 1e6:.2f} MB "
            f"({per_behaviour} B/behaviour), arrays {info['allocated_bytes'] / 1e6:.2f} MB "
            f"(codes + ids + timestamps), server RSS delta {delta / 1e6:.2f} MB"
        )
        asyncio.run(drive(url, bodies[: min(len(bodies), 100)], max(args.concurrency)))  # warm-up
        for concurrency in args.concurrency:
            cpu = cpu_seconds(server.pid)
            wall, latencies = asyncio.run(drive(url, bodies, concurrency))
            cpu_ms = (cpu_seconds(server.pid) - cpu) / len(bodies) * 1000
            print(
                f"HTTP /score ({args.candidates} candidate(s), K={health['top_k']}, L={args.length}, "
                f"GSU {health['gsu']}, concurrency {concurrency}): {len(bodies) / wall:.1f} requests/s, "
                f"{percentiles(latencies)}; server CPU {cpu_ms:.2f} ms/request"
            )
    finally:
        server.terminate()
        server.wait(timeout=30)


def python_run(
    args: argparse.Namespace, export: Path, fills: dict[str, list[dict]], bodies: list[dict]
) -> None:
    import faiss
    import torch
    from threadpoolctl import threadpool_limits

    from seminar.serving import ScoringService

    if args.threads > 0:
        torch.set_num_threads(args.threads)
        faiss.omp_set_num_threads(args.threads)
        threadpool_limits(args.threads)
    service = ScoringService.load(export, gsu=args.gsu, threads=args.threads if args.threads > 0 else None)
    started = time.perf_counter()
    for user, behaviours in fills.items():
        service.append(user, behaviours)
    print(
        f"filled {len(fills)} users in-process in {time.perf_counter() - started:.2f} s; "
        f"memory_per_user {service.memory_per_user() / 1e6:.2f} MB"
    )
    latencies = []
    for body in bodies[: args.python_requests]:
        started = time.perf_counter()
        service.score_many(
            body["user"], body["items"], body["query"], include_behaviours=body["include_behaviours"]
        )
        latencies.append((time.perf_counter() - started) * 1000)
    print(
        f"Python API score ({args.candidates} candidate(s), one thread): "
        f"{percentiles(np.array(latencies[20:]))}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--data", type=Path, default=None, help="dataset of --run")
    parser.add_argument("--run", type=Path, default=None, help="a seminar/twin/sim_soft run to export")
    parser.add_argument("--export", type=Path, default=None, help="an existing export (skips exporting)")
    parser.add_argument(
        "--train-tiny",
        action="store_true",
        help="train a one-epoch model on MovieLens-100k even if a run exists",
    )
    parser.add_argument(
        "--work", type=Path, default=Path("runs/serve-load"), help="where exports and models go"
    )
    parser.add_argument("--users", type=int, default=20)
    parser.add_argument("--length", type=int, default=10_000, help="behaviours per user (L)")
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--python-requests", type=int, default=500)
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 4, 16], help="clients in flight")
    parser.add_argument("--candidates", type=int, default=1, help="items per /score request")
    parser.add_argument("--threads", type=int, default=1, help="torch/faiss/BLAS threads in the server")
    parser.add_argument("--gsu", choices=["exact", "pq"], default="exact", help="the serving GSU")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--skip-http", action="store_true")
    parser.add_argument(
        "--no-behaviours", action="store_true", help="scores only: requests set include_behaviours false"
    )
    args = parser.parse_args()

    from seminar.serving.bundle import load_export

    export = make_export(args)
    ids = load_export(export).ids
    rng = np.random.default_rng(args.seed)
    users = ids.users[: args.users]
    fills = {user: synthetic_behaviours(ids, args.length, rng) for user in users}
    bodies = score_requests(ids, users, args.requests, args.candidates, rng, not args.no_behaviours)
    print(f"{os.cpu_count()} CPU cores; export {export}")
    if not args.skip_http:
        http_run(args, export, fills, bodies)
    python_run(args, export, fills, bodies)


if __name__ == "__main__":
    main()
