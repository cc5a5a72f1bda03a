"""Seeds. Every random stream of a run derives from `trainer.seed` plus where it is used
(epoch, step, sample index), so a resumed run draws the same numbers as an uninterrupted one."""

from __future__ import annotations

import random

import numpy as np
import torch


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def derive_seed(*parts: int) -> int:
    """A 63-bit seed mixed from integers, stable across processes and platforms."""
    words = np.random.SeedSequence([abs(int(p)) for p in parts]).generate_state(2, np.uint64)
    return int(words[0] >> np.uint64(1))


def torch_generator(seed: int, device: torch.device | str = "cpu") -> torch.Generator:
    generator = torch.Generator(device=device)
    generator.manual_seed(seed)
    return generator
