"""The seed-001 training loop ("fine-tune SAM2 in 60 lines"), as the baseline the benchmark compares to.

Every iteration: one image, encoded afresh although the encoder is frozen (`predictor.set_image`),
one point inside one object, batch 1, multimask output with the loss on the first mask: binary
cross-entropy on the sigmoid plus 0.05 x |predicted IoU - IoU of the thresholded mask|, AdamW.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch

from src.models.sam2.model import Sam2Model
from src.tasks.segmentation.dataset import SegmentationDataset


@dataclass
class LoopResult:
    steps: int = 0
    prompts: int = 0
    images: int = 0
    train_s: float = 0.0
    step_ends: list[float] = field(default_factory=list)  # seconds of training when each step ended
    losses: list[float] = field(default_factory=list)
    curve: list[tuple[float, float]] = field(default_factory=list)  # (seconds of training, val mIoU)


def seed_loss(logits: torch.Tensor, iou_pred: torch.Tensor, target: torch.Tensor, iou_weight: float) -> torch.Tensor:
    """Seed 001's loss on the first of the multimask outputs: logits (1, M, H, W), target (1, H, W)."""
    gt = target.float()
    prd_mask = torch.sigmoid(logits[:, 0])
    seg_loss = (-gt * torch.log(prd_mask + 1e-5) - (1 - gt) * torch.log(1 - prd_mask + 1e-5)).mean()
    binary = (prd_mask > 0.5).float()
    inter = (gt * binary).sum((1, 2))
    iou = inter / (gt.sum((1, 2)) + binary.sum((1, 2)) - inter)
    score_loss = torch.abs(iou_pred[:, 0] - iou).mean()
    return seg_loss + score_loss * iou_weight


class SeedLoop:
    """Trains `model` in place the seed way, one iteration per `step()`."""

    def __init__(
        self,
        model: Sam2Model,
        dataset: SegmentationDataset,
        device: torch.device,
        lr: float,
        weight_decay: float,
        iou_weight: float,
        seed: int,
    ):
        self.model, self.dataset, self.device, self.iou_weight = model, dataset, device, iou_weight
        # seed 001 hands AdamW every parameter; only those with gradients (decoder, prompt encoder) move
        self.optimizer = torch.optim.AdamW(model.trainable_parameters(), lr=lr, weight_decay=weight_decay)
        self.rng = np.random.default_rng(seed)
        self.size = (model.image_size, model.image_size)

    def step(self) -> float | None:
        """One iteration on a random image and object; None when the image had no object."""
        item = self.dataset[int(self.rng.integers(len(self.dataset)))]
        if len(item["masks"]) == 0:
            return None
        mask = item["masks"][int(self.rng.integers(len(item["masks"])))].to(self.device)
        ys, xs = torch.nonzero(mask, as_tuple=True)
        pick = int(self.rng.integers(len(xs)))
        point = torch.tensor([[[float(xs[pick]), float(ys[pick])]]], device=self.device)
        label = torch.ones(1, 1, dtype=torch.int32, device=self.device)
        features = self.model.encode(item["image"][None].to(self.device))  # set_image, every iteration
        first = torch.zeros(1, dtype=torch.long, device=self.device)
        out = self.model.decode(features, first, point, label, multimask=True)
        loss = seed_loss(self.model.upscale(out.low_res_logits, self.size), out.iou_pred, mask[None], self.iou_weight)
        self.optimizer.zero_grad()
        loss.backward()
        self.optimizer.step()
        return float(loss.detach())

    def run(
        self, budget_s: float, validate: Callable[[], float] | None = None, every_s: float = math.inf
    ) -> LoopResult:
        """Iterate for `budget_s` seconds of training; `validate()` (val mIoU) runs at the start and
        after every `every_s` seconds of training, its own time not counted."""
        result = LoopResult()
        started, paused = time.perf_counter(), 0.0

        def clock() -> float:
            return time.perf_counter() - started - paused

        def checkpoint() -> None:
            nonlocal paused
            begun = time.perf_counter()
            result.curve.append((clock(), validate()))
            self.model.train()
            paused += time.perf_counter() - begun

        if validate is not None:
            checkpoint()
        self.model.train()
        next_eval = every_s
        while clock() < budget_s:
            loss = self.step()
            if loss is None:
                continue
            result.steps += 1
            result.prompts += 1
            result.images += 1
            result.losses.append(loss)
            result.step_ends.append(clock())
            if validate is not None and result.step_ends[-1] >= next_eval:
                next_eval = result.step_ends[-1] + every_s
                checkpoint()
        result.train_s = result.step_ends[-1] if result.step_ends else 0.0
        return result
