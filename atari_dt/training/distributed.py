"""One process or many: the rank, world size and device of this process, from torchrun's
environment (``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``); gloo on CPU, NCCL on GPU."""

from __future__ import annotations

import datetime
import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

import torch
import torch.distributed as dist

from atari_dt.errors import UserError

T = TypeVar("T")


@dataclass(frozen=True)
class Distributed:
    """Where this process stands: ``rank`` of ``world``, on ``device``; rank 0 writes."""

    rank: int
    world: int
    device: torch.device

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def active(self) -> bool:
        return self.world > 1

    def sum(self, value: torch.Tensor) -> torch.Tensor:
        """``value`` summed over all ranks (itself when alone)."""
        if self.active:
            value = value.to(self.device).clone()  # NCCL reduces GPU tensors only
            dist.all_reduce(value, op=dist.ReduceOp.SUM)
        return value

    def barrier(self) -> None:
        if self.active:
            dist.barrier()

    def on_main(self, work: Callable[[], T]) -> T | None:
        """Run ``work`` on rank 0 only, then let every rank know whether it failed: rank 0
        re-raises its error, the others raise too instead of waiting forever."""
        error: BaseException | None = None
        result = None
        if self.is_main:
            try:
                result = work()
            except Exception as err:  # re-raised below, after telling the other ranks
                error = err
        failed = self.sum(torch.tensor([float(error is not None)]))
        if error is not None:
            raise error
        if float(failed[0]) > 0:
            raise RuntimeError("rank 0 failed while preparing the run (its error is above)")
        return result


def resolve_device(name: str, local_rank: int = 0, world: int = 1) -> torch.device:
    """``auto``: this rank's CUDA device when there is one, else the CPU. Under torchrun,
    ``cuda`` means this rank's GPU (``cuda:LOCAL_RANK``).

    Raises:
        UserError: CUDA asked for but absent, or a fixed GPU index with several ranks.
    """
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise UserError(f"train.device={name!r} but CUDA is not available here; use cpu or auto")
    if device.type == "cuda" and device.index is None:
        device = torch.device("cuda", local_rank)
    elif device.type == "cuda" and world > 1:
        raise UserError(
            f"train.device={name!r} puts every rank on one GPU; use cuda (one GPU per rank)"
        )
    return device


def setup(device_name: str) -> Distributed:
    """Join the process group when started by torchrun (``WORLD_SIZE`` > 1), else run alone."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    device = resolve_device(device_name, local_rank, world)
    if world > 1 and not dist.is_initialized():
        backend = "nccl" if device.type == "cuda" else "gloo"
        if device.type == "cuda":
            torch.cuda.set_device(device)
        # A long timeout: rank 0 may run evaluation rollouts while the others wait.
        dist.init_process_group(
            backend=backend, rank=rank, world_size=world, timeout=datetime.timedelta(hours=2)
        )
    return Distributed(rank=rank, world=world, device=device)


def teardown(context: Distributed) -> None:
    if context.active and dist.is_initialized():
        dist.destroy_process_group()
