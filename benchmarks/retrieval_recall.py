"""Run the synthetic Recall@K grid of the paper (section 4.1) and write table, JSON and plot.

    PYTHONPATH=src python benchmarks/retrieval_recall.py --lengths 10000 --out runs/retrieval_L10000
"""

from __future__ import annotations

import argparse
from dataclasses import replace

from seminar.retrieval.bench import RecallConfig, run_recall_grid
from seminar.retrieval.report import recall_table


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", default="runs/retrieval")
    parser.add_argument("--lengths", default="2000,5000,10000")
    parser.add_argument("--methods", default=None, help="comma-separated subset (default: all)")
    parser.add_argument("--n-users", type=int, default=3)
    parser.add_argument("--n-targets", type=int, default=10)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    overrides = {
        "out": args.out,
        "lengths": tuple(int(v) for v in args.lengths.split(",")),
        "n_users": args.n_users,
        "n_targets": args.n_targets,
        "seed": args.seed,
    }
    if args.methods:
        overrides["methods"] = tuple(args.methods.split(","))
    print(recall_table(run_recall_grid(replace(RecallConfig(), **overrides))))


if __name__ == "__main__":
    main()
