"""Latency of PQ top-K against exact float scoring, measured in the same run on the same data.

Sections: CPU single target on one thread, CPU batched (all threads), GPU batched (B users) when
CUDA exists. Figures are medians of repeated calls; nothing here asserts a time.
"""

from __future__ import annotations

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
    "CPU single thread, L=10^4: PQ top-K <= 50 us and >= 5x faster than exact float32",
    "GPU B=256, L=10^4, M=4, d=64: <= 0.10 ms and >= 9x faster than exact bf16",
)


@dataclass(frozen=True)
class SpeedConfig:
    """What to time; pq_shapes are (n_sub, n_centroids) per channel."""

    lengths: tuple[int, ...] = (1_000, 10_000, 100_000)
    k: int = 64
    n_channels: int = 4
    dim: int = 64
    pq_shapes: tuple[tuple[int, int], ...] = ((16, 16), (32, 16), (8, 256), (8, 512))
    cpu_batch: int = 8
    gpu_batch: int = 256
    table_size: int = 20_000
    min_time_s: float = 0.3
    max_repeats: int = 3000
    seed: int = 0
    out: str | None = None


def time_call(
    fn: Callable[[], Any], min_time_s: float, max_repeats: int, sync: Callable[[], None] | None = None
) -> float:
    """Median wall time of one call in microseconds (after warm-up)."""
    for _ in range(3):
        fn()
    if sync:
        sync()
    samples: list[float] = []
    total = 0.0
    while total < min_time_s and len(samples) < max_repeats:
        start = time.perf_counter()
        fn()
        if sync:
            sync()
        elapsed = time.perf_counter() - start
        samples.append(elapsed)
        total += elapsed
    return 1e6 * statistics.median(samples)


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
    section: str, length: int, method: str, us: float, bytes_per: int | None, **extra: Any
) -> dict[str, Any]:
    return {
        "section": section,
        "length": length,
        "method": method,
        "us": us,
        "bytes_per_behaviour": bytes_per,
        **extra,
    }


def _cpu_single(cfg: SpeedConfig, pqs: dict, rng: np.random.Generator, length: int) -> list[dict]:
    m, d, k = cfg.n_channels, cfg.dim, cfg.k
    gammas = np.full(m, 1.0 / m, dtype=np.float32)
    seq = rng.standard_normal((length, m, d), dtype=np.float32) + 1.0
    target = rng.standard_normal((m, d), dtype=np.float32) + 1.0
    query = (gammas[:, None] * target).sum(0)
    concat = torch.from_numpy(np.ascontiguousarray((gammas[:, None] * query[None]).reshape(-1)))
    full = torch.from_numpy(np.ascontiguousarray(seq.reshape(length, m * d)))
    merged = torch.from_numpy(np.ascontiguousarray((seq * gammas[None, :, None]).sum(1)))
    q_merged = torch.from_numpy(query)
    t = lambda fn: time_call(fn, cfg.min_time_s, cfg.max_repeats)  # noqa: E731
    rows = [
        _row(
            "cpu_single",
            length,
            "exact fp32 (M channels)",
            t(lambda: torch.topk(full @ concat, k)),
            4 * m * d,
        ),
        _row(
            "cpu_single",
            length,
            "exact fp32 (pre-merged, fixed γ)",
            t(lambda: torch.topk(merged @ q_merged, k)),
            4 * d,
        ),
    ]
    for (n_sub, c), pq in pqs.items():
        codes = pq.encode(seq)
        name = f"pq{n_sub}x{c}"
        searcher = PQSearcher(pq, codes)
        rows.append(
            _row(
                "cpu_single",
                length,
                f"{name} {searcher.backend} (ours, full path)",
                t(lambda s=searcher: s.search(target, gammas, k)),
                pq.bytes_per_behaviour,
            )
        )
        if searcher.backend == "fastscan":
            lean = PQSearcher(pq, codes, fastscan_oversample=1.0)
            rows.append(
                _row(
                    "cpu_single",
                    length,
                    f"{name} fastscan (ours, no float rescoring)",
                    t(lambda s=lean: s.search(target, gammas, k)),
                    pq.bytes_per_behaviour,
                )
            )
        raw = searcher._index
        q = concat.numpy()[None]
        rows.append(
            _row(
                "cpu_single",
                length,
                f"{name} faiss {type(raw).__name__} raw search",
                t(lambda r=raw, q=q: r.search(q, k)),
                pq.bytes_per_behaviour,
            )
        )
        if length <= 10_000:
            numpy_searcher = PQSearcher(pq, codes, backend="numpy")
            rows.append(
                _row(
                    "cpu_single",
                    length,
                    f"{name} numpy gather",
                    t(lambda s=numpy_searcher: s.search(target, gammas, k)),
                    pq.bytes_per_behaviour,
                )
            )
    for n_bytes, fastscan in ((32, True), (32, False)):
        index = _merged_faiss(cfg, rng, n_bytes, fastscan)
        index.add(merged.numpy())
        q = q_merged.numpy()[None]
        rows.append(
            _row(
                "cpu_single",
                length,
                f"faiss {type(index).__name__} on pre-merged vectors",
                t(lambda i=index, q=q: i.search(q, k)),
                n_bytes,
            )
        )
    exact = rows[0]["us"]
    for r in rows:
        r["speedup_vs_exact"] = exact / r["us"]
    return rows


