"""PSNR and SSIM over the hole and over the whole image (torchmetrics), summed over processes."""

from __future__ import annotations

import torch
from torchmetrics.functional.image import peak_signal_noise_ratio, structural_similarity_index_measure

from src.utils.distributed import sum_over_ranks


class InpaintMeter:
    """Per-image PSNR/SSIM, averaged over the images: `hole_*` over hole pixels, the others over all."""

    def __init__(self) -> None:
        self.sums = {"psnr": 0.0, "ssim": 0.0, "hole_psnr": 0.0, "hole_ssim": 0.0}
        self.images = 0

    def add(self, output: torch.Tensor, target: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Adds a batch; returns its per-image hole PSNR."""
        output, target, mask = output.float().clamp(0, 1), target.float(), mask.float()
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
