"""Optimizer construction, and the Schedule-Free train/eval mode switch.

Schedule-Free AdamW keeps two sequences of weights: it trains on one and evaluates on their
average. Evaluating or saving while it is in train mode uses the wrong weights, so every
evaluation and checkpoint goes through `eval_weights`.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterable, Iterator

import torch

from src.errors import ConfigError


def build_optimizer(
    factory: Callable[..., torch.optim.Optimizer], params: Iterable[torch.nn.Parameter]
) -> torch.optim.Optimizer:
    params = list(params)
    if not params:
        raise ConfigError("no trainable parameters: check model.trainable")
    return factory(params)


def is_schedule_free(optimizer: torch.optim.Optimizer) -> bool:
    """Schedule-Free optimizers are the ones with their own train()/eval() modes."""
    return callable(getattr(optimizer, "eval", None)) and callable(getattr(optimizer, "train", None))


@contextlib.contextmanager
def eval_weights(optimizer: torch.optim.Optimizer) -> Iterator[None]:
    """Inside the block the model holds the weights to evaluate and save."""
    if not is_schedule_free(optimizer):
        yield
        return
    optimizer.eval()
    try:
        yield
    finally:
        optimizer.train()


def current_lr(optimizer: torch.optim.Optimizer) -> float:
    """The lr applied at the last step (Schedule-Free reports its warmup-scaled lr separately)."""
    group = optimizer.param_groups[0]
    return float(group.get("scheduled_lr", group["lr"]))