def _batched(
    cfg: SpeedConfig,
    pq: MultiModalPQ,
    rng: np.random.Generator,
    length: int,
    batch: int,
    device: torch.device,
) -> list[dict]:
    m, d, k = cfg.n_channels, cfg.dim, cfg.k
    section = "gpu_batched" if device.type == "cuda" else "cpu_batched"
    sync = torch.cuda.synchronize if device.type == "cuda" else None
    gammas = np.full(m, 1.0 / m, dtype=np.float32)
    seq = rng.standard_normal((length, m, d), dtype=np.float32) + 1.0
    codes = codes_to_tensor(pq.encode(seq), device).unsqueeze(0).expand(batch, -1, -1, -1).contiguous()
    targets = rng.standard_normal((batch, m, d), dtype=np.float32) + 1.0
    tables = batched_tables(pq, targets, gammas).to(device)
    mask = torch.ones((batch, length), dtype=torch.bool, device=device)
    t = lambda fn: time_call(fn, cfg.min_time_s, cfg.max_repeats, sync) / batch  # noqa: E731
    rows = [
        _row(
            section,
            length,
            f"pq{pq.config.n_sub}x{pq.config.n_centroids} torch gather (per user)",
            t(lambda: batched_adc_topk(codes, tables, k, mask)),
            pq.bytes_per_behaviour,
            batch=batch,
        )
    ]
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
        name = f"exact {str(dtype).removeprefix('torch.')} (M channels, per user)"
        rows.append(
            _row(
                section,
                length,
                name,
                t(lambda f=full, c=concat: torch.topk((f @ c)[..., 0], k, dim=1)),
                m * d * (4 if dtype == torch.float32 else 2),
                batch=batch,
            )
        )
        del full
    for r in rows:
        for tag in ("float32", "bfloat16"):
            base = next((x["us"] for x in rows if tag in x["method"]), None)
            if base is not None:
                r[f"speedup_vs_exact_{tag}"] = base / r["us"]
    return rows


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
    else:
        notes.append("GPU section skipped: CUDA is not available on this machine")
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
        "| section | L | method | bytes/behaviour | µs per query | speed-up vs exact fp32 |",
        "|---|---|---|---|---|---|",
    ]
    for r in results["rows"]:
        ratio = r.get("speedup_vs_exact", r.get("speedup_vs_exact_float32", float("nan")))
        bf16 = r.get("speedup_vs_exact_bfloat16")
        lines.append(
            f"| {r['section']} | {r['length']} | {r['method']} | {r['bytes_per_behaviour']} | "
            f"{r['us']:.1f} | {ratio:.2f}x{'' if bf16 is None else f' ({bf16:.2f}x vs bf16)'} |"
        )
    lines += [
        "",
        "Targets:",
        *[f"- {t}" for t in results["targets"]],
        *[f"- note: {n}" for n in results["notes"]],
    ]
    return "\n".join(lines) + "\n"
