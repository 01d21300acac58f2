"""Write a prepared dataset as one-line-per-user sequence files, to try `seminar prepare sequences`.

    seminar prepare ml-100k --out data/ml-100k
    python examples/ml100k_as_sequences.py --data data/ml-100k --out data/raw

writes ``ml-100k.txt`` (each line: a user number, then that user's item numbers in time order) and
``ml-100k_item2attributes.json`` (item number -> the ids of its genres), the shape of the widely
shared S3-Rec benchmark files. The result is an attributes-only dataset: no text, no queries, no
timestamps. ``configs/ml100k-sequences.yaml`` runs a small grid on it.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from seminar.data.schema import load_dataset


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--data", type=Path, required=True, help="a prepared MovieLens-100k dataset")
    parser.add_argument("--out", type=Path, required=True, help="folder for the two files")
    parser.add_argument("--field", default="class", help="the attribute field kept (default: the genres)")
    args = parser.parse_args()

    ds = load_dataset(args.data)
    args.out.mkdir(parents=True, exist_ok=True)
    lines = []
    for user in range(ds.n_users):
        start, stop = int(ds.offsets[user]), int(ds.offsets[user + 1])
        lines.append(" ".join([str(user + 1), *(str(int(i)) for i in ds.items[start:stop])]))
    (args.out / "ml-100k.txt").write_text("\n".join(lines) + "\n")

    vocab = ds.table("attributes")
    kept = set(vocab.filter(vocab["field"] == args.field)["attribute_id"].to_list())
    attributes = {}
    for item in range(1, ds.n_items + 1):
        values = ds.attr_ids[ds.attr_offsets[item] : ds.attr_offsets[item + 1]]
        attributes[str(item)] = [int(a) for a in values if int(a) in kept]
    (args.out / "ml-100k_item2attributes.json").write_text(json.dumps(attributes))
    print(f"wrote {len(lines)} users and {len(attributes)} items to {args.out}")


if __name__ == "__main__":
    main()
