"""Mask losses after SAM2's trainer (`training/loss_fns.py`) and the seed scripts.

One class covers both recipes: `loss=dice_focal` weights focal 20, dice 1, IoU-head L1 1 (SAM2);
`loss=bce_iou` weights BCE 1 and IoU-head L1 0.05 (seed 001). With several candidate masks per
prompt (multimask output), the mask terms back-propagate through the best candidate only, while
the IoU head learns the true IoU of every candidate.
"""

from __future__ import annotations

from functools import partial

import torch
import torch.nn.functional as F
from torch import nn

from src.errors import ConfigError


def sigmoid_focal_loss(
    logits: torch.Tensor, targets: torch.Tensor, alpha: float = 0.25, gamma: float = 2.0
) -> torch.Tensor:
    """Per-mask mean focal loss, (N, M, H, W) -> (N, M)."""
    prob = logits.sigmoid()
    ce = F.binary_cross_entropy_with_logits(logits, targets, reduction="none")
    p_t = prob * targets + (1 - prob) * (1 - targets)
    loss = ce * (1 - p_t) ** gamma
    if alpha >= 0:
        loss = (alpha * targets + (1 - alpha) * (1 - targets)) * loss
    return loss.flatten(2).mean(-1)


def dice_loss(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Per-mask soft Dice loss with +1 smoothing, (N, M, H, W) -> (N, M)."""
    prob = logits.sigmoid().flatten(2)
    targets = targets.flatten(2)
    return 1 - (2 * (prob * targets).sum(-1) + 1) / (prob.sum(-1) + targets.sum(-1) + 1)


def bce_loss(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Per-mask mean binary cross-entropy, (N, M, H, W) -> (N, M)."""
    return F.binary_cross_entropy_with_logits(logits, targets, reduction="none").flatten(2).mean(-1)


def mask_iou(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """IoU of boolean masks over the last two dims; an empty union counts as a perfect match."""
    inter = (pred & target).flatten(-2).sum(-1).float()
    union = (pred | target).flatten(-2).sum(-1).float()
    return torch.where(union > 0, inter / union.clamp(min=1), torch.ones_like(union))


class MaskLoss(nn.Module):
    """Weighted mask terms (focal, dice, bce) plus an L1 term on the predicted IoU."""

    def __init__(
        self,
        focal_weight: float = 0.0,
        dice_weight: float = 0.0,
        bce_weight: float = 0.0,
        iou_weight: float = 0.0,
        focal_alpha: float = 0.25,
        focal_gamma: float = 2.0,
    ):
        super().__init__()
        self.weights = {"focal": focal_weight, "dice": dice_weight, "bce": bce_weight}
        if not any(self.weights.values()):
            raise ConfigError("loss: at least one of focal_weight, dice_weight, bce_weight must be > 0")
        self.iou_weight = iou_weight
        self.term_fns = {
            "focal": partial(sigmoid_focal_loss, alpha=focal_alpha, gamma=focal_gamma),
            "dice": dice_loss,
            "bce": bce_loss,
        }

    def forward(self, logits: torch.Tensor, iou_pred: torch.Tensor, targets: torch.Tensor) -> dict[str, torch.Tensor]:
        """`logits` (N, M, H, W), `iou_pred` (N, M), boolean `targets` (N, H, W).

        Returns the weighted total as "loss" and each unweighted term by name.
        """
        logits = logits.float()
        expanded = targets[:, None].expand_as(logits).float()
        per_mask = {name: self.term_fns[name](logits, expanded) for name, w in self.weights.items() if w}
        combined = sum(self.weights[name] * value for name, value in per_mask.items())
        best = combined.detach().argmin(dim=1, keepdim=True)
        terms = {name: value.gather(1, best).mean() for name, value in per_mask.items()}
        total = sum(self.weights[name] * terms[name] for name in terms)
        if self.iou_weight:
            true_iou = mask_iou(logits.detach() > 0, targets[:, None].expand_as(logits))
            terms["iou"] = (iou_pred.float() - true_iou).abs().mean()
            total = total + self.iou_weight * terms["iou"]
        return {"loss": total, **terms}
