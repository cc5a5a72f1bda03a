"""Segmentation metrics per object, averaged over objects (mIoU, mean Dice)."""

from __future__ import annotations

import torch

from src.losses import mask_iou
from src.utils.distributed import sum_over_ranks


def mask_dice(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Dice of boolean masks over the last two dims; two empty masks count as a perfect match."""
    inter = (pred & target).flatten(-2).sum(-1).float()
    total = pred.flatten(-2).sum(-1).float() + target.flatten(-2).sum(-1).float()
    return torch.where(total > 0, 2 * inter / total.clamp(min=1), torch.ones_like(total))


class MeanMetrics:
    """Accumulates per-object IoU and Dice; `compute()` returns their means.

    In a data-parallel run each process sees part of the objects; `compute()` returns the means
    over all of them, on every process.
    """

    def __init__(self) -> None:
        self.ious: list[float] = []
        self.dices: list[float] = []

    def update(self, pred: torch.Tensor, target: torch.Tensor) -> None:
        self.ious.extend(mask_iou(pred, target).reshape(-1).tolist())
        self.dices.extend(mask_dice(pred, target).reshape(-1).tolist())

    def compute(self) -> dict[str, float]:
        iou_sum, dice_sum, count = sum_over_ranks([sum(self.ious), sum(self.dices), len(self.ious)])
        if not count:
            return {"miou": float("nan"), "dice": float("nan"), "objects": 0.0}
        return {"miou": iou_sum / count, "dice": dice_sum / count, "objects": count}
