"""Write a small shop's logs as CSV files, to try `seminar prepare tables` on data of your own shape.

    python examples/make_toy_tables.py --out examples/toy

writes ``interactions.csv`` (user, sku, ts as ISO datetimes, search_text: empty for a recommendation
click), ``items.csv`` (sku, name, brand, tags separated by ``|``) and ``users.csv`` (user, age_band,
country, plan: a profile, left empty for a few users). Users favour two of six departments, and a
search query names the department of the item clicked after it.
"""

from __future__ import annotations

import argparse
import csv
from datetime import datetime, timedelta, timezone
from pathlib import Path

import numpy as np

DEPARTMENTS = ["garden", "kitchen", "books", "music", "sports", "toys"]
BRANDS = ["acme", "globex", "initech", "umbrella", "hooli"]
AGE_BANDS = ["18-24", "25-34", "35-49", "50+"]
COUNTRIES = ["de", "fr", "it", "nl", "uk"]


def main() -> None:
    formatter = argparse.RawDescriptionHelpFormatter
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=formatter)
    parser.add_argument("--out", type=Path, default=Path("examples/toy"))
    parser.add_argument("--users", type=int, default=300)
    parser.add_argument("--items", type=int, default=600)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    rng = np.random.default_rng(args.seed)
    args.out.mkdir(parents=True, exist_ok=True)

    department = rng.integers(0, len(DEPARTMENTS), args.items)
    with (args.out / "items.csv").open("w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["sku", "name", "brand", "tags"])
        for i in range(args.items):
            dept = DEPARTMENTS[department[i]]
            tags = "|".join(sorted({dept, rng.choice(["sale", "new", "classic", "gift"])}))
            writer.writerow([f"sku{i:04d}", f"{dept} item {i}", rng.choice(BRANDS), tags])

    start = datetime(2024, 1, 1, tzinfo=timezone.utc)
    with (args.out / "interactions.csv").open("w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["user", "sku", "ts", "search_text"])
        for u in range(args.users):
            favourite = rng.choice(len(DEPARTMENTS), size=2, replace=False)
            when = start + timedelta(minutes=int(rng.integers(0, 60 * 24 * 30)))
            for _ in range(int(rng.integers(20, 120))):
                liked = rng.random() < 0.8
                dept = favourite[rng.integers(0, 2)] if liked else rng.integers(0, len(DEPARTMENTS))
                item = int(rng.choice(np.flatnonzero(department == dept)))
                query = f"{DEPARTMENTS[dept]} {rng.choice(['cheap', 'best', 'gift', ''])}".strip()
                search = rng.random() < 0.4
                writer.writerow([f"user{u:03d}", f"sku{item:04d}", when.isoformat(), query if search else ""])
                when += timedelta(minutes=int(rng.integers(1, 600)))
    profiles = np.random.default_rng([args.seed, 1])  # its own stream: the logs above stay the same
    with (args.out / "users.csv").open("w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["user", "age_band", "country", "plan"])
        for u in range(args.users):
            row = [profiles.choice(AGE_BANDS), profiles.choice(COUNTRIES), profiles.choice(["free", "plus"])]
            if profiles.random() < 0.05:
                row[profiles.integers(0, 3)] = ""  # not every profile is complete
            writer.writerow([f"user{u:03d}", *row])
    print(f"wrote {args.out / 'interactions.csv'}, {args.out / 'items.csv'} and {args.out / 'users.csv'}")


if __name__ == "__main__":
    main()
