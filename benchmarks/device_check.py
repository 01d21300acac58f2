"""The GPU figures and CUDA checks in one run: throughput, retrieval, CUDA tests, DDP smoke test.

    bash benchmarks/device_check.sh             # CUDA machine, full sizes (a few minutes on one H200)
    bash benchmarks/device_check.sh --dry-run   # CPU, toy sizes, the same steps and files

Steps, in this order (figures first, so a slow test cannot starve them):
  env               python, torch, CUDA devices, triton, whether faiss and polars import
  train_throughput  TWIN, SEMINAR, SASRec training steps at L=1000, K=200, d=64, 256 targets, bf16
                    autocast (benchmarks/train_throughput.py's measurement on its numpy-only data)
  retrieval         B=256 users, L=10^4, M=4 channels, top-200: Triton ADC kernel and the batched
                    torch path against exact fused-key scoring in bf16, timed in the same run
  cuda_tests        ``pytest -m gpu`` over the test files that carry the mark (bf16 training included)
  triton_tests      tests/retrieval/test_triton_pq.py, compiled on CUDA (interpreted in a dry run)
  ddp               Trainer under ``torchrun --nproc_per_node=2``: NCCL when 2 GPUs are visible
                    (skipped otherwise); Gloo on CPU in a dry run

Each step runs in its own process with its own time limit, so a CUDA fault or a hang costs that
step only; its status (ok, failed, timeout, skipped) and reason go into the JSON either way. The
figure steps import nothing that needs faiss or polars: seminar.retrieval.kernels imports faiss at
module top for its CPU search, so where faiss is absent a stand-in that fails on first use takes
its place. The test steps need both (tests build datasets with polars and train PQ with faiss);
they are skipped, with that reason, where either is missing. Writes ``device_check.json``,
``device_check.md`` and ``device_check.log`` under ``--out``; prints the Markdown summary last.
Figures are printed and recorded, never asserted.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import platform
import shlex
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import types
import xml.etree.ElementTree as ET
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # the orchestrator itself imports neither: a broken install costs one step, not the run
    import torch

    from train_throughput import ThroughputConfig

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = Path(__file__).resolve()
STEPS = ("env", "train_throughput", "retrieval", "cuda_tests", "triton_tests", "ddp")
TEST_MODULES = ("faiss", "polars")
BUDGET_S = 420  # the whole run, under the 8 minutes a device call is sized for
MIN_STEP_S = 20  # a step is not started with less time than this left
H200_COPY_TB_S = 4.3  # device-to-device copy rate seen on the lent H200 (bytes read + written)
TARGETS = {
    "samples_per_s": "SEMINAR fine-tuning >= 100,000 samples/s at L=1000",
    "seminar_over_twin": "SEMINAR step <= 1.3x TWIN's",
    "retrieval_ms": "retrieval top-200 <= 0.10 ms for the whole batch (B=256, L=10^4, M=4)",
    "retrieval_speedup": "retrieval >= 3x faster than exact fused-key scoring in bf16",
}


# ---------------------------------------------------------------------------- sizes


@dataclass(frozen=True)
class RetrievalConfig:
    """The retrieval step's problem; pq_sub x pq_centroids per channel is speed.py's fast shape."""

    batch: int = 256
    length: int = 10_000
    channels: int = 4
    pq_sub: int = 16
    pq_centroids: int = 16
    dim: int = 64
    k: int = 200
    warmup: int = 5
    repeats: int = 50
    pipelined: int = 20  # calls back to back per pipelined sample
    seed: int = 0


TOY_RETRIEVAL = RetrievalConfig(batch=4, length=300, pq_sub=4, dim=16, k=16, warmup=1, repeats=3, pipelined=2)


def throughput_config(dry_run: bool) -> ThroughputConfig:
    """train_throughput's config: the issue's sizes, or a toy one; numpy-only data either way."""
    from train_throughput import ThroughputConfig

    full = ThroughputConfig(models=("twin", "seminar", "sasrec"), data="memory")
    if not dry_run:
        return full
    toy = {"length": 32, "top_k": 8, "dim": 16, "heads": 2, "batch": 32, "targets_per_window": 8}
    return replace(full, steps=2, warmup=1, users=40, items=500, **toy)


@dataclass(frozen=True)
class DdpConfig:
    """The DDP smoke run: a small SEMINAR ranker trained for one epoch by the project's Trainer."""

    users: int = 200
    items: int = 5_000
    length: int = 200
    top_k: int = 50
    dim: int = 64
    heads: int = 4
    batch: int = 256
    targets_per_window: int = 32


