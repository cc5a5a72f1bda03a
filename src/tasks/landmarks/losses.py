"""Heatmap losses: MSE (seed 002's, mmpose's JointsMSELoss) and Adaptive Wing (Wang et al., 2019).

Selected by `task.loss._target_`; the `loss=` group stays segmentation's. Both take a per-point
weight, so points pushed outside the crop by augmentation teach nothing.
"""

from __future__ import annotations

import torch
from torch import nn


class HeatmapMSE(nn.Module):
    """Mean squared error over pixels, averaged over weighted points (x `scale`, as mmpose's 0.5)."""

    def __init__(self, use_weights: bool, scale: float):
        super().__init__()
        self.use_weights, self.scale = use_weights, float(scale)

    def forward(self, pred: torch.Tensor, target: torch.Tensor, weights: torch.Tensor) -> dict[str, torch.Tensor]:
        per_point = ((pred.float() - target) ** 2).flatten(2).mean(-1)  # (B, K)
        loss = _weighted_mean(per_point, weights if self.use_weights else torch.ones_like(weights))
        return {"loss": loss * self.scale, "mse": loss.detach()}


class AdaptiveWing(nn.Module):
    """Adaptive Wing loss: large gradients near the peak, robust far from it."""

    def __init__(self, alpha: float, omega: float, epsilon: float, theta: float):
        super().__init__()
        self.alpha, self.omega, self.epsilon, self.theta = float(alpha), float(omega), float(epsilon), float(theta)

    def forward(self, pred: torch.Tensor, target: torch.Tensor, weights: torch.Tensor) -> dict[str, torch.Tensor]:
        pred = pred.float()
        delta = (target - pred).abs()
        power = self.alpha - target
        ratio = self.theta / self.epsilon
        a = self.omega * (1 / (1 + ratio**power)) * power * (ratio ** (power - 1)) / self.epsilon
        c = self.theta * a - self.omega * torch.log1p(ratio**power)
        small = self.omega * torch.log1p((delta / self.epsilon) ** power)
        large = a * delta - c
        per_point = torch.where(delta < self.theta, small, large).flatten(2).mean(-1)
        loss = _weighted_mean(per_point, weights)
        mse = _weighted_mean(((pred - target) ** 2).flatten(2).mean(-1), weights)
        return {"loss": loss, "mse": mse.detach()}


def _weighted_mean(per_point: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    weights = weights.float()
    return (per_point * weights).sum() / weights.sum().clamp(min=1.0)
