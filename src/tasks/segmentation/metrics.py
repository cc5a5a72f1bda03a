"""Segmentation metrics per object, averaged over objects (mIoU, mean Dice)."""

from __future__ import annotations

import torch

from src.tasks.segmentation.losses import mask_iou
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


def match_boxes(pred: torch.Tensor, target: torch.Tensor, iou_threshold: float = 0.5) -> int:
    """True positives of (N, 4) predicted against (M, 4) true x0,y0,x1,y1 boxes: pairs are matched
    one to one, highest IoU first, and count when their IoU reaches `iou_threshold`."""
    return len(matched_pairs(pred, target, iou_threshold))


def matched_pairs(pred: torch.Tensor, target: torch.Tensor, iou_threshold: float = 0.5) -> list[tuple[int, int]]:
    """(predicted index, true index) of the pairs `match_boxes` counts, so that misses can be shown."""
    from torchvision.ops import box_iou

    if len(pred) == 0 or len(target) == 0:
        return []
    ious = box_iou(pred.float(), target.float())
    pairs = []
    while True:
        best = ious.max()
        if best < iou_threshold:
            return pairs
        i, j = divmod(int(ious.argmax()), ious.shape[1])
        ious[i, :], ious[:, j] = -1, -1
        pairs.append((i, j))


def clicks_to_reach(ious_per_click: torch.Tensor, threshold: float) -> torch.Tensor:
    """Number of clicks (NoC) until each object's IoU first reaches `threshold`.

    `ious_per_click` is (N, K): the IoU after click 1..K. An object that never gets there counts
    as K, the standard NoC@85/NoC@90 protocol of interactive segmentation (RITM, SAM).
    """
    reached = ious_per_click >= threshold
    first = reached.to(torch.int64).argmax(dim=1) + 1
    return torch.where(reached.any(dim=1), first, torch.full_like(first, ious_per_click.shape[1]))
