"""Wall time and peak memory of `prepare` on KuaiSAR-scale synthetic data (25k users, ~25M behaviours).

Run: .venv/bin/python benchmarks/data_prepare.py [--users 25000 --mean-length 1000 --out /tmp/bench-data]
Target: under 10 minutes and under 8 GB peak on a 2-core machine. Prints figures; asserts nothing.
"""

from __future__ import annotations

import argparse
import resource
import tempfile
import time
from pathlib import Path

from seminar.data.build import BuildConfig, build_dataset
from seminar.data.schema import load_dataset
from seminar.data.sources.synthetic import SyntheticConfig, generate_synthetic


def peak_rss_gb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2  # Linux reports KiB


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--users", type=int, default=25_000)
    parser.add_argument("--items", type=int, default=450_000)
    parser.add_argument("--mean-length", type=float, default=1000.0)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    out = args.out or Path(tempfile.mkdtemp(prefix="seminar-bench-")) / "data"

    started = time.perf_counter()
    tables = generate_synthetic(
        SyntheticConfig(users=args.users, items=args.items, mean_length=args.mean_length)
    )
    generated = time.perf_counter()
    build_dataset(tables, out, BuildConfig(text_encoder="none"), overwrite=True)
    del tables
    built = time.perf_counter()
    ds = load_dataset(out)
    loaded = time.perf_counter()
    behaviours = ds.manifest["counts"]["behaviours"]
    print(f"behaviours            {behaviours:,} ({ds.n_users:,} users, {ds.n_items:,} items)")
    print(f"generate synthetic    {generated - started:8.1f} s")
    print(f"prepare (build)       {built - generated:8.1f} s   target < 600 s")
    print(f"load + validate       {loaded - built:8.1f} s")
    print(f"peak RSS              {peak_rss_gb():8.2f} GB  target < 8 GB")


if __name__ == "__main__":
    main()
