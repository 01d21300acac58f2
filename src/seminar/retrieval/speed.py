"""Latency of PQ top-K against exact float scoring, measured in the same run on the same data.

Sections: CPU single target on one thread, CPU batched (all threads), GPU batched (B users) when
CUDA exists (with the Triton kernel when triton is installed). The methods of one section and length
are timed in interleaved rounds, so a burst of load from other processes hits all of them alike;
each figure is the median over all calls (``us``) and the quietest round's median (``us_best``).
Nothing here asserts a time.
"""

from __future__ import annotations

import importlib.util
import statistics
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import faiss
import numpy as np
import torch

from seminar.io import atomic_path, write_json_atomic
from seminar.retrieval.kernels import PQSearcher, batched_adc_topk, batched_tables, codes_to_tensor
from seminar.retrieval.pq import MultiModalPQ, PQConfig

TARGETS = (
    "CPU single thread, L=10^4: PQ top-K (full search path) <= 50 us and >= 5x faster than exact float32",
    "GPU B=256, L=10^4, M=4, d=64, top-200: <= 0.10 ms and >= 9x faster than exact bf16",
)
TARGET_LENGTH = 10_000


@dataclass(frozen=True)
class SpeedConfig:
    """What to time; pq_shapes are (n_sub, n_centroids) per channel."""

    lengths: tuple[int, ...] = (1_000, 10_000, 100_000)
    k: int = 200
    n_channels: int = 4
    dim: int = 64
    pq_shapes: tuple[tuple[int, int], ...] = ((16, 16), (32, 16), (8, 256), (8, 512))
    cpu_batch: int = 8
    gpu_batch: int = 256
    table_size: int = 20_000
    min_time_s: float = 0.3
    max_repeats: int = 3000
    rounds: int = 5
    other_oversample: tuple[float, ...] = (1.25, 1.0)  # FastScan shortlists timed beside the default 2·k
    seed: int = 0
    out: str | None = None


Timed = tuple[float, float]  # (median µs over all calls, lowest per-round median µs)


