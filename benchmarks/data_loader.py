"""Training-loader throughput at L=1000, batch 256, on CPU (samples/s), through a real DataLoader.

Run: .venv/bin/python benchmarks/data_loader.py --data DIR   (a prepared dataset; default: builds a
synthetic one with mean length 1000). Target: at least 20,000 samples/s. Prints figures only.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch

from seminar.data.build import BuildConfig, build_dataset
from seminar.data.loader import TrainSamples, WindowConfig, make_loader
from seminar.data.schema import load_dataset
from seminar.data.sources.synthetic import SyntheticConfig, generate_synthetic


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--data", type=Path, default=None)
    parser.add_argument("--length", type=int, default=1000)
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--batches", type=int, default=200)
    parser.add_argument("--workers", type=int, default=0)
    parser.add_argument("--in-memory", action="store_true", help="load arrays into RAM instead of mmap")
    args = parser.parse_args()
    torch.set_num_threads(1)
    data = args.data
    if data is None:
        data = Path(tempfile.mkdtemp(prefix="seminar-loader-")) / "data"
        tables = generate_synthetic(SyntheticConfig(users=2000, items=50_000, mean_length=1000))
        build_dataset(tables, data, BuildConfig(text_encoder="none", progress=False))
    ds = load_dataset(data, mmap=not args.in_memory)
    samples = TrainSamples(ds, WindowConfig(max_length=args.length, train_negatives=1))
    loader = make_loader(
        samples, batch_size=args.batch, shuffle=True, num_workers=args.workers, drop_last=True
    )
    it = iter(loader)
    for _ in range(5):  # warm up page cache and workers
        next(it)
    n = 0
    started = time.perf_counter()
    for _ in range(args.batches):
        batch = next(it)
        n += batch["user"].shape[0]
    elapsed = time.perf_counter() - started
    print(f"L={args.length} batch={args.batch} workers={args.workers} mmap={not args.in_memory}")
    print(f"loader throughput     {n / elapsed:12,.0f} samples/s   target >= 20,000")
    print(f"per batch             {1000 * elapsed / args.batches:12.2f} ms")


if __name__ == "__main__":
    main()
