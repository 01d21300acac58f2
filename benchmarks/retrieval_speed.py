"""Print PQ top-K latency next to exact scoring measured in the same run (CPU; GPU when CUDA exists).

    PYTHONPATH=src python benchmarks/retrieval_speed.py --out runs/retrieval_speed
"""

from __future__ import annotations

import argparse
from dataclasses import replace

from seminar.retrieval.speed import SpeedConfig, run_speed, speed_table


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", default="runs/retrieval_speed")
    parser.add_argument("--lengths", default="1000,10000,100000")
    parser.add_argument("--k", type=int, default=64)
    parser.add_argument("--min-time", type=float, default=0.3, help="seconds of repeated calls per figure")
    args = parser.parse_args()
    config = replace(
        SpeedConfig(),
        out=args.out,
        lengths=tuple(int(v) for v in args.lengths.split(",")),
        k=args.k,
        min_time_s=args.min_time,
    )
    print(speed_table(run_speed(config)))


if __name__ == "__main__":
    main()
