"""Data-parallel processes: which one this is, how many there are, and the few collectives training needs.

Rank and world size come from the environment. `torchrun` sets RANK, WORLD_SIZE, LOCAL_RANK,
MASTER_ADDR and MASTER_PORT; a SLURM job step with several tasks (`srun`, or the SLURM launcher with
`tasks_per_node > 1`) sets SLURM_PROCID, SLURM_STEP_NUM_TASKS and SLURM_LOCALID, and the
rendezvous is on the step's first node. Without either, the world is one process and every
collective below returns its input.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import torch
import torch.distributed as dist
from torch import nn

from src.errors import ConfigError

log = logging.getLogger(__name__)

BACKENDS = ("auto", "nccl", "gloo")


@dataclass(frozen=True)
class World:
    """This process's place among the data-parallel processes of a run."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        """Rank 0 alone logs to MLflow and writes checkpoints and pictures."""
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def world_from_environment() -> World:
    """torchrun's variables, else those of a SLURM step with several tasks, else one process.

    For a SLURM step, MASTER_ADDR (the step's first node) and MASTER_PORT (from the job id, so that
    every task agrees on it) are set unless already there, for `env://` initialisation.
    """
    env = os.environ
    if "RANK" in env and "WORLD_SIZE" in env:
        return World(int(env["RANK"]), int(env["WORLD_SIZE"]), int(env.get("LOCAL_RANK", 0)))
    tasks = int(env.get("SLURM_STEP_NUM_TASKS", 1))
    if tasks > 1:
        env.setdefault("MASTER_ADDR", first_host(env.get("SLURM_STEP_NODELIST") or env["SLURM_JOB_NODELIST"]))
        env.setdefault("MASTER_PORT", str(20000 + int(env.get("SLURM_JOB_ID", 0)) % 20000))
        return World(int(env["SLURM_PROCID"]), tasks, int(env.get("SLURM_LOCALID", 0)))
    return World()


def first_host(node_list: str) -> str:
    """The first host of a SLURM node list: `gpu[003-007,010],cpu01` -> `gpu003`."""
    match = re.match(r"([^,\[]+)(?:\[([^\],-]+))?", node_list)
    if match is None:
        raise ConfigError(f"cannot read the SLURM node list {node_list!r}")
    return match.group(1) + (match.group(2) or "")


@contextmanager
def process_group(
    device: torch.device, backend: str = "auto", timeout_min: float = 30
) -> Iterator[tuple[World, torch.device]]:
    """Join the run's process group (when there is more than one process) for the duration of the block.

    Yields the world and the device this process trains on: `cuda:LOCAL_RANK` on GPUs, else `device`.
    The backend is NCCL on GPUs and gloo on CPUs unless `backend` names one.
    """
    if backend not in BACKENDS:
        raise ConfigError(f"trainer.distributed.backend={backend!r}: expected one of {BACKENDS}")
    world = world_from_environment()
    if not world.distributed:
        yield world, device
        return
    if device.type == "cuda":
        device = torch.device("cuda", world.local_rank)
        torch.cuda.set_device(device)
    chosen = backend if backend != "auto" else ("nccl" if device.type == "cuda" else "gloo")
    dist.init_process_group(
        chosen,
        init_method="env://",
        rank=world.rank,
        world_size=world.world_size,
        timeout=timedelta(minutes=timeout_min),
        device_id=device if chosen == "nccl" else None,
    )
    log.info("rank %d of %d (%s on %s)", world.rank, world.world_size, chosen, device)
    try:
        yield world, device
    finally:
        dist.destroy_process_group()


def _active() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def _tensor_device() -> torch.device:
    if dist.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def sum_over_ranks(values: Sequence[float]) -> list[float]:
    """Element-wise sums over all processes (sums and counts, from which exact means follow)."""
    if not _active():
        return [float(v) for v in values]
    tensor = torch.tensor([float(v) for v in values], dtype=torch.float64, device=_tensor_device())
    dist.all_reduce(tensor)
    return tensor.tolist()


def any_rank(flag: bool) -> bool:
    """True on every process when it is true on one (e.g. a stop signal reached one of them)."""
    if not _active():
        return flag
    return sum_over_ranks([float(flag)])[0] > 0


def gather_from_ranks(obj: Any) -> list[Any]:
    """Every process's `obj`, in rank order (small picklable things only)."""
    if not _active():
        return [obj]
    gathered: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(gathered, obj)
    return gathered


def from_main(obj: Any) -> Any:
    """Rank 0's `obj` on every process (e.g. a run folder named after the time it started)."""
    if not _active():
        return obj
    holder = [obj]
    dist.broadcast_object_list(holder, src=0)
    return holder[0]


def barrier() -> None:
    if _active():
        dist.barrier()


def data_parallel(module: nn.Module, device: torch.device, find_unused_parameters: bool) -> nn.Module:
    """`module` wrapped in DistributedDataParallel when there are several processes, else unchanged.

    Gradients of the trainable parameters are averaged over processes during backward; frozen
    parts (requires_grad False) need no synchronisation.
    """
    if not _active():
        return module
    device_ids = [device.index] if device.type == "cuda" else None
    return nn.parallel.DistributedDataParallel(
        module, device_ids=device_ids, find_unused_parameters=find_unused_parameters
    )
