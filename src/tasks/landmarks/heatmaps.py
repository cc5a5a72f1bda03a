"""Gaussian heatmap targets and their decoding back to pixels, with DARK sub-pixel refinement.

Heatmap cell j covers model-input pixels [j*stride, (j+1)*stride), so its centre is the input
coordinate (j + 0.5) * stride - 0.5. Decoding takes the arg-max, then one Newton step on the log of
the Gaussian-smoothed heatmap (Zhang et al., "Distribution-Aware Coordinate Representation", 2020):
for a Gaussian peak the log is a quadratic and the step lands on the true centre.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


class HeatmapCodec:
    """Points (in model-input pixels) <-> (K, S/stride, S/stride) heatmaps."""

    def __init__(self, sigma: float, blur_kernel: int, stride: int, refine: bool):
        """`task.heatmap` of conf/task/landmarks.yaml; `stride` is the model's (its heatmap resolution)."""
        if blur_kernel and blur_kernel % 2 == 0:
            raise ValueError(f"task.heatmap.blur_kernel={blur_kernel}: expected an odd size or 0 (no smoothing)")
        self.sigma, self.blur_kernel, self.stride, self.refine = float(sigma), int(blur_kernel), int(stride), refine

    def to_heatmap_space(self, points: torch.Tensor) -> torch.Tensor:
        return (points + 0.5) / self.stride - 0.5

    def to_input_space(self, coords: torch.Tensor) -> torch.Tensor:
        return (coords + 0.5) * self.stride - 0.5

    def encode(self, points: torch.Tensor, input_size: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Targets (..., K, H, W) with peak 1 at each point, and weights (..., K): 0 for points outside."""
        size = input_size // self.stride
        centres = self.to_heatmap_space(points.float())
        grid = torch.arange(size, dtype=torch.float32, device=points.device)
        dx = grid - centres[..., 0:1]  # (..., K, W)
        dy = grid - centres[..., 1:2]  # (..., K, H)
        heatmaps = torch.exp(-(dy[..., :, None] ** 2 + dx[..., None, :] ** 2) / (2 * self.sigma**2))
        inside = ((points >= -0.5) & (points <= input_size - 0.5)).all(dim=-1)
        return heatmaps * inside[..., None, None], inside.float()

    def decode(self, heatmaps: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, K, H, W) -> points (B, K, 2) in model-input pixels and peak scores (B, K)."""
        heatmaps = heatmaps.float()
        batch, points, _, width = heatmaps.shape
        flat = heatmaps.reshape(batch, points, -1)
        scores, index = flat.max(dim=-1)
        coords = torch.stack([index % width, index // width], dim=-1).float()
        if self.refine:
            coords = coords + self._dark_offsets(heatmaps, index)
        return self.to_input_space(coords), scores

    def _dark_offsets(self, heatmaps: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
        """Newton step -H^-1 g of the log heatmap at the arg-max; zero where the Hessian is not a maximum's."""
        batch, points, height, width = heatmaps.shape
        smooth = heatmaps
        if self.blur_kernel:
            smooth = _gaussian_blur(heatmaps, self.blur_kernel, self.sigma)
        log = smooth.clamp(min=1e-10).log()
        padded = F.pad(log.reshape(batch * points, 1, height, width), (2, 2, 2, 2), mode="replicate")
        padded = padded.reshape(batch, points, height + 4, width + 4)
        x, y = index % width + 2, index // width + 2

        def at(dx: int, dy: int) -> torch.Tensor:
            flat = padded.reshape(batch, points, -1)
            return flat.gather(-1, ((y + dy) * (width + 4) + (x + dx)).unsqueeze(-1)).squeeze(-1)

        centre = at(0, 0)
        gx = 0.5 * (at(1, 0) - at(-1, 0))
        gy = 0.5 * (at(0, 1) - at(0, -1))
        hxx = 0.25 * (at(2, 0) - 2 * centre + at(-2, 0))
        hyy = 0.25 * (at(0, 2) - 2 * centre + at(0, -2))
        hxy = 0.25 * (at(1, 1) - at(-1, 1) - at(1, -1) + at(-1, -1))
        det = hxx * hyy - hxy**2
        ok = (det > 1e-6) & (hxx < 0)
        safe = torch.where(ok, det, torch.ones_like(det))
        ox = -(hyy * gx - hxy * gy) / safe
        oy = -(-hxy * gx + hxx * gy) / safe
        offsets = torch.stack([ox, oy], dim=-1).clamp(-1.0, 1.0)
        return torch.where(ok[..., None], offsets, torch.zeros_like(offsets))


def _gaussian_blur(heatmaps: torch.Tensor, kernel: int, sigma: float) -> torch.Tensor:
    """Separable Gaussian smoothing; zeros outside (a peak near the edge is biased least that way)."""
    radius = kernel // 2
    offsets = torch.arange(-radius, radius + 1, dtype=heatmaps.dtype, device=heatmaps.device)
    weights = torch.exp(-(offsets**2) / (2 * sigma**2))
    weights = weights / weights.sum()
    batch, points, height, width = heatmaps.shape
    out = heatmaps.reshape(batch * points, 1, height, width)
    out = F.conv2d(F.pad(out, (radius, radius, 0, 0), mode="constant"), weights.view(1, 1, 1, -1))
    out = F.conv2d(F.pad(out, (0, 0, radius, radius), mode="constant"), weights.view(1, 1, -1, 1))
    return out.reshape(batch, points, height, width)