def time_calls(
    fns: dict[str, Callable[[], Any]],
    min_time_s: float,
    max_repeats: int,
    rounds: int = 5,
    sync: Callable[[], None] | None = None,
) -> dict[str, Timed]:
    """Time several calls in interleaved rounds (after warm-up); see the module docstring."""
    for fn in fns.values():
        for _ in range(3):
            fn()
    if sync:
        sync()
    samples: dict[str, list[float]] = {name: [] for name in fns}
    best = dict.fromkeys(fns, float("inf"))
    for _ in range(max(1, rounds)):
        for name, fn in fns.items():
            batch: list[float] = []
            total = 0.0
            while total < min_time_s / rounds and len(batch) < max(1, max_repeats // rounds):
                start = time.perf_counter()
                fn()
                if sync:
                    sync()
                elapsed = time.perf_counter() - start
                batch.append(elapsed)
                total += elapsed
            samples[name] += batch
            best[name] = min(best[name], statistics.median(batch))
    return {name: (1e6 * statistics.median(samples[name]), 1e6 * best[name]) for name in fns}


def time_call(
    fn: Callable[[], Any], min_time_s: float, max_repeats: int, sync: Callable[[], None] | None = None
) -> float:
    """Median wall time of one call in microseconds (after warm-up)."""
    return time_calls({"fn": fn}, min_time_s, max_repeats, rounds=1, sync=sync)["fn"][0]


def _train(cfg: SpeedConfig, rng: np.random.Generator, n_sub: int, n_centroids: int) -> MultiModalPQ:
    tables = [
        rng.standard_normal((cfg.table_size, cfg.dim), dtype=np.float32) + 1.0 for _ in range(cfg.n_channels)
    ]
    return MultiModalPQ.train(
        tables, PQConfig(cfg.n_channels, cfg.dim, n_sub, n_centroids, n_iter=8, seed=cfg.seed)
    )


def _merged_faiss(cfg: SpeedConfig, rng: np.random.Generator, n_bytes: int, fastscan: bool) -> faiss.Index:
    """faiss PQ on pre-merged vectors with the same code size (only valid when γ is fixed in advance)."""
    nbits = 4 if fastscan else 8
    n_sub = n_bytes * 8 // nbits
    index: faiss.Index = (
        faiss.IndexPQFastScan(cfg.dim, n_sub, 4, faiss.METRIC_INNER_PRODUCT)
        if fastscan
        else faiss.IndexPQ(cfg.dim, n_sub, 8, faiss.METRIC_INNER_PRODUCT)
    )
    index.train(rng.standard_normal((cfg.table_size, cfg.dim), dtype=np.float32) * 0.5 + 1.0)
    return index


def _row(
    section: str, length: int, method: str, timed: Timed, bytes_per: int | None, **extra: Any
) -> dict[str, Any]:
    return {
        "section": section,
        "length": length,
        "method": method,
        "us": timed[0],
        "us_best": timed[1],
        "bytes_per_behaviour": bytes_per,
        **extra,
    }


def _cpu_single(cfg: SpeedConfig, pqs: dict, rng: np.random.Generator, length: int) -> list[dict]:
    """One target on one thread: our search paths, the faiss kernels alone, exact scoring, plain faiss."""
    m, d, k = cfg.n_channels, cfg.dim, cfg.k
    gammas = np.full(m, 1.0 / m, dtype=np.float32)
    seq = rng.standard_normal((length, m, d), dtype=np.float32) + 1.0
    target = rng.standard_normal((m, d), dtype=np.float32) + 1.0
    query = (gammas[:, None] * target).sum(0)
    concat = torch.from_numpy(np.ascontiguousarray((gammas[:, None] * query[None]).reshape(-1)))
    full = torch.from_numpy(np.ascontiguousarray(seq.reshape(length, m * d)))
    merged = torch.from_numpy(np.ascontiguousarray((seq * gammas[None, :, None]).sum(1)))
    q_merged = torch.from_numpy(query)
    fns: dict[str, tuple[int, Callable[[], Any]]] = {
        "exact fp32 (M channels)": (4 * m * d, lambda: torch.topk(full @ concat, k)),
        "exact fp32 (pre-merged, fixed γ)": (4 * d, lambda: torch.topk(merged @ q_merged, k)),
    }
    for (n_sub, c), pq in pqs.items():
        codes = pq.encode(seq)
        name = f"pq{n_sub}x{c}"
        nbytes = pq.bytes_per_behaviour
        searcher = PQSearcher(pq, codes)
        prepared = searcher.prepare_query(target, gammas)
        kind = searcher.backend
        fns[f"{name} {kind} (ours, full path: search)"] = (
            nbytes,
            lambda s=searcher: s.search(target, gammas, k),
        )
        fns[f"{name} {kind} (ours, prepared query: search_prepared)"] = (
            nbytes,
            lambda s=searcher, q=prepared: s.search_prepared(q, k),
        )
        index = searcher._index
        if isinstance(index, faiss.IndexRefine):
            for oversample in cfg.other_oversample:
                other = PQSearcher(pq, codes, fastscan_oversample=oversample)
                label = "no float rescoring" if oversample <= 1 else f"fastscan_oversample={oversample:g}"
                fns[f"{name} fastscan (ours, full path, {label})"] = (
                    nbytes,
                    lambda s=other: s.search(target, gammas, k),
                )
            lean = PQSearcher(pq, codes, fastscan_oversample=1.0)
            refine = f"FastScan {searcher.fastscan_oversample:g}·k + float tables"
            fns[f"{name} faiss IndexRefine call ({refine})"] = (
                nbytes,
                lambda i=index, q=prepared: i.search(q, k),
            )
            index = lean._index
        fns[f"{name} faiss {type(index).__name__} kernel alone (top-k)"] = (
            nbytes,
            lambda i=index, q=prepared: i.search(q, k),
        )
        if length <= 10_000:
            numpy_searcher = PQSearcher(pq, codes, backend="numpy")
            fns[f"{name} numpy gather"] = (nbytes, lambda s=numpy_searcher: s.search(target, gammas, k))
    q_row = q_merged.numpy()[None]
    for n_bytes, fastscan in ((32, True), (32, False)):
        faiss_index = _merged_faiss(cfg, rng, n_bytes, fastscan)
        faiss_index.add(merged.numpy())
        fns[f"faiss {type(faiss_index).__name__} on pre-merged vectors"] = (
            n_bytes,
            lambda i=faiss_index: i.search(q_row, k),
        )
    timed = time_calls({n: f for n, (_, f) in fns.items()}, cfg.min_time_s, cfg.max_repeats, cfg.rounds)
    rows = [_row("cpu_single", length, n, timed[n], nbytes) for n, (nbytes, _) in fns.items()]
    exact = rows[0]["us"]
    for r in rows:
        r["speedup_vs_exact"] = exact / r["us"]
        r["k"] = k
    return rows


def triton_available() -> bool:
    """Triton kernels are timed only when triton is installed and CUDA exists."""
    return torch.cuda.is_available() and importlib.util.find_spec("triton") is not None


def _batched(
    cfg: SpeedConfig,
    pq: MultiModalPQ,
    rng: np.random.Generator,
    length: int,
    batch: int,
    device: torch.device,
) -> list[dict]:
    """B users at once; figures are per user (``us``) and per batch (``batch_us``)."""
    m, d, k = cfg.n_channels, cfg.dim, cfg.k
    section = "gpu_batched" if device.type == "cuda" else "cpu_batched"
    sync = torch.cuda.synchronize if device.type == "cuda" else None
    gammas = np.full(m, 1.0 / m, dtype=np.float32)
    seq = rng.standard_normal((length, m, d), dtype=np.float32) + 1.0
    codes = codes_to_tensor(pq.encode(seq), device).unsqueeze(0).expand(batch, -1, -1, -1).contiguous()
    targets = rng.standard_normal((batch, m, d), dtype=np.float32) + 1.0
    tables = batched_tables(pq, targets, gammas).to(device)
    mask = torch.ones((batch, length), dtype=torch.bool, device=device)
    name = f"pq{pq.config.n_sub}x{pq.config.n_centroids}"
    fns: dict[str, tuple[int, Callable[[], Any]]] = {
        f"{name} torch gather": (pq.bytes_per_behaviour, lambda: batched_adc_topk(codes, tables, k, mask)),
    }
    if device.type == "cuda" and triton_available():
        from seminar.retrieval.triton_pq import triton_adc_topk

        fns[f"{name} triton kernel + torch.topk"] = (
            pq.bytes_per_behaviour,
            lambda: triton_adc_topk(codes, tables, k, mask, check_range=False),
        )
    dtypes = (torch.float32, torch.bfloat16) if device.type == "cuda" else (torch.float32,)
    for dtype in dtypes:
        n_bytes = batch * length * m * d * (4 if dtype == torch.float32 else 2)
        if n_bytes > 16 * 2**30:
            continue
        full = (
            torch.from_numpy(seq.reshape(1, length, m * d))
            .to(device, dtype)
            .expand(batch, -1, -1)
            .contiguous()
        )
        concat = torch.from_numpy(targets.reshape(batch, m * d, 1) / m).to(device, dtype)
        fns[f"exact {str(dtype).removeprefix('torch.')} (M channels)"] = (
            m * d * (4 if dtype == torch.float32 else 2),
            lambda f=full, c=concat: torch.topk((f @ c)[..., 0], k, dim=1),
        )
    timed = time_calls({n: f for n, (_, f) in fns.items()}, cfg.min_time_s, cfg.max_repeats, cfg.rounds, sync)
    rows = [
        _row(section, length, n, (timed[n][0] / batch, timed[n][1] / batch), nbytes, batch=batch, k=k)
        for n, (nbytes, _) in fns.items()
    ]
    for r in rows:
        r["batch_us"] = r["us"] * batch
        for tag in ("float32", "bfloat16"):
            base = next((x["us"] for x in rows if f"exact {tag}" in x["method"]), None)
            if base is not None:
                r[f"speedup_vs_exact_{tag}"] = base / r["us"]
    return rows


def target_notes(rows: list[dict], config: SpeedConfig) -> list[str]:
    """Whether this run met the targets, from its own rows (the first PQ shape is the fast one)."""
    n_sub, c = config.pq_shapes[0]
    notes = []
    cpu = [
        r
        for r in rows
        if r["section"] == "cpu_single"
        and r["length"] == TARGET_LENGTH
        and r["method"].startswith(f"pq{n_sub}x{c} ")
        and "full path: search" in r["method"]
    ]
    for r in cpu:
        met = r["us"] <= 50 and r["speedup_vs_exact"] >= 5
        notes.append(
            f"CPU target ({r['method']}, k={r['k']}): {r['us']:.1f} us median"
            f" ({r['us_best']:.1f} us best round), {r['speedup_vs_exact']:.2f}x exact fp32"
            f" -> {'met' if met else 'NOT met'} (median figures)"
        )
    gpu = [r for r in rows if r["section"] == "gpu_batched" and r["length"] == TARGET_LENGTH]
    for r in gpu:
        if "triton" in r["method"] and "speedup_vs_exact_bfloat16" in r:
            met = r["batch_us"] <= 100 and r["speedup_vs_exact_bfloat16"] >= 9
            notes.append(
                f"GPU target ({r['method']}, B={r['batch']}, k={r['k']}): {r['batch_us'] / 1000:.3f} ms"
                f" per batch ({r['us']:.2f} us per user), {r['speedup_vs_exact_bfloat16']:.2f}x exact bf16"
                f" -> {'met' if met else 'NOT met'} (0.10 ms read as per batch)"
            )
    return notes


def run_speed(config: SpeedConfig) -> dict[str, Any]:
    """Time every path; returns {"config", "rows", "targets", "notes"} and writes JSON/Markdown to out."""
    rng = np.random.default_rng(config.seed)
    pqs = {shape: _train(config, rng, *shape) for shape in config.pq_shapes}
    rows: list[dict] = []
    notes: list[str] = []
    threads, faiss_threads = torch.get_num_threads(), faiss.omp_get_max_threads()
    try:
        torch.set_num_threads(1)
        faiss.omp_set_num_threads(1)
        for length in config.lengths:
            rows += _cpu_single(config, pqs, rng, length)
    finally:
        torch.set_num_threads(threads)
        faiss.omp_set_num_threads(faiss_threads)
    fast = pqs[config.pq_shapes[0]]
    for length in config.lengths:
        rows += _batched(config, fast, rng, length, config.cpu_batch, torch.device("cpu"))
    if torch.cuda.is_available():
        for length in config.lengths:
            rows += _batched(config, fast, rng, length, config.gpu_batch, torch.device("cuda"))
        if not triton_available():
            notes.append("Triton rows skipped: triton is not installed")
    else:
        notes.append("GPU section skipped: CUDA is not available on this machine")
    notes += target_notes(rows, config)
    results = {"config": asdict(config), "rows": rows, "targets": list(TARGETS), "notes": notes}
    if config.out is not None:
        out = Path(config.out)
        out.mkdir(parents=True, exist_ok=True)
        write_json_atomic(out / "speed.json", results)
        with atomic_path(out / "speed.md") as tmp:
            tmp.write_text(speed_table(results))
    return results


def speed_table(results: dict[str, Any]) -> str:
    """Markdown table of the timings with speed-ups over exact scoring measured in the same run."""
    lines = [
        "| section | L | k | method | bytes/behaviour | µs per query (median) | µs best round |"
        " µs per batch | speed-up vs exact fp32 |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in results["rows"]:
        ratio = r.get("speedup_vs_exact", r.get("speedup_vs_exact_float32", float("nan")))
        bf16 = r.get("speedup_vs_exact_bfloat16")
        batch = f"{r['batch_us']:.1f} (B={r['batch']})" if "batch_us" in r else "-"
        lines.append(
            f"| {r['section']} | {r['length']} | {r.get('k', '-')} | {r['method']} | "
            f"{r['bytes_per_behaviour']} | {r['us']:.1f} | {r['us_best']:.1f} | {batch} | "
            f"{ratio:.2f}x{'' if bf16 is None else f' ({bf16:.2f}x vs bf16)'} |"
        )
    lines += [
        "",
        "Targets:",
        *[f"- {t}" for t in results["targets"]],
        *[f"- note: {n}" for n in results["notes"]],
    ]
    return "\n".join(lines) + "\n"
