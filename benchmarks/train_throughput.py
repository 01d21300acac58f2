"""Training throughput (training targets/s) of TWIN and SEMINAR fine-tuning, measured in the same run.

Two data paths are timed side by side: ``one`` gives every target its own window (TrainSamples,
the path training used before), ``many`` scores ``--targets-per-window`` consecutive targets on
one shared window (WindowSamples, the default now). Both score each target against the same
number of sampled negatives, so a target costs the same work in the model either way.
Defaults: L=1000, K=200, d=64, 4 heads, 256 targets per step, on synthetic lifelong data. On CUDA
the step runs under bf16 autocast. Run:
    .venv/bin/python benchmarks/train_throughput.py [--device cuda] [--length 1000 --top-k 200]
Steps of all timed (model, path) pairs alternate; each figure is the median step. Prints
targets/s and SEMINAR's step time relative to TWIN's (target on an H100: at least 100,000
samples/s, SEMINAR at most 1.3x TWIN). Asserts nothing.

``--data memory`` draws the dataset with numpy alone (same shapes: four channels with 64-d content
vectors, item and user attributes, 30% search behaviours), for machines without polars;
``--models twin seminar sasrec`` adds SASRec (many-target windows only); ``--json PATH`` also
writes the figures as JSON.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from seminar.data.loader import TrainSamples, WindowConfig, WindowSamples
from seminar.data.schema import SeminarDataset, validate
from seminar.models.features import FeatureTables
from seminar.models.ranker import Ranker, RankerConfig
from seminar.models.reference import SasRec

PATHS = ("one", "many")
MODELS = ("twin", "seminar", "sasrec")
TARGET_SAMPLES_PER_S = 100_000
TARGET_RATIO = 1.3


@dataclass(frozen=True)
class ThroughputConfig:
    """What one throughput run times; the defaults are the issue's figures (L=1000, K=200, d=64)."""

    length: int = 1000
    top_k: int = 200
    dim: int = 64
    heads: int = 4
    batch: int = 256  # training targets per step
    negatives: int = 1
    targets_per_window: int = 64
    paths: tuple[str, ...] = PATHS
    models: tuple[str, ...] = ("twin", "seminar")
    steps: int = 12
    warmup: int = 3
    bf16: bool = True
    data: str = "synthetic"  # synthetic (the polars build) | memory (numpy only)
    users: int = 600
    items: int = 20_000


def step_timer(
    model: nn.Module,
    batches: list[dict[str, torch.Tensor]],
    device: torch.device,
    bf16: bool,
    warmup: int = 3,
) -> Callable[[int], float]:
    """A function that runs training step i (Adam, bf16 autocast on CUDA) and returns its seconds."""
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16 and device.type == "cuda")

    def one(i: int) -> float:
        if device.type == "cuda":
            torch.cuda.synchronize()
        started = time.perf_counter()
        with autocast:
            loss, _ = model(batches[i % len(batches)])
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if device.type == "cuda":
            torch.cuda.synchronize()
        return time.perf_counter() - started

    for i in range(warmup):
        one(i)
    return one


def make_batches(
    samples: TrainSamples | WindowSamples, per_step: int, device: torch.device, count: int = 4
) -> list[dict[str, torch.Tensor]]:
    g = torch.Generator().manual_seed(0)
    batches = []
    for _ in range(count):
        index = torch.randint(0, len(samples), (per_step,), generator=g).tolist()
        batches.append({k: v.to(device) for k, v in samples.__getitems__(index).items()})
    return batches


def synthetic_dataset(config: ThroughputConfig) -> SeminarDataset:
    """The project's synthetic lifelong data through the real build (needs polars)."""
    from seminar.data.build import BuildConfig, build_dataset
    from seminar.data.schema import load_dataset
    from seminar.data.sources.synthetic import SyntheticConfig, generate_synthetic

    root = Path(tempfile.mkdtemp(prefix="seminar-throughput-")) / "data"
    tables = generate_synthetic(
        SyntheticConfig(
            users=config.users,
            items=config.items,
            mean_length=2 * config.length,
            max_length=4 * config.length,
        )
    )
    build_dataset(tables, root, BuildConfig(text_encoder="none", progress=False))
    return load_dataset(root, mmap=False)


