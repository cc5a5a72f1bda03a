"""Pictures of inpainting results: input with its hole | output | ground truth."""

from __future__ import annotations

import numpy as np
import torch

from src.utils.pictures import caption

HOLE_COLOR = np.array([255, 0, 255], np.uint8)  # magenta: a colour photographs rarely have


def to_rgb(image: torch.Tensor) -> np.ndarray:
    return (image.detach().float().clamp(0, 1).permute(1, 2, 0).cpu().numpy() * 255).round().astype(np.uint8)


def with_hole(image: torch.Tensor, mask: torch.Tensor) -> np.ndarray:
    rgb = to_rgb(image)
    rgb[mask[0].cpu().numpy() > 0.5] = HOLE_COLOR
    return rgb


def comparison_row(image: torch.Tensor, mask: torch.Tensor, output: torch.Tensor, hole_psnr: float) -> list[np.ndarray]:
    return [
        caption(with_hole(image, mask), "input"),
        caption(to_rgb(output), f"output, hole PSNR {hole_psnr:.2f} dB"),
        caption(to_rgb(image), "truth"),
    ]


def comparison_rows(
    image: torch.Tensor, mask: torch.Tensor, output: torch.Tensor, hole_psnr: torch.Tensor, count: int
) -> list[list[np.ndarray]]:
    """`comparison_row` for the first `count` images of a batch."""
    return [comparison_row(image[i], mask[i], output[i], float(hole_psnr[i])) for i in range(min(count, len(image)))]
