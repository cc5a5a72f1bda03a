"""Hard-example sampling (seed 003's default): samples whose recent loss is high are drawn more often.

Each sample keeps a running mean of its loss in a tensor in shared memory, so that data-loader
processes read what the training process writes. A drawn sample is, with probability `ratio`,
swapped for one picked in proportion to those losses. The losses are kept in the checkpoint, so a
resumed run draws as the uninterrupted one would.
"""

from __future__ import annotations

import logging

import torch

log = logging.getLogger(__name__)


class HardExamples:
    def __init__(self, size: int, ratio: float, momentum: float):
        self.ratio, self.momentum = ratio, momentum
        self.losses = torch.ones(size).share_memory_()  # no sample is known to be easy at the start

    def update(self, indices: torch.Tensor, losses: torch.Tensor) -> None:
        indices, losses = indices.cpu(), losses.detach().float().cpu()
        self.losses[indices] = self.momentum * self.losses[indices] + (1 - self.momentum) * losses

    def state_dict(self) -> dict[str, torch.Tensor]:
        return {"losses": self.losses.clone()}

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        """In place: loader processes share this tensor."""
        losses = state["losses"]
        if losses.shape != self.losses.shape:
            log.warning(
                "hard examples: the checkpoint holds losses of %d samples, the training split has %d; they "
                "restart at 1", losses.numel(), self.losses.numel(),
            )  # fmt: skip
            return
        self.losses.copy_(losses)

    def probabilities(self) -> torch.Tensor:
        weights = self.losses.clamp_min(1e-8)
        return weights / weights.sum()

    def pick(self, index: int, generator: torch.Generator) -> int:
        """`index`, or (with probability `ratio`) a sample drawn in proportion to its recent loss."""
        if self.ratio <= 0 or float(torch.rand((), generator=generator)) >= self.ratio:
            return index
        return int(torch.multinomial(self.probabilities(), 1, generator=generator))
