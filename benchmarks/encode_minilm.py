"""Seconds to encode the MovieLens-100k titles with all-MiniLM-L6-v2 on CPU (model load separate).

Run: .venv/bin/python benchmarks/encode_minilm.py [--threads 2]. Prints figures only.
"""

from __future__ import annotations

import argparse
import time

import torch

from seminar.data.encoders import MiniLMTextEncoder
from seminar.data.sources.recbole import read_ml100k


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--batch", type=int, default=256)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    titles = [t or "" for t in read_ml100k().items["title"].to_list()]
    encoder = MiniLMTextEncoder()
    started = time.perf_counter()
    encoder.encode_texts(titles[:8], progress=False)  # loads the model
    loaded = time.perf_counter()
    vectors = encoder.encode_texts(titles, batch_size=args.batch, progress=False)
    done = time.perf_counter()
    print(f"titles                {len(titles):,} -> {vectors.shape[1]}-d, threads={args.threads}")
    print(f"model load            {loaded - started:8.2f} s")
    print(f"encode                {done - loaded:8.2f} s   ({len(titles) / (done - loaded):,.0f} titles/s)")


if __name__ == "__main__":
    main()
