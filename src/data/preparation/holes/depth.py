"""Stereo disocclusion holes (seed 003): where the other eye's view would reveal unseen background.

Depth (Depth Anything V2, or a map from `depth_dir`) is normalised to [0, 1] (1 nearest) and
turned into a horizontal disparity of `divergence` percent of the width around the `convergence`
plane, both drawn per image as iw3 does. Every pixel is warped to the other eye with a z-buffer
(nearer wins); warping that view back reaches every original pixel except those the other eye
cannot see: background just beside a nearer edge, as wide as the two sides' disparity difference.
Those pixels are the holes, placed on the original image, which stays the ground truth.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar

import cv2
import numpy as np
import torch

from src.data.mask_io import read_image
from src.data.preparation.holes import SourceImage
from src.data.preparation.holes.depth_model import DepthAnything
from src.errors import DataError
from src.utils.device import resolve_device

DEPTH_SUFFIXES = (".npy", ".png", ".tif", ".tiff")


def normalised(depth: np.ndarray) -> np.ndarray:
    """Inverse depth scaled to [0, 1]; a flat map becomes all 0 (no disparity difference, no hole)."""
    low, high = float(depth.min()), float(depth.max())
    return (depth - low) / (high - low) if high > low else np.zeros_like(depth, dtype=np.float32)


def disparity(depth: np.ndarray, divergence: float, convergence: float) -> np.ndarray:
    """Horizontal shift in px to the other eye: `divergence` % of the width per unit of normalised depth."""
    return divergence / 100.0 * depth.shape[1] * (depth - convergence)


def occluded_in_other_view(disparity: np.ndarray, direction: int, min_step: float) -> np.ndarray:
    """True where a pixel shifted by `direction` x `disparity` px (rounded) lands behind a nearer one.

    Larger disparity is nearer. A pixel is hidden when another one lands on the same place with a
    disparity more than `min_step` px larger: a gentle slope squeezed by the warp stays visible, a
    depth edge does not. Pixels shifted out of the frame are not holes.
    """
    height, width = disparity.shape
    target = np.arange(width)[None, :] + np.rint(direction * disparity).astype(np.int64)
    inside = (target >= 0) & (target < width)
    rows = np.broadcast_to(np.arange(height)[:, None], disparity.shape)
    flat = torch.from_numpy((rows * width + np.clip(target, 0, width - 1))[inside])
    values = torch.from_numpy(disparity[inside].astype(np.float32))
    nearest = torch.full((height * width,), -np.inf).scatter_reduce_(0, flat, values, reduce="amax")
    hidden = np.zeros(disparity.shape, bool)
    hidden[inside] = (nearest[flat] - values > min_step).numpy()
    return hidden


@dataclass
class DepthHoles:
    name: str
    depth_model: str  # small | base | large (Depth Anything V2) | a local transformers model folder
    depth_dir: str | None  # maps named like the images (NAME.npy|png|tif, brighter/larger = nearer) instead
    resolution: int  # the depth model's input short side (a multiple of 14 is used)
    divergence: list[float]  # [min, max] % of the image width, drawn per image
    convergence: list[float]  # [min, max] depth of the screen plane (0 far .. 1 near), drawn per image
    min_step: float  # px of disparity difference from which a pixel counts as hidden
    dilate: int  # px the holes grow by (0: the exact disoccluded band)
    cache_dir: str | None
    device: str
    _estimator: DepthAnything | None = field(default=None, init=False, repr=False)

    per_crop: ClassVar[bool] = False

    def holes(self, image: np.ndarray, item: SourceImage, rng: np.random.Generator) -> np.ndarray:
        depth = normalised(self._depth(image, item))
        shift = disparity(depth, rng.uniform(*self.divergence), rng.uniform(*self.convergence))
        direction = 1 if rng.random() < 0.5 else -1  # the left or the right eye
        holes = occluded_in_other_view(shift, direction, self.min_step)
        if self.dilate > 0:
            kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * self.dilate + 1,) * 2)
            holes = cv2.dilate(holes.astype(np.uint8), kernel) > 0
        return holes

    def _depth(self, image: np.ndarray, item: SourceImage) -> np.ndarray:
        if self.depth_dir is None:
            if self._estimator is None:
                device = resolve_device(self.device)
                self._estimator = DepthAnything(self.depth_model, self.resolution, self.cache_dir, device)
            return self._estimator(image)
        return read_depth_map(self.depth_dir, item, image.shape[:2])


def read_depth_map(depth_dir: str, item: SourceImage, shape: tuple[int, int]) -> np.ndarray:
    """The depth map of `item` from `depth_dir`, checked to have the image's size."""
    folder = Path(depth_dir).expanduser()
    found = [
        folder / f"{item.name}{suffix}" for suffix in DEPTH_SUFFIXES if (folder / f"{item.name}{suffix}").is_file()
    ]
    if not found:
        raise DataError(
            f"{item.path}: no depth map {folder / item.name}{{{','.join(DEPTH_SUFFIXES)}}} in holes.depth_dir"
        )
    path = found[0]
    if path.suffix == ".npy":
        try:
            depth = np.load(path, allow_pickle=False)
        except (OSError, ValueError) as err:
            raise DataError(f"cannot read the depth map {path}: {err}") from err
    else:
        depth = cv2.imread(str(path), cv2.IMREAD_ANYDEPTH)
        if depth is None:
            depth = read_image(path)[..., 0]  # raises a DataError naming the file
    depth = np.asarray(depth, np.float32)
    if depth.ndim == 3:
        depth = depth[..., 0]
    if depth.shape != tuple(shape):
        raise DataError(
            f"the depth map {path} is {depth.shape[1] if depth.ndim > 1 else '?'}x{depth.shape[0]} but {item.path} "
            f"is {shape[1]}x{shape[0]}; a depth map must have its image's size"
        )
    return depth
