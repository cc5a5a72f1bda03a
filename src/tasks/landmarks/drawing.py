"""Pictures of landmarks: points in their scheme's group colors, prediction beside ground truth."""

from __future__ import annotations

import cv2
import numpy as np

from src.tasks.landmarks.scheme import LandmarkScheme
from src.utils.pictures import caption, resize_longest


def draw_landmarks(
    image: np.ndarray, points: np.ndarray, scheme: LandmarkScheme, label_points: bool = False
) -> np.ndarray:
    """RGB image with each point a filled dot of its group's color, outlined in white for contrast."""
    out = np.ascontiguousarray(image.copy())
    radius = max(2, round(max(image.shape[:2]) / 100))
    for index, ((x, y), color) in enumerate(zip(points, scheme.colors(), strict=True)):
        centre = (round(float(x) * 16), round(float(y) * 16))  # 4 fractional bits: sub-pixel positions
        cv2.circle(out, centre, radius * 16, (255, 255, 255), thickness=-1, lineType=cv2.LINE_AA, shift=4)
        cv2.circle(out, centre, max(1, radius - 1) * 16, color, thickness=-1, lineType=cv2.LINE_AA, shift=4)
        if label_points:
            anchor = (round(float(x)) + radius + 1, round(float(y)) - radius)
            cv2.putText(out, str(index), anchor, cv2.FONT_HERSHEY_SIMPLEX, 0.3, color, 1, cv2.LINE_AA)
    return out


def side_by_side(
    image: np.ndarray, pred: np.ndarray, true: np.ndarray, scheme: LandmarkScheme, title: str, side: int = 256
) -> list[np.ndarray]:
    """[ground truth | prediction] tiles of one image, scaled so its longer side is `side` pixels."""
    scale = side / max(image.shape[:2])
    small = resize_longest(image, side)
    return [
        caption(draw_landmarks(small, true * scale + (scale - 1) / 2, scheme), "ground truth"),
        caption(draw_landmarks(small, pred * scale + (scale - 1) / 2, scheme), title),
    ]
