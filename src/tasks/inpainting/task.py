"""Image inpainting (seed 003): a light generator fills holes, validated by PSNR/SSIM over the hole.

Implements the task protocol, so the trainer, MLflow logging, checkpoints, resume, sweeps and
launchers work as they do for the other tasks. Training cuts `task.tile` px tiles from the
prepared samples; validation logs PSNR and SSIM over the hole and over the whole image, LPIPS
over the hole when `inpaint_loss.lpips_weights` is set, and a picture grid (input with its hole |
output | truth). With `discriminator=patch` it trains as a GAN: two parts, the generator and a patch
discriminator, each with its own optimizer; every batch steps the discriminator first, then the
generator against the updated discriminator.
"""

from __future__ import annotations

import contextlib
import functools
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from hydra.utils import instantiate
from omegaconf import DictConfig
from torch import nn
from torch.utils.data import Dataset

from src.engine.task import Evaluation, Part, PartUpdates, StepOutput, to_device
from src.errors import CheckpointError, ConfigError
from src.tasks.inpainting import adversarial as gan
from src.tasks.inpainting.dataset import InpaintDataset, collate_inpaint
from src.tasks.inpainting.drawing import comparison_row, comparison_rows
from src.tasks.inpainting.hard_examples import HardExamples
from src.tasks.inpainting.metrics import InpaintMeter, hole_lpips_network
from src.tasks.inpainting.model import LightInpaintGenerator, build_generator
from src.utils.checkpoint_io import read_checkpoint
from src.utils.pictures import grid

log = logging.getLogger(__name__)


def inpaint_meta(model_cfg: DictConfig, generator: LightInpaintGenerator) -> dict[str, Any]:
    """What rebuilding the generator needs: its registry key and plain numbers."""
    return {"task": "inpainting", "model": str(model_cfg.name), "generator": str(model_cfg.generator),
            "generator_config": dict(generator.config)}  # fmt: skip


class InpaintLearner(nn.Module):
    """Forward pass with the loss inside, so data-parallel training wraps one module."""

    def __init__(self, generator: LightInpaintGenerator, loss: nn.Module):
        super().__init__()
        self.generator, self.loss = generator, loss

    def forward(
        self, image: torch.Tensor, mask: torch.Tensor
    ) -> tuple[dict[str, torch.Tensor], torch.Tensor, torch.Tensor]:
        """(losses, each image's hole L1, the output)."""
        output = self.generator(image, mask)
        per_image = (output.clamp(0, 1) - image).abs().mul(mask).flatten(1).sum(1) / mask.flatten(1).sum(1).mul(
            3
        ).clamp_min(1)
        return self.loss(output, image, mask), per_image.detach(), output


