"""The few DDP operations the trainer needs, each a no-op in a single process.

A run is distributed when it was launched by ``torchrun`` (``WORLD_SIZE`` > 1 in the
environment). The process group uses NCCL on CUDA and Gloo on CPU.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class DistInfo:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def env_dist_info() -> DistInfo:
    """Rank and world size as ``torchrun`` exports them (a single process when absent)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return DistInfo()
    return DistInfo(
        rank=int(os.environ["RANK"]), world_size=world, local_rank=int(os.environ.get("LOCAL_RANK", "0"))
    )




def resolve_device(preference: str, info: DistInfo) -> torch.device:
    """``auto`` means CUDA when present, else CPU; under DDP each process takes its local GPU."""
    if preference == "auto":
        preference = "cuda" if torch.cuda.is_available() else "cpu"
    device = torch.device(preference)
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise RuntimeError(f"device {preference!r} requested but CUDA is not available")
        if device.index is None:
            device = torch.device("cuda", info.local_rank if info.enabled else torch.cuda.current_device())
    return device


def init_process_group(info: DistInfo, device: torch.device) -> bool:
    """Start the process group if this is a distributed run and none exists; True if it started one."""
    if not info.enabled or dist.is_initialized():
        return False
    if device.type == "cuda":
        torch.cuda.set_device(device)
    dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
    return True


def is_active() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def all_reduce_sum_(tensor: torch.Tensor) -> torch.Tensor:
    """Sum ``tensor`` over ranks in place (unchanged in a single process)."""
    if is_active():
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return tensor


def barrier() -> None:
    if is_active():
        dist.barrier()


def gather_objects(obj: Any) -> list[Any]:
    """Every rank's ``obj``, in rank order, on every rank."""
    if not is_active():
        return [obj]
    out: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(out, obj)
    return out


def shutdown() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()
