"""Data-parallel training across the processes torchrun starts (`torchrun --nproc-per-node N -m sperm_edge train`).

torchrun tells each process its place through the environment (RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR and
MASTER_PORT, or its rendezvous options for several nodes); a plain `sperm-edge train` is a world of one and
none of this starts a process group. gloo on the CPU, NCCL on GPUs (one GPU a process: cuda:LOCAL_RANK).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import timedelta

import numpy as np
import torch
import torch.distributed as dist

from sperm_edge.errors import SpermEdgeError

log = logging.getLogger(__name__)

COLLECTIVE_TIMEOUT = timedelta(minutes=30)  # the longest one rank waits for the others (rank 0 scoring at the end)


@dataclass(frozen=True)
class World:
    """This process's place among the training processes."""

    rank: int = 0
    size: int = 1
    local_rank: int = 0

    @property
    def main(self) -> bool:
        """Rank 0 writes checkpoints, logs and plots; the others only train."""
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.size > 1

    def device(self, requested: str) -> torch.device:
        """The device of this rank: `requested` ('auto', 'cpu', 'cuda'), with a GPU of its own per local rank."""
        cuda = requested.startswith("cuda") or (requested == "auto" and torch.cuda.is_available())
        if not cuda:
            return torch.device("cpu" if requested == "auto" else requested)
        if not self.distributed:
            return torch.device("cuda" if requested == "auto" else requested)
        if ":" in requested:
            raise SpermEdgeError(f"--device {requested} names one GPU, but torchrun runs {self.size} processes")
        return torch.device("cuda", self.local_rank)

    def shard(self, indices: Sequence[int]) -> list[int]:
        """This rank's share of `indices`: every size-th one, from its rank (no padding, no repeats)."""
        return list(indices[self.rank :: self.size])


def world_from_env() -> World:
    """The world torchrun describes in the environment; one process when it does not."""
    try:
        size = int(os.environ.get("WORLD_SIZE", "1"))
        return World(int(os.environ.get("RANK", "0")), size, int(os.environ.get("LOCAL_RANK", "0")))
    except ValueError as err:
        raise SpermEdgeError(
            f"RANK, WORLD_SIZE and LOCAL_RANK must be integers (as torchrun sets them): {err}"
        ) from err


@contextmanager
def process_group(world: World, device: torch.device) -> Iterator[None]:
    """The process group of a distributed run, for the block's duration; nothing for a world of one."""
    if not world.distributed:
        yield
        return
    if device.type == "cuda":
        torch.cuda.set_device(device)
    backend = "nccl" if device.type == "cuda" else "gloo"
    dist.init_process_group(backend, timeout=COLLECTIVE_TIMEOUT)
    log.info("rank %d of %d joined (%s, %s)", world.rank, world.size, backend, device)
    try:
        yield
    finally:
        dist.destroy_process_group()


def barrier(world: World) -> None:
    if world.distributed:
        dist.barrier()


def check_agreement(world: World, what: str, value: object) -> None:
    """Refuse to train when ranks disagree on `value` (the split, say: another data folder on another node)."""
    if not world.distributed:
        return
    digest = hashlib.sha256(json.dumps(value, sort_keys=True, default=str).encode()).hexdigest()[:12]
    digests: list[str] = [""] * world.size
    dist.all_gather_object(digests, digest)
    if len(set(digests)) > 1:
        raise SpermEdgeError(f"the training processes disagree on {what} (rank: digest {dict(enumerate(digests))})")


def gather_rows(world: World, rows: np.ndarray) -> np.ndarray:
    """The rows of every rank's shard (see `World.shard`) put back in the order of the whole set."""
    if not world.distributed:
        return rows
    parts: list[np.ndarray] = [np.empty(0)] * world.size
    dist.all_gather_object(parts, rows)
    whole = np.empty((sum(len(p) for p in parts), *rows.shape[1:]), dtype=rows.dtype)
    for rank, part in enumerate(parts):
        whole[rank :: world.size] = part
    return whole


def mean_over_ranks(world: World, value: float, count: int, device: torch.device) -> float:
    """The mean of a per-rank mean over all ranks, weighted by each rank's count (summed on `device`: NCCL reduces
    GPU tensors only)."""
    if not world.distributed:
        return value
    totals = torch.tensor([value * count, float(count)], dtype=torch.float64, device=device)
    dist.all_reduce(totals)
    return float(totals[0] / max(totals[1], 1.0))
