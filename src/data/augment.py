"""Joint image/mask augmentation (seed 000's flip, rotation, colour jitter and random resize).

Applied at model resolution, after resizing: one affine warp moves image and instance ids together
(bilinear for the image, nearest for the ids, so ids are never blended).
"""

from __future__ import annotations

from collections.abc import Sequence

import cv2
import numpy as np


class JointAugment:
    """Random flips, rotation, zoom and colour jitter; zero strengths switch a part off."""

    def __init__(
        self,
        hflip: float,
        vflip: float,
        rotation: float,
        scale: Sequence[float],
        brightness: float,
        contrast: float,
        saturation: float,
        hue: float,
    ):
        self.hflip, self.vflip, self.rotation = float(hflip), float(vflip), float(rotation)
        self.scale = (float(scale[0]), float(scale[1]))
        self.brightness, self.contrast = float(brightness), float(contrast)
        self.saturation, self.hue = float(saturation), float(hue)

    @property
    def geometric(self) -> bool:
        """Whether masks move: such augmentation changes what the image encoder sees."""
        return bool(self.hflip or self.vflip or self.rotation or self.scale != (1.0, 1.0))

    @property
    def photometric(self) -> bool:
        return bool(self.brightness or self.contrast or self.saturation or self.hue)

    def __call__(self, image: np.ndarray, ids: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        if self.geometric:
            image, ids = self._warp(image, ids, rng)
        if self.photometric:
            image = self._jitter(image, rng)
        return image, ids

    def _warp(self, image: np.ndarray, ids: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        h, w = ids.shape
        angle = rng.uniform(-self.rotation, self.rotation)
        zoom = rng.uniform(*self.scale)
        matrix = cv2.getRotationMatrix2D(((w - 1) / 2, (h - 1) / 2), angle, zoom)
        flip = np.eye(3)
        if rng.random() < self.hflip:
            flip[0, 0], flip[0, 2] = -1, w - 1
        if rng.random() < self.vflip:
            flip[1, 1], flip[1, 2] = -1, h - 1
        matrix = matrix @ flip
        image = cv2.warpAffine(image, matrix, (w, h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT)
        ids = cv2.warpAffine(
            ids.astype(np.float32), matrix, (w, h), flags=cv2.INTER_NEAREST, borderMode=cv2.BORDER_CONSTANT
        ).astype(ids.dtype)
        return image, ids

    def _jitter(self, image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        out = image.astype(np.float32)
        if self.brightness:
            out *= rng.uniform(1 - self.brightness, 1 + self.brightness)
        if self.contrast:
            mean = out.mean()
            out = (out - mean) * rng.uniform(1 - self.contrast, 1 + self.contrast) + mean
        if self.saturation:
            gray = out @ np.array([0.299, 0.587, 0.114], dtype=np.float32)
            out = (out - gray[..., None]) * rng.uniform(1 - self.saturation, 1 + self.saturation) + gray[..., None]
        out = np.clip(out, 0, 255).astype(np.uint8)
        if self.hue:
            hsv = cv2.cvtColor(out, cv2.COLOR_RGB2HSV)
            shift = round(rng.uniform(-self.hue, self.hue) * 180)
            hsv[..., 0] = ((hsv[..., 0].astype(np.int32) + shift) % 180).astype(np.uint8)
            out = cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB)
        return out
