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
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import torch

from seminar.data.build import BuildConfig, build_dataset
from seminar.data.loader import TrainSamples, WindowConfig, WindowSamples
from seminar.data.schema import load_dataset
from seminar.data.sources.synthetic import SyntheticConfig, generate_synthetic
from seminar.models.features import FeatureTables
from seminar.models.ranker import Ranker, RankerConfig


def step_timer(
    model: Ranker, batches: list[dict[str, torch.Tensor]], device: torch.device, bf16: bool
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

    for i in range(3):  # warm-up
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--length", type=int, default=1000)
    parser.add_argument("--top-k", type=int, default=200)
    parser.add_argument("--dim", type=int, default=64)
    parser.add_argument("--heads", type=int, default=4)
    parser.add_argument("--batch", type=int, default=256, help="training targets per step")
    parser.add_argument("--negatives", type=int, default=1, help="sampled negatives per target")
    parser.add_argument("--targets-per-window", type=int, default=64)
    parser.add_argument("--paths", nargs="+", default=["one", "many"], choices=["one", "many"])
    parser.add_argument("--steps", type=int, default=12, help="timed steps per model and path")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--no-bf16", action="store_true")
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    root = Path(tempfile.mkdtemp(prefix="seminar-throughput-")) / "data"
    tables = generate_synthetic(
        SyntheticConfig(users=600, items=20_000, mean_length=2 * args.length, max_length=4 * args.length)
    )
    build_dataset(tables, root, BuildConfig(text_encoder="none", progress=False))
    ds = load_dataset(root, mmap=False)
    window = WindowConfig(
        max_length=args.length, train_negatives=args.negatives, targets_per_window=args.targets_per_window
    )
    batches = {}
    if "one" in args.paths:
        batches["one"] = make_batches(TrainSamples(ds, window), args.batch, device)
    if "many" in args.paths:
        per_step = max(1, args.batch // args.targets_per_window)
        batches["many"] = make_batches(WindowSamples(ds, window), per_step, device)
    features = FeatureTables.from_dataset(ds)
    config = {"dim": args.dim, "heads": args.heads, "top_k": args.top_k}
    timers = {
        (name, path): step_timer(
            Ranker(features, RankerConfig(model=name, **config)).to(device),  # type: ignore[arg-type]
            batches[path],
            device,
            bf16=not args.no_bf16,
        )
        for path in batches
        for name in ("twin", "seminar")
    }
    targets = {path: int(batch[0]["target_items"].numel()) for path, batch in batches.items()}
    # steps alternate between the models and paths, so a burst of load elsewhere hits all alike
    times: dict[tuple[str, str], list[float]] = {key: [] for key in timers}
    for i in range(args.steps):
        for key, step in timers.items():
            times[key].append(step(i))
    results = {key: statistics.median(values) for key, values in times.items()}
    print(
        f"device={device} L={args.length} K={args.top_k} d={args.dim} heads={args.heads} "
        f"negatives={args.negatives} targets/window={args.targets_per_window} "
        f"threads={torch.get_num_threads()}"
    )
    for (name, path), seconds in results.items():
        print(
            f"{name:8s} {path:4s} {targets[path]:5d} targets/step  step {1000 * seconds:9.1f} ms"
            f"   {targets[path] / seconds:12,.0f} targets/s"
        )
    for path in batches:
        twin, seminar = times[("twin", path)], times[("seminar", path)]
        ratios = [a / b for a, b in zip(seminar, twin, strict=True)]
        ratio = results[("seminar", path)] / results[("twin", path)]
        print(
            f"{path}: SEMINAR / TWIN step time {ratio:.2f} (medians; per interleaved pair "
            f"{min(ratios):.2f}-{max(ratios):.2f})   (target <= 1.3)"
        )
    if len(batches) == 2:
        for name in ("twin", "seminar"):
            one = targets["one"] / results[(name, "one")]
            many = targets["many"] / results[(name, "many")]
            print(f"{name}: many-target path {many / one:.1f}x the targets/s of one window per target")


if __name__ == "__main__":
    main()
