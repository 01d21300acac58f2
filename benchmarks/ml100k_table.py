"""MovieLens-100k comparison in the shape of the paper's Tables 2 and 3, mean ± std over seeds.

Models: recency, SIM (hard and soft), ETA, TWIN, QIN, SEMINAR, SEMINAR without pretraining, and
SEMINAR pretrained with a single PSU task (alignment only, next pair only, relevance only). Each
is evaluated in recommendation mode and in search mode (generated genre queries). Every finished
cell is stored as JSON and skipped on a re-run, so an interrupted grid resumes.

    .venv/bin/python benchmarks/ml100k_table.py --out runs/ml100k-table [--seeds 0 1 2]

Writes OUT/results.json and OUT/table.md.
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from seminar.data.build import BuildConfig, prepare
from seminar.data.schema import load_dataset
from seminar.data.sources.recbole import read_ml100k
from seminar.experiment import evaluate_run, finetune, pretrain
from seminar.io import write_json_atomic
from seminar.models.features import FeatureTables
from seminar.models.psu import PretrainConfig
from seminar.models.ranker import RankerConfig
from seminar.report import markdown_table
from seminar.train.trainer import LAST, TrainConfig

PSU_TASKS = {
    "full": {},
    "align": {"next_pair": False, "relevance": False},
    "next": {"align": False, "relevance": False},
    "relevance": {"next_pair": False, "align": False},
}


@dataclass(frozen=True)
class Variant:
    name: str
    model: str
    psu: str | None = None


VARIANTS = (
    Variant("recency", "recency"),
    Variant("SIM (hard)", "sim_hard"),
    Variant("SIM (soft)", "sim_soft"),
    Variant("ETA", "eta"),
    Variant("TWIN", "twin"),
    Variant("QIN", "qin"),
    Variant("SEMINAR", "seminar", "full"),
    Variant("SEMINAR w/o pretraining", "seminar"),
    Variant("SEMINAR w. align only", "seminar", "align"),
    Variant("SEMINAR w. next-pair only", "seminar", "next"),
    Variant("SEMINAR w. q-i relevance only", "seminar", "relevance"),
)
MODES = ("recommendation", "search")
COLUMNS = ("ndcg@5", "ndcg@10", "ndcg@50", "hr@10", "mrr")


def slug(name: str) -> str:
    return "".join(c if c.isalnum() else "-" for c in name.lower()).strip("-")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", type=Path, default=Path("runs/ml100k-table"))
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--max-length", type=int, default=500)
    parser.add_argument("--top-k", type=int, default=50)
    parser.add_argument("--dim", type=int, default=64)
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--pretrain-epochs", type=int, default=2)
    parser.add_argument("--positions-per-user", type=int, default=20)
    parser.add_argument("--only", nargs="*", default=None, help="variant names to run (default: all)")
    args = parser.parse_args()
    data = args.out / "data"
    prepare(read_ml100k(), data, BuildConfig(text_encoder="minilm", progress=False))
    ds = load_dataset(data)
    tables = FeatureTables.from_dataset(ds)
    variants = [v for v in VARIANTS if args.only is None or v.name in args.only]

    def train_config(seed: int, epochs: int, monitor: str = "ndcg@10") -> TrainConfig:
        return TrainConfig(
            epochs=epochs,
            max_length=args.max_length,
            positions_per_user=args.positions_per_user,
            early_stopping_patience=2,
            seed=seed,
            monitor=monitor,
            progress=False,
            eval_batch_size=128,
        )

    for seed in args.seeds:
        for variant in variants:
            cell = args.out / "cells" / f"seed{seed}" / f"{slug(variant.name)}.json"
            if cell.exists():
                continue
            started = time.perf_counter()
            psu_dir = None
            if variant.psu is not None:
                psu_dir = args.out / "psu" / f"seed{seed}" / variant.psu
                config = PretrainConfig(dim=args.dim, seed=seed, **PSU_TASKS[variant.psu])
                pretrain(
                    ds,
                    psu_dir,
                    config,
                    train_config(seed, args.pretrain_epochs, "loss"),
                    resume=(psu_dir / LAST).exists(),
                    tables=tables,
                )
            run = args.out / "runs" / f"seed{seed}" / slug(variant.name)
            finetune(
                ds,
                run,
                RankerConfig(model=variant.model, dim=args.dim, top_k=args.top_k, seed=seed),
                train_config(seed, args.epochs),
                pretrained=psu_dir,
                resume=(run / LAST).exists(),
                tables=tables,
            )
            metrics = evaluate_run(ds, run, train_config(seed, args.epochs), MODES, tables=tables)
            write_json_atomic(
                cell,
                {
                    "variant": variant.name,
                    "seed": seed,
                    "metrics": metrics,
                    "seconds": round(time.perf_counter() - started, 1),
                },
            )
            print(
                f"seed {seed} {variant.name:32s} "
                + "  ".join(f"{mode[:6]} ndcg@10={metrics[mode]['ndcg@10']:.4f}" for mode in MODES),
                flush=True,
            )
    summarise(args.out, variants, vars(args))


def summarise(out: Path, variants: list[Variant], settings: dict) -> None:
    cells = [json.loads(p.read_text()) for p in sorted((out / "cells").glob("seed*/*.json"))]
    results, sections = {}, []
    for mode in MODES:
        rows = []
        for variant in variants:
            runs = [c["metrics"][mode] for c in cells if c["variant"] == variant.name]
            if not runs:
                continue
            row = {"model": variant.name, "seeds": len(runs)}
            for col in COLUMNS:
                values = np.array([r[col] for r in runs])
                row[col] = (float(values.mean()), float(values.std()))
            rows.append(row)
            results.setdefault(mode, {})[variant.name] = {k: v for k, v in row.items() if k != "model"}
        sections.append(f"### {mode} mode\n\n" + markdown_table(rows, ["model", "seeds", *COLUMNS]))
    write_json_atomic(
        out / "results.json", {"settings": {k: str(v) for k, v in settings.items()}, "results": results}
    )
    (out / "table.md").write_text("\n\n".join(sections) + "\n")
    print("\n\n".join(sections))


if __name__ == "__main__":
    main()
