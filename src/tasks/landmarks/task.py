"""Facial landmarks of animal characters (seed 002): heatmap regression, validated by NME.

Implements the task protocol, so the trainer, MLflow logging, checkpoints, resume, sweeps and
launchers work as they do for segmentation. Validation decodes heatmaps with sub-pixel
refinement, maps the points back to the original image and reports NME overall, per landmark
group, and the failure rate.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf
from torch import nn
from torch.utils.data import Dataset

from src.engine.task import Evaluation, StepOutput, to_device
from src.errors import CheckpointError, ConfigError
from src.models.sam2.weights import resolve_checkpoint
from src.tasks.landmarks.dataset import LandmarkDataset, collate_landmarks
from src.tasks.landmarks.drawing import side_by_side
from src.tasks.landmarks.evaluation import evaluate_batch
from src.tasks.landmarks.model import LandmarkModel, build_landmark_model
from src.tasks.landmarks.nme import NmeMeter
from src.tasks.landmarks.scheme import LandmarkScheme, load_scheme
from src.tasks.landmarks.weights import load_backbone_checkpoint
from src.utils.distributed import sum_over_ranks
from src.utils.pictures import grid

log = logging.getLogger(__name__)


class HeatmapLearner(nn.Module):
    """Forward pass with the loss inside, so data-parallel training wraps one module."""

    def __init__(self, model: LandmarkModel, loss: nn.Module):
        super().__init__()
        self.model, self.loss = model, loss

    def forward(self, images: torch.Tensor, heatmaps: torch.Tensor, weights: torch.Tensor) -> dict[str, torch.Tensor]:
        return self.loss(self.model(images), heatmaps, weights)


def landmark_meta(model_cfg: DictConfig, task_cfg: DictConfig, scheme: LandmarkScheme, model: LandmarkModel) -> dict:
    """What rebuilding the model for inference needs, stored with every checkpoint and export."""
    heatmap = OmegaConf.to_container(task_cfg.heatmap, resolve=True)
    heatmap.pop("_target_", None)  # metadata is data: numbers, never a class to build
    heatmap["stride"] = model.heatmap_stride
    return {
        "task": "landmarks",
        "model": model_cfg.name,
        "model_config": OmegaConf.to_container(model_cfg, resolve=True),
        "image_size": model.image_size,
        "scheme": scheme.to_dict(),
        "heatmap": heatmap,
        "crop_margin": float(task_cfg.crop_margin),
    }


class LandmarkTask:
    """A heatmap model (SAM2 Hiera or HRNetV2-W18 backbone) on annotated landmark files."""

    def __init__(self, cfg: DictConfig, device: torch.device):
        self.cfg, self.tcfg = cfg, cfg.task
        try:
            self.scheme = load_scheme(self.tcfg.scheme)
        except (FileNotFoundError, ValueError) as err:
            raise ConfigError(f"task.scheme={self.tcfg.scheme}: {err}") from err
        self.model = build_landmark_model(cfg.model, self.scheme.num_points)
        self.codec = instantiate(self.tcfg.heatmap, stride=self.model.heatmap_stride)
        self.loss = instantiate(cfg.landmark_loss)
        self.module = HeatmapLearner(self.model, self.loss)
        self.collate = collate_landmarks

    # weights ---------------------------------------------------------------
    def trainable_parameters(self) -> list[nn.Parameter]:
        return self.model.trainable_parameters()

    def load_initial_weights(self) -> None:
        """SAM2 sizes resolve `model.checkpoint` as segmentation does (pretrained, a file or null);
        other models take a file (mmpose-style or ours) or null."""
        choice = self.cfg.model.checkpoint
        if self.cfg.model.get("sam2_config"):
            path = resolve_checkpoint(self.cfg.model, self.cfg.paths.cache_dir)
        elif choice is None:
            log.warning("model.checkpoint=null: the %s landmark model starts from random weights", self.cfg.model.name)
            path = None
        else:
            path = Path(str(choice)).expanduser()
            if not path.is_file():
                raise ConfigError(
                    f"model.checkpoint={choice}: no such file; expected an mmpose HRNetV2 checkpoint, one of ours, "
                    "or null for random weights"
                )
        if path is not None:
            load_backbone_checkpoint(self.model, path)

    def load_weights(self, checkpoint: dict[str, Any], source: str) -> None:
        state = checkpoint.get("model") if isinstance(checkpoint, dict) else None
        if not isinstance(state, dict):
            raise CheckpointError(f"checkpoint {source}: expected a dict with a 'model' state dict")
        own = self.model.state_dict()
        wrong = sorted(set(own) ^ set(state)) or [k for k in own if own[k].shape != state[k].shape]
        if wrong:
            trained_as = (checkpoint.get("meta") or {}).get("model", "another model")
            raise CheckpointError(
                f"checkpoint {source} does not fit the landmark model model={self.cfg.model.name} "
                f"({len(wrong)} keys differ, e.g. {wrong[0]}); it was trained as {trained_as}"
            )
        self.model.load_state_dict(state)

    def exported_module(self) -> nn.Module:
        return self.model

    def export_weights(self) -> dict[str, Any]:
        return {
            "model": self.model.state_dict(),
            "meta": landmark_meta(self.cfg.model, self.tcfg, self.scheme, self.model),
        }

    # data ------------------------------------------------------------------
    def datasets(self) -> tuple[Dataset, Dataset]:
        dataset = self.cfg.dataset
        if dataset.get("generate"):
            instantiate(dataset.generate, root=dataset.root)
        common = {
            "root": dataset.root,
            "scheme": self.scheme,
            "image_size": self.model.image_size,
            "codec": self.codec,
            "margin": float(self.tcfg.crop_margin),
            "seed": int(self.cfg.trainer.seed),
        }
        train = LandmarkDataset(split=dataset.train_split, augment=instantiate(self.tcfg.augmentation), **common)
        val = LandmarkDataset(split=dataset.val_split, **common)
        return train, val

    # steps -----------------------------------------------------------------
    def training_step(self, module: nn.Module, batch: dict[str, Any], generator: torch.Generator) -> StepOutput:
        losses = module(batch["images"], batch["heatmaps"], batch["weights"])
        return StepOutput(losses, {"images": int(batch["images"].shape[0])}, loss_weight=float(batch["weights"].sum()))

    def evaluate(
        self,
        module: nn.Module,
        loader: Any,
        device: torch.device,
        autocast: Callable[[], contextlib.AbstractContextManager],
    ) -> Evaluation:
        """NME in original-image pixels (overall, per group, failure rate), the loss, and a picture."""
        meter = NmeMeter(self.scheme, self.tcfg.nme.normalize, float(self.tcfg.nme.failure_threshold))
        loss_sum, images = 0.0, 0
        rows: list[list[np.ndarray]] = []
        limit = int(self.tcfg.validation.num_sample_images)
        for batch in loader:
            batch = to_device(batch, device)
            out = evaluate_batch(self.model, self.codec, batch, meter, autocast)
            count = batch["images"].shape[0]
            loss_sum += float(self.loss(out.heatmaps, batch["heatmaps"], batch["weights"])["loss"]) * count
            images += count
            for row in range(min(limit - len(rows), count)):
                crop = batch["images"][row].permute(1, 2, 0).cpu().numpy()
                true = batch["points"][row].cpu().numpy()
                title = f"prediction, NME {out.nme[row]:.3f}"
                rows.append(side_by_side(crop, out.crop_points[row], true, self.scheme, title))
        metrics = meter.compute()
        loss_sum, images = sum_over_ranks([loss_sum, images])
        metrics["loss"] = loss_sum / max(images, 1)
        return Evaluation(metrics=metrics, image=grid(rows) if rows else None)
