"""Training throughput (samples/s) of TWIN and SEMINAR fine-tuning, measured in the same run.

Defaults follow the issue: L=1000, K=200, d=64, 4 heads, batch 256, on synthetic lifelong data.
On CUDA the step runs under bf16 autocast. Run:
    .venv/bin/python benchmarks/train_throughput.py [--device cuda] [--length 1000 --top-k 200]
Steps of the two models alternate; each figure is the median step. Prints samples/s per model
and SEMINAR's step time relative to TWIN's (target on an H100: at
least 100,000 samples/s, SEMINAR at most 1.3x TWIN). Asserts nothing.
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
from seminar.data.loader import TrainSamples, WindowConfig
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--length", type=int, default=1000)
    parser.add_argument("--top-k", type=int, default=200)
    parser.add_argument("--dim", type=int, default=64)
    parser.add_argument("--heads", type=int, default=4)
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--steps", type=int, default=12, help="timed steps per model")
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
    samples = TrainSamples(ds, WindowConfig(max_length=args.length, train_negatives=1))
    g = torch.Generator().manual_seed(0)
    batches = []
    for _ in range(4):
        index = torch.randint(0, len(samples), (args.batch,), generator=g).tolist()
        batches.append({k: v.to(device) for k, v in samples.__getitems__(index).items()})
    features = FeatureTables.from_dataset(ds)
    timers = {
        name: step_timer(
            Ranker(features, RankerConfig(model=name, dim=args.dim, heads=args.heads, top_k=args.top_k)).to(
                device
            ),
            batches,
            device,
            bf16=not args.no_bf16,
        )
        for name in ("twin", "seminar")
    }
    # steps alternate between the models, so a burst of load from elsewhere hits both alike
    times: dict[str, list[float]] = {name: [] for name in timers}
    for i in range(args.steps):
        for name, step in timers.items():
            times[name].append(step(i))
    results = {name: statistics.median(values) for name, values in times.items()}
    print(
        f"device={device} L={args.length} K={args.top_k} d={args.dim} heads={args.heads} batch={args.batch} "
        f"threads={torch.get_num_threads()}"
    )
    for name, seconds in results.items():
        print(f"{name:8s} step {1000 * seconds:9.1f} ms   {args.batch / seconds:12,.0f} samples/s")
    ratios = [a / b for a, b in zip(times["seminar"], times["twin"], strict=True)]
    print(
        f"SEMINAR / TWIN step time: {results['seminar'] / results['twin']:.2f} (medians; "
        f"per interleaved pair {min(ratios):.2f}-{max(ratios):.2f})   (target <= 1.3)"
    )


if __name__ == "__main__":
    main()
