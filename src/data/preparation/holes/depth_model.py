"""Monocular depth from Depth Anything V2 (Hugging Face `transformers`), loaded on first use.

`depth_model` is a size key (its weights are downloaded once, with progress, into `cache_dir`) or
a local folder holding a transformers Depth Anything model (`save_pretrained` output). Nothing is
downloaded or built at import time.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from src.errors import ConfigError

log = logging.getLogger(__name__)

DEPTH_ANYTHING_V2 = {
    "small": "depth-anything/Depth-Anything-V2-Small-hf",
    "base": "depth-anything/Depth-Anything-V2-Base-hf",
    "large": "depth-anything/Depth-Anything-V2-Large-hf",
}
PATCH = 14  # the ViT patch: input sides are multiples of it
IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


class DepthAnything:
    """Relative inverse depth (larger is nearer), at the input image's size."""

    def __init__(self, depth_model: str, resolution: int, cache_dir: str | None, device: torch.device):
        if depth_model not in DEPTH_ANYTHING_V2 and not Path(depth_model).expanduser().is_dir():
            raise ConfigError(
                f"holes.depth_model={depth_model!r}: expected one of {', '.join(DEPTH_ANYTHING_V2)} or a local folder "
                "with a transformers Depth Anything model"
            )
        self.source = DEPTH_ANYTHING_V2.get(depth_model, str(Path(depth_model).expanduser()))
        self.resolution, self.cache_dir, self.device = resolution, cache_dir, device
        self._model: torch.nn.Module | None = None

    @property
    def model(self) -> torch.nn.Module:
        if self._model is None:
            from transformers import AutoModelForDepthEstimation  # heavy: only when depth is estimated

            log.info("loading the depth model %s (downloaded once into %s)", self.source, self.cache_dir)
            # no hub kernels: they would be downloaded, and the model is small enough without them
            self._model = AutoModelForDepthEstimation.from_pretrained(
                self.source, cache_dir=self.cache_dir, use_kernels=False
            )
            self._model.eval().to(self.device)
        return self._model

    @torch.no_grad()
    def __call__(self, image: np.ndarray) -> np.ndarray:
        height, width = image.shape[:2]
        scale = self.resolution / min(height, width)
        size = [max(PATCH, round(side * scale / PATCH) * PATCH) for side in (height, width)]
        pixels = torch.from_numpy(image).permute(2, 0, 1)[None].float().div(255).to(self.device)
        pixels = F.interpolate(pixels, size=size, mode="bicubic", align_corners=False)
        mean = torch.tensor(IMAGENET_MEAN, device=self.device).view(1, 3, 1, 1)
        std = torch.tensor(IMAGENET_STD, device=self.device).view(1, 3, 1, 1)
        depth = self.model(pixel_values=(pixels - mean) / std).predicted_depth[:, None]
        depth = F.interpolate(depth, size=(height, width), mode="bilinear", align_corners=False)
        return depth[0, 0].float().cpu().numpy()