def _csr(
    rows: int, per_row: int, low: int, high: int, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """``per_row`` random ids in [low, high] for each of ``rows`` rows, as (offsets, ids)."""
    offsets = np.arange(rows + 1, dtype=np.int64) * per_row
    return offsets, rng.integers(low, high + 1, rows * per_row).astype(np.int32)


def memory_dataset(config: ThroughputConfig, seed: int = 0) -> SeminarDataset:
    """A validated in-memory dataset shaped like the synthetic build, drawn with numpy alone.

    Throughput depends on shapes, not on what the ids mean, so uniform ids stand in for the
    generator's topics; it lets the benchmark run where polars is not installed.
    """
    rng = np.random.default_rng(seed)
    users, items, queries, dim = config.users, config.items, 512, 64
    sigma = 0.75
    raw = rng.lognormal(np.log(2 * config.length) - sigma**2 / 2, sigma, users)
    lengths = np.clip(np.rint(raw), 3, 4 * config.length).astype(np.int64)
    offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
    size = int(offsets[-1])
    search = rng.random(size) < 0.3
    query_ids = np.where(search, rng.integers(2, queries + 2, size), 1).astype(np.int32)  # 1: empty query
    timestamps = 1_500_000_000 + np.cumsum(rng.integers(1, 3600, size)).astype(np.int64)
    attr_offsets, attr_ids = _csr(items, 2, 1, 532, rng)  # category and author of items 1..n
    attr_offsets = np.concatenate([[0], attr_offsets]).astype(np.int64)  # item id 0 (padding) has none
    user_attr_offsets, user_attr_ids = _csr(users, 2, 1, 40, rng)  # favourite topic and region

    def vectors(rows: int, norm: float) -> np.ndarray:
        v = rng.standard_normal((rows, dim)).astype(np.float32)
        return (norm * v / np.linalg.norm(v, axis=1, keepdims=True)).astype(np.float16)

    negatives = rng.integers(1, items + 1, (users, 99)).astype(np.int32)
    ds = SeminarDataset(
        root=Path("memory"),
        manifest={
            "counts": {
                "users": users,
                "items": items,
                "queries": queries + 1,
                "attributes": 532,
                "user_attributes": 40,
                "behaviours": size,
            },
            "split": {"min_behaviours": 3, "negatives": 99},
            "user_fields": ["favourite_topic", "region"],
            "vectors": {name: {"dim": dim} for name in ("query_text", "item_text", "item_image")},
            "source": "memory",
            "seed": seed,
        },
        offsets=offsets,
        items=rng.integers(1, items + 1, size).astype(np.int32),
        queries=query_ids,
        timestamps=timestamps,
        behaviour=search.astype(np.int8),
        attr_offsets=attr_offsets,
        attr_ids=attr_ids,
        representative_query=rng.integers(1, queries + 2, items + 1).astype(np.int32),
        test_negatives=negatives,
        valid_negatives=negatives[:, ::-1].copy(),
        vectors={
            "query_text": vectors(queries + 2, 0.5),
            "item_text": vectors(items + 1, 1.0),
            "item_image": vectors(items + 1, 2.0),
        },
        user_attr_offsets=user_attr_offsets,
        user_attr_ids=user_attr_ids,
    )
    validate(ds)
    return ds


def make_model(name: str, features: FeatureTables, config: ThroughputConfig) -> nn.Module:
    """TWIN, SEMINAR (the ranker) or SASRec at the run's d, heads and K."""
    ranker_config = RankerConfig(model=name, dim=config.dim, heads=config.heads, top_k=config.top_k)
    return SasRec(features, ranker_config) if name == "sasrec" else Ranker(features, ranker_config)


def measure(ds: SeminarDataset, config: ThroughputConfig, device: torch.device) -> dict[str, Any]:
    """Median step time and targets/s of every (model, path) pair, steps interleaved across pairs."""
    window = WindowConfig(
        max_length=config.length,
        train_negatives=config.negatives,
        targets_per_window=config.targets_per_window,
    )
    batches = {}
    if "one" in config.paths:
        batches["one"] = make_batches(TrainSamples(ds, window), config.batch, device)
    if "many" in config.paths:
        per_step = max(1, config.batch // config.targets_per_window)
        batches["many"] = make_batches(WindowSamples(ds, window), per_step, device)
    features = FeatureTables.from_dataset(ds)
    pairs = [(m, p) for p in batches for m in config.models if not (m == "sasrec" and p == "one")]
    timers = {
        (name, path): step_timer(
            make_model(name, features, config).to(device), batches[path], device, config.bf16, config.warmup
        )
        for name, path in pairs
    }
    targets = {path: int(batch[0]["target_items"].numel()) for path, batch in batches.items()}
    # steps alternate between the models and paths, so a burst of load elsewhere hits all alike
    times: dict[tuple[str, str], list[float]] = {key: [] for key in timers}
    for i in range(config.steps):
        for key, step in timers.items():
            times[key].append(step(i))
    rows = []
    for (name, path), values in times.items():
        seconds = statistics.median(values)
        rows.append(
            {
                "model": name,
                "path": path,
                "targets_per_step": targets[path],
                "step_ms": 1000 * seconds,
                "targets_per_s": targets[path] / seconds,
            }
        )
    ratios = {}
    for path in batches:
        if ("twin", path) in times and ("seminar", path) in times:
            twin, seminar = times[("twin", path)], times[("seminar", path)]
            pair = [a / b for a, b in zip(seminar, twin, strict=True)]
            median = statistics.median(seminar) / statistics.median(twin)
            ratios[path] = {"median": median, "min": min(pair), "max": max(pair)}
    return {
        "config": asdict(config),
        "device": str(device),
        "autocast_bf16": config.bf16 and device.type == "cuda",
        "threads": torch.get_num_threads(),
        "rows": rows,
        "seminar_over_twin": ratios,
        "targets": {"samples_per_s": TARGET_SAMPLES_PER_S, "seminar_over_twin": TARGET_RATIO},
    }


def report(results: dict[str, Any]) -> str:
    """The printed table: one line per (model, path), then SEMINAR / TWIN per path."""
    c = results["config"]
    lines = [
        f"device={results['device']} L={c['length']} K={c['top_k']} d={c['dim']} heads={c['heads']} "
        f"negatives={c['negatives']} targets/window={c['targets_per_window']} data={c['data']} "
        f"bf16={results['autocast_bf16']} threads={results['threads']}"
    ]
    for r in results["rows"]:
        lines.append(
            f"{r['model']:8s} {r['path']:4s} {r['targets_per_step']:5d} targets/step"
            f"  step {r['step_ms']:9.1f} ms"
            f"   {r['targets_per_s']:12,.0f} targets/s   (target >= {TARGET_SAMPLES_PER_S:,} for SEMINAR)"
        )
    for path, ratio in results["seminar_over_twin"].items():
        lines.append(
            f"{path}: SEMINAR / TWIN step time {ratio['median']:.2f} (medians; per interleaved pair "
            f"{ratio['min']:.2f}-{ratio['max']:.2f})   (target <= {TARGET_RATIO})"
        )
    by_key = {(r["model"], r["path"]): r["targets_per_s"] for r in results["rows"]}
    for name in ("twin", "seminar"):
        if (name, "one") in by_key and (name, "many") in by_key:
            gain = by_key[(name, "many")] / by_key[(name, "one")]
            lines.append(f"{name}: many-target path {gain:.1f}x the targets/s of one window per target")
    return "\n".join(lines)


def main() -> None:
    defaults = ThroughputConfig()
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--length", type=int, default=defaults.length)
    parser.add_argument("--top-k", type=int, default=defaults.top_k)
    parser.add_argument("--dim", type=int, default=defaults.dim)
    parser.add_argument("--heads", type=int, default=defaults.heads)
    parser.add_argument("--batch", type=int, default=defaults.batch, help="training targets per step")
    parser.add_argument(
        "--negatives", type=int, default=defaults.negatives, help="sampled negatives per target"
    )
    parser.add_argument("--targets-per-window", type=int, default=defaults.targets_per_window)
    parser.add_argument("--paths", nargs="+", default=list(defaults.paths), choices=PATHS)
    parser.add_argument("--models", nargs="+", default=list(defaults.models), choices=MODELS)
    parser.add_argument("--steps", type=int, default=defaults.steps, help="timed steps per model and path")
    parser.add_argument(
        "--warmup", type=int, default=defaults.warmup, help="untimed steps per model and path"
    )
    parser.add_argument("--data", default=defaults.data, choices=["synthetic", "memory"])
    parser.add_argument("--users", type=int, default=defaults.users)
    parser.add_argument("--items", type=int, default=defaults.items)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--no-bf16", action="store_true")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--json", type=Path, default=None, help="also write the figures here")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    config = ThroughputConfig(
        length=args.length,
        top_k=args.top_k,
        dim=args.dim,
        heads=args.heads,
        batch=args.batch,
        negatives=args.negatives,
        targets_per_window=args.targets_per_window,
        paths=tuple(args.paths),
        models=tuple(args.models),
        steps=args.steps,
        warmup=args.warmup,
        bf16=not args.no_bf16,
        data=args.data,
        users=args.users,
        items=args.items,
    )
    ds = memory_dataset(config) if config.data == "memory" else synthetic_dataset(config)
    results = measure(ds, config, torch.device(args.device))
    print(report(results))
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
