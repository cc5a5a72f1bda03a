"""The contract between a task and the task-agnostic trainer."""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch
from torch import nn
from torch.utils.data import Dataset


@dataclass
class StepOutput:
    losses: dict[str, torch.Tensor]  # "loss" is minimised; the other terms are logged
    counts: dict[str, int] = field(default_factory=dict)  # e.g. images, prompts: logged as throughput
    # how many items "loss" is a mean over: data-parallel processes are weighted by it, so that
    # their combined gradient is that of the mean over all their items, as in one process
    loss_weight: float = 1.0


@dataclass
class Part:
    """A piece of the model with an optimizer of its own (a GAN's generator, its discriminator).

    The trainer moves `module` to the device, wraps it for data-parallel runs on its own, builds
    the optimizer, schedule, gradient scaler and clipping from the config keys named here, and
    keeps their state in the checkpoint. The defaults are the run's own keys.
    """

    module: nn.Module
    parameters: list[nn.Parameter]
    optimizer: str = "optimizer"  # config key of an optimizer config (a conf/optimizer/ choice)
    scheduler: str = "trainer.scheduler"
    gradient_clip_norm: str = "trainer.gradient_clip_norm"


class PartUpdates(Protocol):
    """What the trainer hands the training step of a task with several parts."""

    modules: dict[str, nn.Module]  # each part's module as trained (data-parallel wrapped where it runs so)
    step: int  # optimizer steps done before this one

    def __call__(self, part: str, loss: torch.Tensor, loss_weight: float = 1.0) -> None:
        """Back-propagate `loss` into `part`'s parameters alone and, when this micro-batch ends an optimizer
        step, step that part now (so what follows sees its new weights: a GAN's discriminator, then the
        generator). `loss_weight` as in `StepOutput`."""


@dataclass
class Evaluation:
    metrics: dict[str, float]  # logged as val/<name>
    image: np.ndarray | None = None  # a picture of predictions, logged as an artifact


class Task(Protocol):
    module: nn.Module  # what the trainer optimizes (and, for multi-GPU runs, wraps)

    def trainable_parameters(self) -> list[nn.Parameter]: ...

    def parts(self) -> dict[str, Part]:
        """Optional: the separately optimized parts, the main one first (its weights are `export_weights`',
        StepOutput's "loss" trains it). Without it: one part, `module` with `trainable_parameters()`. With
        more than one, `training_step` also receives `updates` (`PartUpdates`) and the trainer keeps the
        other parts' weights in the training state."""

    def state_dict(self) -> dict[str, Any]:
        """Optional: what the task learns besides weights (e.g. hard-example losses), kept in the training
        state and given back to `load_state_dict` on resume."""

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Optional: counterpart of `state_dict`."""

    def picture(
        self, module: nn.Module, loader: Any, device: torch.device,
        autocast: Callable[[], contextlib.AbstractContextManager],
    ) -> np.ndarray | None:  # fmt: skip
        """Optional: a quick picture of the model's outputs on the first validation batches, logged every
        `trainer.picture_every_steps` optimizer steps."""

    def load_initial_weights(self) -> None:
        """Weights a fresh run starts from (the configured pretrained checkpoint)."""

    def load_weights(self, checkpoint: dict[str, Any], source: str) -> None:
        """Weights from one of our own checkpoints (resume or `trainer.init_from`)."""

    def export_weights(self) -> dict[str, Any]:
        """`{"model": state_dict, "meta": {...}}` in the format stock loaders read."""

    def exported_module(self) -> nn.Module:
        """The module `export_weights`' state dict belongs to (what stock loaders build)."""

    def datasets(self) -> tuple[Dataset, Dataset]:
        """(train, val)."""

    def prepare(self, device: torch.device, autocast: Callable[[], contextlib.AbstractContextManager]) -> None:
        """Optional one-off work once the starting weights are loaded and before the first evaluation
        (e.g. filling an embedding cache). Called after `datasets`."""

    def after_save(self, run_dir: Path, weights: dict[str, Any], is_best: bool) -> dict[str, float]:
        """Optional: files that accompany a checkpoint just written from `weights` (e.g. an adapter folder
        beside new best weights); returns metrics to log (e.g. their size)."""

    def collate(self, items: list[Any]) -> Any: ...

    def training_step(self, module: nn.Module, batch: Any, generator: torch.Generator) -> StepOutput | None:
        """Losses for one micro-batch, or None when the batch holds nothing to learn from. A task with several
        parts takes a fourth argument, `updates`, to update its other parts during the step."""

    def evaluate(
        self,
        module: nn.Module,
        loader: Any,
        device: torch.device,
        autocast: Callable[[], contextlib.AbstractContextManager],
    ) -> Evaluation: ...


def to_device(batch: Any, device: torch.device) -> Any:
    """Move every tensor in a (nested) batch to `device`."""
    if isinstance(batch, torch.Tensor):
        return batch.to(device, non_blocking=True)
    if isinstance(batch, dict):
        return {k: to_device(v, device) for k, v in batch.items()}
    if isinstance(batch, list | tuple):
        return type(batch)(to_device(v, device) for v in batch)
    return batch
