"""The PSU's alignment InfoNCE: the shared-exponential form against the plain logsumexp form.

    .venv/bin/python benchmarks/infonce.py [--groups 1024] [--size 128] [--dim 32] [--pairs 3]

Both forms score the same channel pairs of unit vectors within groups (the lifelong benchmark's
alignment at L = 2000: 256 windows × 4 chunks of 128, three channel pairs a step) with the same
padding and repeated-item exclusions, forward and backward, in interleaved rounds on one thread.
The baseline is :func:`seminar.models.infonce.clip_loss`, the form autograd derives (two masked
logsumexps, one mask shared by the pairs). Prints the median seconds of each and their ratio, and
checks that both gave the same loss; asserts nothing about time.
"""

from __future__ import annotations

import argparse
import itertools
import statistics
import time
from collections.abc import Callable

import torch

from seminar.models.infonce import (
    clip_allowed,
    clip_loss,
    clip_mask_of,
    shared_exp_clip_loss,
    shifted_clip_mask,
)


def inputs(groups: int, size: int, dim: int, channels: int, seed: int) -> tuple[torch.Tensor, ...]:
    """Unit channel vectors [N, S, M, d], 30% padding at the front of a group, repeated items."""
    g = torch.Generator().manual_seed(seed)
    unit = torch.nn.functional.normalize(torch.randn(groups, size, channels, dim, generator=g), dim=-1)
    lengths = torch.randint(size // 2, size + 1, (groups, 1), generator=g)
    valid = torch.arange(size)[None] >= size - lengths
    items = torch.randint(0, 4 * size, (groups, size), generator=g)
    return unit.requires_grad_(), valid, items


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--groups", type=int, default=1024)
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--dim", type=int, default=32)
    parser.add_argument("--pairs", type=int, default=3, help="channel pairs (3 item channels: 3)")
    parser.add_argument("--temperature", type=float, default=0.07)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    channels = next(m for m in range(2, 64) if m * (m - 1) // 2 >= args.pairs)
    unit, valid, items = inputs(args.groups, args.size, args.dim, channels, seed=0)
    pairs = list(itertools.combinations(range(channels), 2))[: args.pairs]
    t = args.temperature

    def plain() -> torch.Tensor:
        allowed = clip_allowed(valid, items[:, :, None] == items[:, None, :])
        mask = clip_mask_of(allowed, valid)
        return torch.stack(
            [clip_loss(unit[:, :, i], unit[:, :, j], valid, t, mask=mask) for i, j in pairs]
        ).sum()

    def shared() -> torch.Tensor:
        allowed = clip_allowed(valid, items[:, :, None] == items[:, None, :])
        shifted = shifted_clip_mask(allowed, t)
        return torch.stack(
            [
                shared_exp_clip_loss(unit[:, :, i], unit[:, :, j], valid, t, allowed, shifted, unit=True)
                for i, j in pairs
            ]
        ).sum()

    def step(loss_of: Callable[[], torch.Tensor]) -> tuple[float, float]:
        unit.grad = None
        start = time.perf_counter()
        loss = loss_of()
        loss.backward()
        return time.perf_counter() - start, loss.item()

    times: dict[str, list[float]] = {"plain (logsumexp, autograd)": [], "shared exponential": []}
    losses: dict[str, float] = {}
    for _ in range(args.rounds):
        for name, form in zip(times, (plain, shared), strict=True):
            seconds, losses[name] = step(form)
            times[name].append(seconds)
    base = statistics.median(times["plain (logsumexp, autograd)"])
    print(
        f"[{args.groups}, {args.size}, {args.size}] logits, {args.pairs} pairs, forward + backward, "
        f"{args.threads} thread(s), median of {args.rounds} interleaved rounds"
    )
    for name, values in times.items():
        median = statistics.median(values)
        print(f"  {name:30s} {median:8.3f} s   x{base / median:.2f}   loss {losses[name]:.6f}")


if __name__ == "__main__":
    main()
