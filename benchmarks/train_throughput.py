"""Training throughput (samples/s) of TWIN and SEMINAR fine-tuning, measured in the same run.

Defaults follow the issue: L=1000, K=200, d=64, 4 heads, batch 256, on synthetic lifelong data.
On CUDA the step runs under bf16 autocast. Run:
    .venv/bin/python benchmarks/train_throughput.py [--device cuda] [--length 1000 --top-k 200]
Prints samples/s per model and SEMINAR's step time relative to TWIN's (target on an H100: at
least 100,000 samples/s, SEMINAR at most 1.3x TWIN). Asserts nothing.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch

from seminar.data.build import BuildConfig, build_dataset
from seminar.data.loader import TrainSamples, WindowConfig
from seminar.data.schema import load_dataset
from seminar.data.sources.synthetic import SyntheticConfig, generate_synthetic
from seminar.models.features import FeatureTables
from seminar.models.ranker import Ranker, RankerConfig


def step_seconds(
    model: Ranker, batches: list[dict[str, torch.Tensor]], device: torch.device, steps: int, bf16: bool
) -> float:
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16 and device.type == "cuda")

    def one(batch: dict[str, torch.Tensor]) -> None:
        with autocast:
            loss, _ = model(batch)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    for batch in batches[:3]:  # warm-up
        one(batch)
    if device.type == "cuda":
        torch.cuda.synchronize()
    started = time.perf_counter()
    for i in range(steps):
        one(batches[i % len(batches)])
    if device.type == "cuda":
        torch.cuda.synchronize()
    return (time.perf_counter() - started) / steps


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--length", type=int, default=1000)
    parser.add_argument("--top-k", type=int, default=200)
    parser.add_argument("--dim", type=int, default=64)
    parser.add_argument("--heads", type=int, default=4)
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--steps", type=int, default=10)
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
    results = {}
    for name in ("twin", "seminar"):
        model = Ranker(
            features, RankerConfig(model=name, dim=args.dim, heads=args.heads, top_k=args.top_k)
        ).to(device)
        results[name] = step_seconds(model, batches, device, args.steps, bf16=not args.no_bf16)
    print(
        f"device={device} L={args.length} K={args.top_k} d={args.dim} heads={args.heads} batch={args.batch} "
        f"threads={torch.get_num_threads()}"
    )
    for name, seconds in results.items():
        print(f"{name:8s} step {1000 * seconds:9.1f} ms   {args.batch / seconds:12,.0f} samples/s")
    print(f"SEMINAR / TWIN step time: {results['seminar'] / results['twin']:.2f}   (target <= 1.3)")


if __name__ == "__main__":
    main()
