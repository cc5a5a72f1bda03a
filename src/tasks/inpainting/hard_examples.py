"""Hard-example sampling (seed 003's default): samples whose recent loss is high are drawn more often.

Each sample keeps a running mean of its loss in a tensor in shared memory, so that data-loader
processes read what the training process writes. A drawn sample is, with probability `ratio`,
swapped for one picked in proportion to those losses.
"""

from __future__ import annotations

import torch


class HardExamples:
    def __init__(self, size: int, ratio: float, momentum: float):
        self.ratio, self.momentum = ratio, momentum
        self.losses = torch.ones(size).share_memory_()  # no sample is known to be easy at the start

    def update(self, indices: torch.Tensor, losses: torch.Tensor) -> None:
        indices, losses = indices.cpu(), losses.detach().float().cpu()
        self.losses[indices] = self.momentum * self.losses[indices] + (1 - self.momentum) * losses

    def probabilities(self) -> torch.Tensor:
        weights = self.losses.clamp_min(1e-8)
        return weights / weights.sum()

    def pick(self, index: int, generator: torch.Generator) -> int:
        """`index`, or (with probability `ratio`) a sample drawn in proportion to its recent loss."""
        if self.ratio <= 0 or float(torch.rand((), generator=generator)) >= self.ratio:
            return index
        return int(torch.multinomial(self.probabilities(), 1, generator=generator))
