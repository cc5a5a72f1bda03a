"""PSNR and SSIM over the hole and over the whole image (torchmetrics), LPIPS over the hole, summed over processes."""

from __future__ import annotations

import logging

import torch
from torch import nn
from torchmetrics.functional.image import peak_signal_noise_ratio, structural_similarity_index_measure

from src.tasks.inpainting.losses import lpips_network
from src.utils.distributed import sum_over_ranks

log = logging.getLogger(__name__)


def hole_lpips_network(weights: str | None, key: str) -> nn.Module | None:
    """LPIPS per pixel from the local AlexNet weights the `key` setting names; None (said once) without them."""
    if weights is None:
        log.warning(
            "hole_lpips is skipped: %s is not set and nothing is downloaded; set %s=PATH to a torchvision AlexNet "
            "state dict to measure LPIPS over the hole",
            key,
            key,
        )
        return None
    return lpips_network(str(weights), key, spatial=True)


class InpaintMeter:
    """Per-image PSNR/SSIM, averaged over the images: `hole_*` over hole pixels, the others over all.

    With an `lpips` network (`hole_lpips_network`) it also averages LPIPS's per-pixel distance over the hole."""

    def __init__(self, lpips: nn.Module | None = None) -> None:
        self.sums = {"psnr": 0.0, "ssim": 0.0, "hole_psnr": 0.0, "hole_ssim": 0.0}
        if lpips is not None:
            self.sums["hole_lpips"] = 0.0
        self.lpips = lpips
        self.images = 0

    def add(self, output: torch.Tensor, target: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Adds a batch; returns its per-image hole PSNR."""
        output, target, mask = output.float().clamp(0, 1), target.float(), mask.float()
        if self.lpips is not None:
            distance = self.lpips.to(output.device)(output, target, normalize=True)  # (B, 1, H, W)
            per_image = (distance * mask).flatten(1).sum(1) / mask.flatten(1).sum(1).clamp_min(1)
            self.sums["hole_lpips"] += float(per_image.sum())
        hole_psnr = []
        for out, true, hole in zip(output, target, mask, strict=True):
            out, true, hole = out[None], true[None], hole[None]
            self.sums["psnr"] += float(peak_signal_noise_ratio(out, true, data_range=1.0))
            ssim, ssim_map = structural_similarity_index_measure(out, true, data_range=1.0, return_full_image=True)
            self.sums["ssim"] += float(ssim)
            pixels = hole.sum().clamp_min(1)
            mse = ((out - true) ** 2 * hole).sum() / (pixels * 3)
            psnr = 10 * torch.log10(1 / mse.clamp_min(1e-10))
            hole_psnr.append(float(psnr))
            self.sums["hole_psnr"] += hole_psnr[-1]
            self.sums["hole_ssim"] += float((ssim_map * hole).sum() / (pixels * 3))
            self.images += 1
        return torch.tensor(hole_psnr)

    def compute(self) -> dict[str, float]:
        names = list(self.sums)
        totals = sum_over_ranks([self.sums[name] for name in names] + [float(self.images)])
        images = max(totals[-1], 1.0)
        return {name: value / images for name, value in zip(names, totals[:-1], strict=True)}