TOY_DDP = DdpConfig(users=16, items=200, length=16, top_k=4, dim=16, heads=2, batch=32, targets_per_window=8)


# ---------------------------------------------------------------------------- step bodies (child processes)


def _write(path: Path, result: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result, indent=2, default=str) + "\n")


def _try_import(name: str) -> str | None:
    """The module's version (or "yes") when it imports, else None."""
    try:
        module = importlib.import_module(name)
    except Exception:  # an absent module, or one that fails on import, counts as missing
        return None
    return str(getattr(module, "__version__", "yes"))


def env_step(result_path: Path) -> None:
    """What the figures ran on, and whether the test steps' extra modules are importable."""
    import torch

    devices = []
    for i in range(torch.cuda.device_count()):
        p = torch.cuda.get_device_properties(i)
        devices.append(
            {
                "name": p.name,
                "capability": f"{p.major}.{p.minor}",
                "memory_gib": round(p.total_memory / 2**30, 1),
                "multiprocessors": p.multi_processor_count,
            }
        )
    result = {
        "python": sys.version.split()[0],
        "executable": sys.executable,
        "platform": platform.platform(),
        "torch": torch.__version__,
        "torch_cuda": torch.version.cuda,
        "cuda_available": torch.cuda.is_available(),
        "device_count": len(devices),
        "devices": devices,
        "modules": {name: _try_import(name) for name in ("numpy", "triton", *TEST_MODULES)},
        "triton_interpret": os.environ.get("TRITON_INTERPRET", ""),
    }
    _write(result_path, result)
    print(json.dumps(result, indent=2))


def train_step(result_path: Path, dry_run: bool) -> None:
    """train_throughput's measurement at the issue's sizes (toy sizes in a dry run)."""
    import torch

    from train_throughput import measure, memory_dataset, report

    config = throughput_config(dry_run)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    results = measure(memory_dataset(config), config, device)
    _write(result_path, results)
    print(report(results))


def import_triton_pq(device: torch.device) -> tuple[types.ModuleType | None, str]:
    """The Triton module and how its kernel runs here (compiled, interpreted), or why it cannot."""
    try:
        triton_pq = importlib.import_module("seminar.retrieval.triton_pq")
    except ImportError as exc:
        return None, f"unavailable ({exc})"
    if triton_pq.INTERPRETED:
        return triton_pq, "interpreted (TRITON_INTERPRET=1)"
    if device.type != "cuda":
        return None, "unavailable (CPU tensors need TRITON_INTERPRET=1)"
    return triton_pq, "compiled"


def _elapsed_ms(fn: Callable[[], object], device: torch.device, calls: int = 1) -> float:
    """Milliseconds per call of ``calls`` calls back to back: CUDA events on a GPU, else a host clock."""
    import torch

    if device.type == "cuda":
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        for _ in range(calls):
            fn()
        end.record()
        end.synchronize()
        return start.elapsed_time(end) / calls
    started = time.perf_counter()
    for _ in range(calls):
        fn()
    return 1000 * (time.perf_counter() - started) / calls


def time_methods(
    fns: dict[str, Callable[[], object]], device: torch.device, config: RetrievalConfig
) -> dict[str, dict[str, float]]:
    """Median and best of single synchronised calls, and of pipelined runs, methods interleaved.

    A single call starts on an idle GPU, so it pays its launch latency (what one request sees); the
    pipelined figure lets launches overlap the work before them (what a busy server sees).
    """
    import torch

    for fn in fns.values():
        for _ in range(config.warmup):
            fn()
    if device.type == "cuda":
        torch.cuda.synchronize()
    single: dict[str, list[float]] = {name: [] for name in fns}
    piped: dict[str, list[float]] = {name: [] for name in fns}
    for i in range(config.repeats):
        for name, fn in fns.items():  # interleaved, so a burst of load elsewhere hits all alike
            single[name].append(_elapsed_ms(fn, device))
            if i % 5 == 0:
                piped[name].append(_elapsed_ms(fn, device, config.pipelined))
    return {
        name: {
            "ms": statistics.median(single[name]),
            "ms_best": min(single[name]),
            "ms_pipelined": statistics.median(piped[name]),
            "repeats": len(single[name]),
        }
        for name in fns
    }


