"""Learning-rate schedules as multipliers of the optimizer's lr, per optimizer step.

Configs instantiate them with `_partial_: true`; the trainer completes them with the run's
`total_steps` and `steps_per_epoch`, so schedules can be written in epochs or steps.
"""

from __future__ import annotations

import math


def _cosine(progress: float, min_ratio: float) -> float:
    return min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * min(max(progress, 0.0), 1.0)))


class Constant:
    """Linear warmup, then the optimizer's lr unchanged."""

    def __init__(self, warmup_steps: int, *, total_steps: int, steps_per_epoch: int):
        self.warmup_steps = warmup_steps

    def __call__(self, step: int) -> float:
        return min(1.0, (step + 1) / self.warmup_steps) if self.warmup_steps else 1.0


class WarmupCosine:
    """Linear warmup, then one cosine decay to `min_lr_ratio` x lr at the last step."""

    def __init__(self, warmup_steps: int, min_lr_ratio: float, *, total_steps: int, steps_per_epoch: int):
        self.warmup_steps, self.min_lr_ratio = warmup_steps, min_lr_ratio
        self.decay_steps = max(1, total_steps - warmup_steps)

    def __call__(self, step: int) -> float:
        if step < self.warmup_steps:
            return (step + 1) / self.warmup_steps
        return _cosine((step - self.warmup_steps) / self.decay_steps, self.min_lr_ratio)


class CosineWarmRestarts:
    """`cycles` cosine decays over the run, each restarting at the full lr (SGDR; seed 003's cyclic
    schedule: 200 epochs, a restart every 40, is `cycles=5`).

    Cycles are a share of the run, not a fixed number of epochs, so a shorter run (a preset's or a
    test's `max_epochs`) still restarts. The lr jumps back up at each restart, so validation dips
    briefly after it.
    """

    def __init__(
        self, cycles: int, min_lr_ratio: float, warmup_steps: int, *, total_steps: int, steps_per_epoch: int
    ):
        self.cycle_steps = max(1, math.ceil(total_steps / cycles))
        self.min_lr_ratio, self.warmup_steps = min_lr_ratio, warmup_steps

    def __call__(self, step: int) -> float:
        if step < self.warmup_steps:
            return (step + 1) / self.warmup_steps
        return _cosine((step % self.cycle_steps) / self.cycle_steps, self.min_lr_ratio)
