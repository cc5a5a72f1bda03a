"""A resumable, shardable epoch sampler whose order and per-sample seeds derive from the run seed."""

from __future__ import annotations

from collections.abc import Iterator

import torch
from torch.utils.data import Sampler

from src.utils.seeding import derive_seed, torch_generator


class EpochSampler(Sampler[tuple[int, int]]):
    """Yields `(index, sample_seed)`: a shuffled order fixed by (seed, epoch), from any position.

    Starting mid-epoch (`start`) skips indices without loading them, which is how an interrupted
    run resumes on the batch it would have seen next. With `world_size > 1` each rank takes every
    `world_size`-th index of the same order, so rank r's k-th batch is part of the k-th batch of
    a single process with a batch `world_size` times larger. Every rank gets the same number of
    samples (the last `size % world_size` of each epoch's order are left out), as data-parallel
    processes step in lockstep.
    """

    def __init__(self, size: int, seed: int, shuffle: bool = True, rank: int = 0, world_size: int = 1):
        self.size, self.seed, self.shuffle = size, seed, shuffle
        self.rank, self.world_size = rank, world_size
        self.epoch, self.start = 0, 0

    def set_epoch(self, epoch: int, start: int = 0) -> None:
        self.epoch, self.start = epoch, start

    def _order(self) -> list[int]:
        if self.shuffle:
            order = torch.randperm(self.size, generator=torch_generator(derive_seed(self.seed, self.epoch)))
        else:
            order = torch.arange(self.size)
        return order[: self.num_samples * self.world_size][self.rank :: self.world_size].tolist()

    @property
    def num_samples(self) -> int:
        """Samples per epoch for this rank."""
        return self.size // self.world_size

    def __iter__(self) -> Iterator[tuple[int, int]]:
        for index in self._order()[self.start :]:
            yield index, derive_seed(self.seed, self.epoch, index)

    def __len__(self) -> int:
        return self.num_samples - self.start
