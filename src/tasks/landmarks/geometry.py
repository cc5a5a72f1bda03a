"""Crop geometry shared by training, evaluation and prediction: one affine from image to model input.

Pixel convention throughout: the centre of the top-left pixel is (0, 0). A square crop of side
`side` around `center` is mapped onto the S x S model input; rotation, zoom and a mirror flip are
folded into the same matrix, so points and pixels always move together.
"""

from __future__ import annotations

import math

import cv2
import numpy as np
import torch


def square_box(points: np.ndarray, margin: float) -> tuple[np.ndarray, float]:
    """Centre and side of the square around `points`' box, enlarged by `margin` of its longer side."""
    lo, hi = points.min(axis=0), points.max(axis=0)
    side = float(max(hi - lo)) * (1 + margin)
    return (lo + hi) / 2, max(side, 1.0)


def image_box(width: int, height: int) -> tuple[np.ndarray, float]:
    """The square that holds the whole image (for predicting on an image without a face box)."""
    return np.array([(width - 1) / 2, (height - 1) / 2]), float(max(width, height))


def crop_affine(
    center: np.ndarray, side: float, size: int, angle: float = 0.0, zoom: float = 1.0, flip: bool = False
) -> np.ndarray:
    """2x3 matrix from image pixels to model-input pixels (rotation in degrees, counter-clockwise)."""
    scale = size / side * zoom
    rad = math.radians(angle)
    cos, sin = math.cos(rad) * scale, math.sin(rad) * scale
    linear = np.array([[cos, sin], [-sin, cos]])  # cv2's convention for a positive angle
    if flip:
        linear = np.array([[-1.0, 0.0], [0.0, 1.0]]) @ linear
    out_center = np.array([(size - 1) / 2, (size - 1) / 2])
    offset = out_center - linear @ np.asarray(center, dtype=np.float64)
    return np.hstack([linear, offset[:, None]])


def invert_affine(matrix: np.ndarray) -> np.ndarray:
    return cv2.invertAffineTransform(np.asarray(matrix, dtype=np.float64))


def apply_affine(matrix: np.ndarray, points: np.ndarray) -> np.ndarray:
    """(K, 2) points through a 2x3 matrix."""
    return points @ matrix[:, :2].T + matrix[:, 2]


def warp(image: np.ndarray, matrix: np.ndarray, size: int) -> np.ndarray:
    """The model input: `image` through `matrix`, black outside the image."""
    return cv2.warpAffine(image, matrix, (size, size), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT)


def crop_to_image(points: torch.Tensor, inverse: torch.Tensor) -> torch.Tensor:
    """Batched (B, K, 2) crop points -> original-image pixels through (B, 2, 3) inverse matrices."""
    return torch.einsum("bij,bkj->bki", inverse[:, :, :2].to(points.dtype), points) + inverse[:, None, :, 2].to(
        points.dtype
    )
