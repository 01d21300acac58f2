"""Print PQ top-K latency next to exact scoring measured in the same run (CPU; GPU when CUDA exists).

    PYTHONPATH=src python benchmarks/retrieval_speed.py --out runs/retrieval_speed
    PYTHONPATH=src python benchmarks/retrieval_speed.py --lengths 10000 --k 64 --min-time 2 --rounds 20

CPU single-target rows run on one thread (torch and faiss). Each row is the median over all calls and
the quietest round's median; methods are timed in interleaved rounds (see seminar.retrieval.speed).
"""

from __future__ import annotations

import argparse
from dataclasses import replace

from seminar.retrieval.speed import SpeedConfig, run_speed, speed_table


def main() -> None:
    defaults = SpeedConfig()
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--out", default="runs/retrieval_speed")
    parser.add_argument("--lengths", default=",".join(str(v) for v in defaults.lengths))
    parser.add_argument("--k", type=int, default=defaults.k)
    parser.add_argument("--min-time", type=float, default=defaults.min_time_s, help="seconds per figure")
    parser.add_argument("--rounds", type=int, default=defaults.rounds, help="interleaved timing rounds")
    parser.add_argument("--gpu-batch", type=int, default=defaults.gpu_batch)
    args = parser.parse_args()
    config = replace(
        defaults,
        out=args.out,
        lengths=tuple(int(v) for v in args.lengths.split(",")),
        k=args.k,
        min_time_s=args.min_time,
        rounds=args.rounds,
        gpu_batch=args.gpu_batch,
    )
    print(speed_table(run_speed(config)))


if __name__ == "__main__":
    main()