def retrieval_inputs(config: RetrievalConfig, device: torch.device) -> dict[str, torch.Tensor]:
    """Random codes and per-user tables (ADC); fused keys [B, L, d] and, as benchmarks/retrieval_speed.py
    scores exactly, the M channels concatenated [B, L, M·d], with their queries. Never zeros."""
    import torch

    g = torch.Generator(device=device).manual_seed(config.seed)
    b, n, m, s, c = config.batch, config.length, config.channels, config.pq_sub, config.pq_centroids

    def bf16(*shape: int) -> torch.Tensor:
        return torch.randn(shape, generator=g, device=device, dtype=torch.bfloat16)

    return {
        "codes": torch.randint(0, c, (b, n, m, s), generator=g, device=device, dtype=torch.uint8),
        "tables": torch.randn((b, m, s, c), generator=g, device=device),
        "mask": torch.ones((b, n), dtype=torch.bool, device=device),
        "keys": bf16(b, n, config.dim),
        "queries": bf16(b, config.dim, 1),
        "concat_keys": bf16(b, n, m * config.dim),
        "concat_queries": bf16(b, m * config.dim, 1),
    }


def exact_topk(keys: torch.Tensor, queries: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Exact scoring: one batched matmul [B, L, d] x [B, d, 1], then top-k per user."""
    import torch

    return torch.topk(torch.bmm(keys, queries)[..., 0], k, dim=1)


def retrieval_floor(config: RetrievalConfig) -> dict[str, float]:
    """Fewest bytes each method must move (inputs read once, scores written and read once by top-k),
    and the time that takes at the H200's measured copy rate: the floor no version beats."""
    b, n = config.batch, config.length
    scores = 2 * 4 * b * n  # float32 scores written, then read by top-k
    adc = b * n * config.channels * config.pq_sub + b * n + scores  # uint8 codes, bool mask
    exact = 2 * b * n * config.dim + scores  # bf16 keys
    return {
        "adc_bytes": adc,
        "exact_bytes": exact,
        "adc_floor_ms": adc / (H200_COPY_TB_S * 1e9),
        "exact_floor_ms": exact / (H200_COPY_TB_S * 1e9),
    }


def check_agreement(values: torch.Tensor, reference: torch.Tensor) -> dict[str, Any]:
    """The Triton top-k against the torch path's: the same best scores, up to float32 rounding."""
    diff = float((values.float() - reference.float()).abs().max()) if values.numel() else 0.0
    return {"max_abs_diff": diff, "agree": diff <= 1e-3}


def retrieval_step(result_path: Path, dry_run: bool) -> int:
    """Triton ADC and batched torch top-k against exact fused bf16, one run, medians of repeats."""
    import torch

    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    config = TOY_RETRIEVAL if dry_run else RetrievalConfig()
    kernels = importlib.import_module("seminar.retrieval.kernels")  # imports faiss only for its CPU search
    triton_pq, triton_mode = import_triton_pq(device)
    x = retrieval_inputs(config, device)
    k = config.k
    fns: dict[str, Callable[[], object]] = {
        "torch_adc": lambda: kernels.batched_adc_topk(x["codes"], x["tables"], k, x["mask"]),
        "exact_fused_bf16": lambda: exact_topk(x["keys"], x["queries"], k),
        "exact_concat_bf16": lambda: exact_topk(x["concat_keys"], x["concat_queries"], k),
    }
    checks = {}
    if triton_pq is not None:
        fns = {
            "triton_adc": lambda: triton_pq.triton_adc_topk(
                x["codes"], x["tables"], k, x["mask"], check_range=False
            ),
            **fns,
        }
        got, want = fns["triton_adc"]()[0], fns["torch_adc"]()[0]
        checks["triton_vs_torch"] = check_agreement(got, want)
    timed = time_methods(fns, device, config)
    for row in timed.values():
        row["speedup_vs_exact"] = timed["exact_fused_bf16"]["ms"] / row["ms"]
        row["speedup_vs_exact_concat"] = timed["exact_concat_bf16"]["ms"] / row["ms"]
    result = {
        "config": asdict(config),
        "device": str(device),
        "gpu": torch.cuda.get_device_name(device) if device.type == "cuda" else None,
        "triton": triton_mode,
        "methods": timed,
        "checks": checks,
        "floor": retrieval_floor(config),
    }
    _write(result_path, result)
    for name, row in timed.items():
        print(
            f"{name:18s} {row['ms']:9.4f} ms per batch (best {row['ms_best']:.4f}, pipelined "
            f"{row['ms_pipelined']:.4f})   {row['speedup_vs_exact']:6.2f}x exact fused bf16"
        )
    print(f"triton: {triton_mode}; checks: {checks}")
    return 0 if all(c["agree"] for c in checks.values()) else 1


def ddp_worker(result_dir: Path, dry_run: bool) -> int:
    """One rank of the smoke run: Trainer (process group, DDP wrap, sharded data) for one epoch.

    Every rank writes rank<r>.json with its world size, backend and a digest of its final weights;
    DDP must leave the weights identical on every rank.
    """
    import torch
    import torch.distributed as dist

    from seminar.models.features import FeatureTables
    from seminar.train import TrainConfig, Trainer
    from train_throughput import ThroughputConfig, make_model, memory_dataset

    c = TOY_DDP if dry_run else DdpConfig()
    data = ThroughputConfig(
        length=c.length, top_k=c.top_k, dim=c.dim, heads=c.heads, users=c.users, items=c.items
    )
    ds = memory_dataset(data)
    model = make_model("seminar", FeatureTables.from_dataset(ds), data)
    config = TrainConfig(
        epochs=1,
        batch_size=c.batch,
        eval_batch_size=64,
        max_length=c.length,
        targets_per_window=c.targets_per_window,
        early_stopping_patience=None,
        out_dir=str(result_dir / "run"),
        progress=False,
        device="cuda" if torch.cuda.is_available() else "cpu",
    )
    started = time.perf_counter()
    with Trainer(model, ds, config) as trainer:
        summary = trainer.fit()
        report = {
            "rank": trainer.dist.rank,
            "world_size": trainer.dist.world_size,
            "backend": dist.get_backend() if dist.is_initialized() else None,
            "device": str(trainer.device),
            "seconds": time.perf_counter() - started,
            "steps": summary.get("global_step"),
            "test": summary.get("test", {}),
            "weights": {k: float(v.double().sum()) for k, v in trainer.model.state_dict().items()},
        }
    _write(result_dir / f"rank{report['rank']}.json", report)
    return 0


def ddp_summary(result_dir: Path, result_path: Path) -> int:
    """Compare the ranks' reports: two ranks, one backend, identical weights."""
    reports = [json.loads(p.read_text()) for p in sorted(result_dir.glob("rank*.json"))]
    weights_equal = len(reports) == 2 and reports[0]["weights"] == reports[1]["weights"]
    result = {
        "ranks": len(reports),
        "world_size": reports[0]["world_size"] if reports else None,
        "backend": reports[0]["backend"] if reports else None,
        "devices": [r["device"] for r in reports],
        "steps": [r["steps"] for r in reports],
        "seconds": max((r["seconds"] for r in reports), default=None),
        "test": reports[0]["test"] if reports else {},
        "weights_equal": weights_equal,
    }
    _write(result_path, result)
    print(json.dumps(result, indent=2))
    return 0 if weights_equal and result["world_size"] == 2 else 1


# ---------------------------------------------------------------------------- the orchestrator


@dataclass
class Plan:
    """How to run one step: a command, or the reason it is skipped."""

    argv: list[str] = field(default_factory=list)
    timeout_s: int = 60
    env: dict[str, str] = field(default_factory=dict)
    skip: str | None = None
    junit: Path | None = None


@dataclass
class Context:
    dry_run: bool
    work: Path  # per-step result files (not under --out: only three files go back from a device)
    log: Path
    env: dict[str, Any] = field(default_factory=dict)  # the env step's result


def _self(ctx: Context, *args: str) -> list[str]:
    return [sys.executable, str(SCRIPT), *args, *(["--dry-run"] if ctx.dry_run else [])]


def _child_env(ctx: Context, extra: dict[str, str]) -> dict[str, str]:
    """A dry run hides every GPU (CPU figures, CUDA tests skipped) and interprets Triton kernels."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1", **extra}
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT / "src"), env.get("PYTHONPATH", "")) if p)
    if ctx.dry_run:
        env.update({"CUDA_VISIBLE_DEVICES": "", "TRITON_INTERPRET": "1"})
    return env


def _needs_cuda(ctx: Context) -> str | None:
    if ctx.dry_run or ctx.env.get("cuda_available"):
        return None
    return "CUDA is not available here (use --dry-run for the CPU run)"


def _gpu_test_files() -> list[str]:
    """Test files that carry the gpu mark, so new CUDA tests join the run without editing it."""
    files = (p for p in sorted((ROOT / "tests").rglob("test_*.py")) if "pytest.mark.gpu" in p.read_text())
    return [str(p.relative_to(ROOT)) for p in files]


def _pytest(ctx: Context, name: str, args: list[str], timeout_s: int) -> Plan:
    missing = [m for m in TEST_MODULES if not ctx.env.get("modules", {}).get(m)]
    if missing:
        return Plan(skip=f"needs {', '.join(missing)} (not installed; carry wheels, see docs/gpu.md)")
    junit = ctx.work / f"{name}.xml"
    argv = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", f"--junitxml={junit}", *args]
    return Plan(argv=argv, timeout_s=timeout_s, junit=junit)


def plan_step(name: str, ctx: Context) -> Plan:
    """The command of each step, with its time limit, or why it is skipped."""
    result = ["--result", str(ctx.work / f"{name}.json")]
    if name == "env":
        return Plan(argv=_self(ctx, "step", "env", *result), timeout_s=120)
    if not ctx.env:
        return Plan(skip="the env step failed")
    if name in ("train_throughput", "retrieval"):
        if (reason := _needs_cuda(ctx)) is not None:
            return Plan(skip=reason)
        return Plan(argv=_self(ctx, "step", name, *result), timeout_s=90 if ctx.dry_run else 240)
    if name in ("cuda_tests", "triton_tests"):
        if (reason := _needs_cuda(ctx)) is not None:
            return Plan(skip=reason)
        if name == "cuda_tests":
            return _pytest(ctx, name, ["-m", "gpu", *_gpu_test_files()], 120 if ctx.dry_run else 240)
        return _pytest(
            ctx, name, ["-m", "not gpu", "tests/retrieval/test_triton_pq.py"], 120 if ctx.dry_run else 180
        )
    if name == "ddp":
        return plan_ddp(ctx, result)
    raise ValueError(f"unknown step {name!r}")


def plan_ddp(ctx: Context, result: list[str]) -> Plan:
    """torchrun with 2 processes: NCCL on 2 GPUs, Gloo on CPU in a dry run, skipped on 1 GPU."""
    if not ctx.dry_run and ctx.env.get("device_count", 0) < 2:
        return Plan(skip=f"{ctx.env.get('device_count', 0)} GPU visible: NCCL DDP needs 2")
    ranks = ctx.work / "ddp_ranks"
    worker = _self(ctx, "ddp-worker", "--result-dir", str(ranks))[1:]  # torchrun adds the python
    run = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", *worker]
    summary = _self(ctx, "ddp-summary", "--result-dir", str(ranks), *result)
    # both in one shell line so that one time limit covers the pair
    line = shlex.join(run) + " && " + shlex.join(summary)
    return Plan(
        argv=["bash", "-c", line], timeout_s=120 if ctx.dry_run else 240, env={"OMP_NUM_THREADS": "1"}
    )


def _junit_counts(path: Path | None) -> dict[str, int] | None:
    if path is None or not path.is_file():
        return None
    suite = ET.parse(path).getroot()
    suite = suite if suite.tag == "testsuite" else suite.find("testsuite")
    if suite is None:
        return None
    counts = {k: int(suite.get(k, 0)) for k in ("tests", "failures", "errors", "skipped")}
    counts["passed"] = counts["tests"] - counts["failures"] - counts["errors"] - counts["skipped"]
    return counts


def _run(argv: list[str], env: dict[str, str], timeout_s: float, log: Path) -> tuple[int | None, str]:
    """Run in a new process group (killed whole on timeout); output appended to the log.
    Returns the exit code (None on timeout) and the step's output tail."""
    with log.open("ab") as sink:
        start = sink.tell()
        proc = subprocess.Popen(
            argv, cwd=ROOT, env=env, stdout=sink, stderr=subprocess.STDOUT, start_new_session=True
        )
        try:
            code: int | None = proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            code = None
    with log.open("rb") as source:
        source.seek(start)
        tail = source.read()[-3000:].decode("utf-8", "replace")
    return code, tail


def run_step(name: str, ctx: Context, remaining_s: float) -> dict[str, Any]:
    """One step's record: status, seconds, reason, result or test counts, output tail on failure."""
    plan = plan_step(name, ctx)
    if plan.skip is None and remaining_s < MIN_STEP_S:
        plan.skip = f"time budget spent ({remaining_s:.0f} s left)"
    if plan.skip is not None:
        return {"status": "skipped", "seconds": 0.0, "reason": plan.skip}
    timeout_s = min(plan.timeout_s, remaining_s)
    with ctx.log.open("a") as log:
        log.write(f"\n===== {name}: {' '.join(plan.argv)}\n")
    started = time.perf_counter()
    code, tail = _run(plan.argv, _child_env(ctx, plan.env), timeout_s, ctx.log)
    record: dict[str, Any] = {"seconds": round(time.perf_counter() - started, 2)}
    record["status"] = "timeout" if code is None else "ok" if code == 0 else "failed"
    if code is None:
        record["reason"] = f"no result within {timeout_s:.0f} s"
    elif code != 0:
        last = next((line for line in reversed(tail.splitlines()) if line.strip()), "")
        record["reason"] = f"exit code {code}: {last.strip()[:160]}"
    result_file = ctx.work / f"{name}.json"
    if result_file.is_file():
        record["result"] = json.loads(result_file.read_text())
    if (counts := _junit_counts(plan.junit)) is not None:
        record["tests"] = counts
    if record["status"] != "ok":
        record["output_tail"] = tail
    return record


# ---------------------------------------------------------------------------- targets and the summary


def _target(key: str, figure: float | None, met: bool | None, shown: str, dry_run: bool) -> dict[str, Any]:
    return {
        "target": TARGETS[key],
        "figure": figure,
        "shown": shown,
        "met": None if dry_run or figure is None else met,
    }


def training_targets(result: dict[str, Any], dry_run: bool) -> list[dict[str, Any]]:
    """SEMINAR's targets/s and step ratio, on the many-target path (training's default) when timed."""
    rows = {(r["model"], r["path"]): r for r in result.get("rows", [])}
    path = "many" if ("seminar", "many") in rows else "one"
    seminar = rows.get(("seminar", path))
    ratio = result.get("seminar_over_twin", {}).get(path)
    out = []
    if seminar is not None:
        rate = seminar["targets_per_s"]
        out.append(
            _target("samples_per_s", rate, rate >= 100_000, f"{rate:,.0f} samples/s ({path})", dry_run)
        )
    if ratio is not None:
        value = ratio["median"]
        out.append(_target("seminar_over_twin", value, value <= 1.3, f"{value:.2f}x ({path})", dry_run))
    return out


def retrieval_targets(result: dict[str, Any], dry_run: bool) -> list[dict[str, Any]]:
    """The fastest ADC method's batch time and its speed-up over exact fused bf16."""
    methods = {k: v for k, v in result.get("methods", {}).items() if k.endswith("_adc")}
    if not methods:
        return []
    name, best = min(methods.items(), key=lambda item: item[1]["ms"])
    ms, speedup = best["ms"], best["speedup_vs_exact"]
    return [
        _target("retrieval_ms", ms, ms <= 0.10, f"{ms:.4f} ms ({name})", dry_run),
        _target("retrieval_speedup", speedup, speedup >= 3, f"{speedup:.2f}x ({name})", dry_run),
    ]


def _met(flag: bool | None) -> str:
    return "n/a (dry run)" if flag is None else "yes" if flag else "NO"


def _step_note(name: str, record: dict[str, Any]) -> str:
    """What a step's row says besides its status: test counts, the run's shape, or why it stopped."""
    notes = [record["reason"]] if "reason" in record else []
    if "tests" in record:
        t = record["tests"]
        notes.insert(
            0, f"{t['passed']} passed, {t['skipped']} skipped, {t['failures']} failed, {t['errors']} errors"
        )
    result = record.get("result", {})
    if name == "env" and result:
        notes.append(f"{result['device_count']} GPU visible")
    if name == "retrieval" and result:
        notes.append(f"Triton {result['triton']}")
    if name == "ddp" and result:
        equal = "equal" if result["weights_equal"] else "DIFFERENT"
        notes.append(f"{result['backend']}, {result['ranks']} ranks, weights {equal} after one epoch")
    return "; ".join(notes).replace("|", "\\|")  # a table cell


def _row(*cells: object) -> str:
    return "| " + " | ".join(str(c) for c in cells) + " |"


def _env_line(env: dict[str, Any]) -> str:
    gpus = ", ".join(d["name"] for d in env.get("devices", [])) or "no GPU"
    modules = env.get("modules", {})
    found = ", ".join(f"{m} {v}" if v else f"no {m}" for m, v in modules.items())
    torch = f"torch {env.get('torch')} (CUDA {env.get('torch_cuda')})"
    return f"Python {env.get('python')}, {torch}, {gpus}; {found}"


def training_section(result: dict[str, Any]) -> list[str]:
    c = result["config"]
    lines = [
        "",
        f"## Training throughput (L={c['length']}, K={c['top_k']}, d={c['dim']}, {c['batch']} targets/step, "
        f"bf16 autocast {'on' if result['autocast_bf16'] else 'off'}, {result['device']})",
        "",
        "| model | path | targets/step | step ms (median) | targets/s |",
        "| --- | --- | --- | --- | --- |",
    ]
    for r in result["rows"]:
        lines.append(
            _row(
                r["model"],
                r["path"],
                r["targets_per_step"],
                f"{r['step_ms']:.2f}",
                f"{r['targets_per_s']:,.0f}",
            )
        )
    for path, ratio in result["seminar_over_twin"].items():
        lines.append(
            f"\nSEMINAR / TWIN step ({path}): {ratio['median']:.2f} (interleaved pairs "
            f"{ratio['min']:.2f}–{ratio['max']:.2f})"
        )
    return lines


def retrieval_section(result: dict[str, Any]) -> list[str]:
    c = result["config"]
    floor = result["floor"]
    lines = [
        "",
        f"## Retrieval (B={c['batch']}, L={c['length']}, M={c['channels']}, "
        f"PQ {c['pq_sub']}x{c['pq_centroids']} per channel, fused keys d={c['dim']}, top-{c['k']}, "
        f"{result['device']}; Triton {result['triton']})",
        "",
        "| method | ms per batch (median) | best | pipelined | vs exact fused bf16 | vs exact M·d bf16 |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for name, r in result["methods"].items():
        lines.append(
            _row(
                name,
                *(f"{r[k]:.4f}" for k in ("ms", "ms_best", "ms_pipelined")),
                f"{r['speedup_vs_exact']:.2f}x",
                f"{r['speedup_vs_exact_concat']:.2f}x",
            )
        )
    lines.append(
        f"\nFloor at {H200_COPY_TB_S} TB/s: ADC {floor['adc_floor_ms']:.4f} ms "
        f"({floor['adc_bytes'] / 1e6:.1f} MB), exact {floor['exact_floor_ms']:.4f} ms "
        f"({floor['exact_bytes'] / 1e6:.1f} MB)."
    )
    for name, check in result["checks"].items():
        lines.append(
            f"Check {name}: max |diff| {check['max_abs_diff']:.2e}, "
            f"{'agree' if check['agree'] else 'DISAGREE'}."
        )
    return lines


def markdown(summary: dict[str, Any]) -> str:
    """The short human summary: steps, targets, then each figure step's table."""
    steps = summary["steps"]
    mode = "dry run (CPU, toy sizes: not the targets' measurements)" if summary["dry_run"] else "device run"
    lines = [f"# Device check: {mode}", "", f"{summary['started_utc']}, {summary['seconds']:.0f} s."]
    if "result" in steps["env"]:
        lines[-1] += " " + _env_line(steps["env"]["result"]) + "."
    lines += ["", "| step | status | seconds | note |", "| --- | --- | --- | --- |"]
    for name, record in steps.items():
        lines.append(
            f"| {name} | {record['status']} | {record['seconds']:.1f} | {_step_note(name, record)} |"
        )
    if summary["targets"]:
        lines += ["", "| target | figure | met |", "| --- | --- | --- |"]
        lines += [f"| {t['target']} | {t['shown']} | {_met(t['met'])} |" for t in summary["targets"]]
    if "result" in steps["train_throughput"]:
        lines += training_section(steps["train_throughput"]["result"])
    if "result" in steps["retrieval"]:
        lines += retrieval_section(steps["retrieval"]["result"])
    return "\n".join(lines) + "\n"


def run_all(out: Path, dry_run: bool, budget_s: float, only: list[str]) -> dict[str, Any]:
    """Every step in order within the time budget; writes the JSON, the Markdown and the log."""
    out.mkdir(parents=True, exist_ok=True)
    log = out / "device_check.log"
    log.write_text("")
    started, clock = datetime.now(timezone.utc), time.perf_counter()
    steps: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="device-check-") as work:
        ctx = Context(dry_run=dry_run, work=Path(work), log=log)
        for name in STEPS:
            if only and name not in only and name != "env":
                steps[name] = {"status": "skipped", "seconds": 0.0, "reason": "not selected (--only)"}
                continue
            steps[name] = run_step(name, ctx, budget_s - (time.perf_counter() - clock))
            if name == "env":
                ctx.env = steps[name].get("result", {}) if steps[name]["status"] == "ok" else {}
            print(
                f"device_check: {name}: {steps[name]['status']} ({steps[name]['seconds']:.1f} s)", flush=True
            )
    targets = training_targets(steps["train_throughput"].get("result", {}), dry_run)
    targets += retrieval_targets(steps["retrieval"].get("result", {}), dry_run)
    summary = {
        "dry_run": dry_run,
        "started_utc": started.strftime("%Y-%m-%d %H:%M:%S UTC"),
        "seconds": round(time.perf_counter() - clock, 1),
        "budget_s": budget_s,
        "steps": steps,
        "targets": targets,
    }
    _write(out / "device_check.json", summary)
    (out / "device_check.md").write_text(markdown(summary))
    return summary


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="every step; the JSON and Markdown under --out")
    run.add_argument("--out", type=Path, default=Path(os.environ.get("OUT") or "device-check-out"))
    run.add_argument("--dry-run", action="store_true", help="CPU, toy sizes, Triton interpreted")
    run.add_argument("--budget-s", type=float, default=BUDGET_S, help="seconds for the whole run")
    run.add_argument("--only", nargs="+", default=[], choices=STEPS, help="run these steps (env always runs)")
    step = sub.add_parser("step", help="one figure step, in its own process (used by run)")
    step.add_argument("name", choices=["env", "train_throughput", "retrieval"])
    step.add_argument("--result", type=Path, required=True)
    step.add_argument("--dry-run", action="store_true")
    for name in ("ddp-worker", "ddp-summary"):
        p = sub.add_parser(name, help="the DDP step's parts (used by run)")
        p.add_argument("--result-dir", type=Path, required=True)
        p.add_argument("--result", type=Path)
        p.add_argument("--dry-run", action="store_true")
    args = parser.parse_args(argv)
    if args.command == "run":
        summary = run_all(args.out, args.dry_run, args.budget_s, args.only)
        print(markdown(summary))
        print(f"device_check: wrote {args.out}/device_check.json, device_check.md, device_check.log")
        return int(any(r["status"] in ("failed", "timeout") for r in summary["steps"].values()))
    if args.command == "step":
        if args.name == "env":
            env_step(args.result)
            return 0
        if args.name == "train_throughput":
            train_step(args.result, args.dry_run)
            return 0
        return retrieval_step(args.result, args.dry_run)
    if args.command == "ddp-worker":
        return ddp_worker(args.result_dir, args.dry_run)
    return ddp_summary(args.result_dir, args.result)


if __name__ == "__main__":
    sys.exit(main())
