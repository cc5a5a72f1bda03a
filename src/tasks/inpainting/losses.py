"""Inpainting losses (the `inpaint_loss=` group): clamped L1 and LPIPS, over the hole.

LPIPS (torchmetrics' network: AlexNet features and its packaged linear heads) needs ImageNet
AlexNet weights, which nothing here downloads: `lpips_weights` names a torchvision AlexNet state
dict. Without one the LPIPS term is switched off with a warning and training runs on L1 alone.
"""

from __future__ import annotations

import logging
from pathlib import Path

import torch
from torch import nn

from src.errors import CheckpointError
from src.utils.checkpoint_io import read_checkpoint

log = logging.getLogger(__name__)


def hole_l1(output: torch.Tensor, target: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean |clamp(output) - target| over the hole's pixels and channels."""
    error = (output.clamp(0, 1) - target).abs() * mask
    return error.sum() / (mask.sum() * output.shape[1]).clamp_min(1)


def lpips_network(weights: str, key: str = "inpaint_loss.lpips_weights", spatial: bool = False) -> nn.Module:
    """torchmetrics' LPIPS with its packaged linear heads and the AlexNet features from `weights` (the `key` set).

    `spatial=True`: a distance per pixel (B, 1, H, W) instead of per image, so it can be averaged over a hole."""
    import torchvision
    from torchmetrics.functional.image.lpips import _NoTrainLpips

    path = Path(weights).expanduser()
    # the backbone is filled in below, not downloaded
    network = _NoTrainLpips(net="alex", pretrained=True, pnet_rand=True, spatial=spatial)
    alexnet = torchvision.models.alexnet(weights=None)
    state = read_checkpoint(path)
    try:
        alexnet.load_state_dict(state)
    except RuntimeError as err:
        raise CheckpointError(f"{key}={path}: not a torchvision AlexNet state dict ({err})") from err
    for part in (network.net.slice1, network.net.slice2, network.net.slice3, network.net.slice4, network.net.slice5):
        for name, module in part.named_children():
            module.load_state_dict(alexnet.features[int(name)].state_dict())
    for parameter in network.parameters():
        parameter.requires_grad_(False)
    return network.eval()


class InpaintLoss(nn.Module):
    """l1_weight x clamped L1 over the hole + lpips_weight x LPIPS of the output against the truth."""

    def __init__(self, l1_weight: float, lpips_weight: float, lpips_weights: str | None):
        super().__init__()
        self.l1_weight, self.lpips_weight = l1_weight, lpips_weight
        self.lpips = None
        if lpips_weight > 0 and lpips_weights is None:
            log.warning(
                "LPIPS IS OFF: loss.lpips_weights is not set and nothing is downloaded, so the loss is L1 only. "
                "Set loss.lpips_weights=PATH to a torchvision AlexNet state dict to train with LPIPS (weight %s)",
                lpips_weight,
            )
        elif lpips_weight > 0:
            self.lpips = lpips_network(str(lpips_weights))

    def forward(self, output: torch.Tensor, target: torch.Tensor, mask: torch.Tensor) -> dict[str, torch.Tensor]:
        losses = {"l1": hole_l1(output, target, mask)}
        total = self.l1_weight * losses["l1"]
        if self.lpips is not None:
            losses["lpips"] = self.lpips(output.clamp(0, 1).float(), target.float(), normalize=True).mean()
            total = total + self.lpips_weight * losses["lpips"]
        losses["loss"] = total
        return losses