class InpaintingTask:
    def __init__(self, cfg: DictConfig, device: torch.device):
        self.cfg, self.tcfg = cfg, cfg.task
        if cfg.model.get("generator") is None:
            raise ConfigError(
                f"model={cfg.model.name} with task=inpainting: expected an inpainting generator (model=light_inpaint)"
            )
        self.generator = build_generator(cfg.model)
        self.loss = instantiate(cfg.inpaint_loss)
        self.module = InpaintLearner(self.generator, self.loss)
        self.collate = collate_inpaint
        self.hard: HardExamples | None = None
        chosen = cfg.get("discriminator")  # the GAN option (`discriminator=none|patch`)
        self.discriminator: nn.Module | None = None
        if chosen is not None and chosen.name != "none":
            self.discriminator, self.adversarial = instantiate(chosen.network), chosen.adversarial

    # weights ---------------------------------------------------------------
    def trainable_parameters(self) -> list[nn.Parameter]:
        return list(self.generator.parameters())

    def parts(self) -> dict[str, Part]:
        """The generator; with a GAN, also the discriminator and its own optimizer (`discriminator.*`)."""
        parts = {"generator": Part(self.module, self.trainable_parameters())}
        if self.discriminator is not None:
            parts["discriminator"] = Part(
                self.discriminator, list(self.discriminator.parameters()),
                optimizer="discriminator.optimizer", gradient_clip_norm="discriminator.gradient_clip_norm",
            )  # fmt: skip
        return parts

    def state_dict(self) -> dict[str, Any]:
        return {"hard_examples": self.hard.state_dict()} if self.hard is not None else {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if self.hard is not None and "hard_examples" in state:
            self.hard.load_state_dict(state["hard_examples"])

    def load_initial_weights(self) -> None:
        """`model.checkpoint`: null (random weights) or a weights file of ours (seed 003's --checkpoint-file)."""
        choice = self.cfg.model.checkpoint
        if choice is None:
            log.info("model.checkpoint=null: the %s generator starts from random weights", self.cfg.model.name)
            return
        path = Path(str(choice)).expanduser()
        if not path.is_file():
            raise ConfigError(
                f"model.checkpoint={choice}: no such file; expected inpainting weights (.pt/.pth) or null"
            )
        checkpoint = read_checkpoint(path)
        self.load_weights(checkpoint if "model" in checkpoint else {"model": checkpoint}, str(path))

    def load_weights(self, checkpoint: dict[str, Any], source: str) -> None:
        state = checkpoint.get("model") if isinstance(checkpoint, dict) else None
        if not isinstance(state, dict):
            raise CheckpointError(f"checkpoint {source}: expected a dict with a 'model' state dict")
        try:
            self.generator.load_state_dict(state)
        except RuntimeError as err:  # missing, unexpected or differently shaped tensors
            trained_as = (checkpoint.get("meta") or {}).get("model", "another model")
            first = str(err).splitlines()[1].strip() if "\n" in str(err) else str(err)
            raise CheckpointError(
                f"checkpoint {source} does not fit the generator model={self.cfg.model.name} ({first}); "
                f"it was trained as {trained_as}"
            ) from err

    def exported_module(self) -> nn.Module:
        return self.generator

    def export_weights(self) -> dict[str, Any]:
        return {"model": self.generator.state_dict(), "meta": inpaint_meta(self.cfg.model, self.generator)}

    # data ------------------------------------------------------------------
    def datasets(self) -> tuple[Dataset, Dataset]:
        dataset, seed = self.cfg.dataset, int(self.cfg.trainer.seed)
        train = InpaintDataset(dataset.root, dataset.train_split, int(self.tcfg.tile), train=True, seed=seed)
        settings = self.tcfg.hard_examples
        if settings.enabled:
            self.hard = HardExamples(len(train), float(settings.ratio), float(settings.momentum))
            train.hard = self.hard
        val_tile = self.tcfg.validation.tile
        val = InpaintDataset(dataset.root, dataset.val_split, None if val_tile is None else int(val_tile), False, seed)
        return train, val

    # steps -----------------------------------------------------------------
    def training_step(
        self, module: nn.Module, batch: dict[str, Any], generator: torch.Generator, updates: PartUpdates | None = None
    ) -> StepOutput:
        losses, per_image, output = module(batch["image"], batch["mask"])
        if self.hard is not None:
            self.hard.update(batch["index"], per_image)
        if updates is not None:
            losses = self._adversarial_step(losses, output, batch, updates)
        return StepOutput(losses, {"tiles": int(batch["image"].shape[0])}, loss_weight=float(batch["image"].shape[0]))

    def _adversarial_step(
        self, losses: dict[str, torch.Tensor], output: torch.Tensor, batch: dict[str, Any], updates: PartUpdates
    ) -> dict[str, torch.Tensor]:
        """Step the discriminator on the real tiles and the fills; return the generator's losses with its
        adversarial term against the updated discriminator, weighted adaptively."""
        image, mask = batch["image"], batch["mask"]
        logits = updates.modules["discriminator"](torch.cat([image, output.detach()]))
        real, fake = logits.chunk(2)
        weights = gan.hole_weights(mask, logits.shape[-2:])
        d_loss = gan.hinge_discriminator_loss(real, fake, weights)
        updates("discriminator", d_loss, float(image.shape[0]))
        # the discriminator itself, not its data-parallel wrapper: the generator's loss trains no discriminator weight
        g_adv = gan.hinge_generator_loss(self.discriminator(output), weights)
        settings = self.adversarial
        ratio = gan.adaptive_weight(losses["loss"], g_adv, self.generator.last_layer, float(settings.max_weight))
        weight = float(settings.weight) * gan.warmup_factor(updates.step, int(settings.warmup_steps))
        return {
            **losses, "loss": losses["loss"] + weight * ratio * g_adv, "d_loss": d_loss.detach(),
            "g_adv": g_adv.detach(), "adaptive_weight": ratio, "adv_weight": weight * ratio,
        }  # fmt: skip

    def evaluate(
        self, module: nn.Module, loader: Any, device: torch.device,
        autocast: Callable[[], contextlib.AbstractContextManager],
    ) -> Evaluation:  # fmt: skip
        """PSNR/SSIM over the hole and the whole image, LPIPS over the hole, and a picture grid."""
        pictures = int(self.tcfg.validation.num_sample_images)
        return evaluate_generator(self.generator, loader, device, autocast, pictures, self.hole_lpips)

    @functools.cached_property
    def hole_lpips(self) -> nn.Module | None:
        """val/hole_lpips's network from the loss's weights file, loaded (or said to be missing) once."""
        return hole_lpips_network(self.cfg.inpaint_loss.get("lpips_weights"), "inpaint_loss.lpips_weights")

    def picture(
        self, module: nn.Module, loader: Any, device: torch.device,
        autocast: Callable[[], contextlib.AbstractContextManager],
    ) -> np.ndarray | None:  # fmt: skip
        """Input with hole | output | truth for the first validation samples (seed 003's --save-eval-step)."""
        rows: list[list[np.ndarray]] = []
        wanted = int(self.tcfg.validation.num_sample_images)
        for batch in loader:
            batch = to_device(batch, device)
            with autocast():
                output = self.generator(batch["image"], batch["mask"]).float()
            psnr = InpaintMeter().add(output, batch["image"], batch["mask"])
            rows += comparison_rows(batch["image"], batch["mask"], output, psnr, wanted - len(rows))
            if len(rows) >= wanted:
                break
        return grid(rows) if rows else None


def evaluate_generator(
    generator: nn.Module, loader: Any, device: torch.device,
    autocast: Callable[[], contextlib.AbstractContextManager], num_pictures: int, lpips: nn.Module | None = None,
) -> Evaluation:  # fmt: skip
    """The meter's metrics of `generator` on `loader` (with `lpips`: hole_lpips too) and up to `num_pictures` rows."""
    meter = InpaintMeter(lpips)
    rows: list[list[np.ndarray]] = []
    for batch in loader:
        batch = to_device(batch, device)
        with autocast():
            output = generator(batch["image"], batch["mask"]).float()
        psnr = meter.add(output, batch["image"], batch["mask"])
        for row in range(min(num_pictures - len(rows), output.shape[0])):
            rows.append(comparison_row(batch["image"][row], batch["mask"][row], output[row], float(psnr[row])))
    return Evaluation(metrics=meter.compute(), image=grid(rows) if rows else None)
