"""Segmentation pictures: prompts (clicks, boxes) drawn over images and predicted masks."""

from __future__ import annotations

import cv2
import numpy as np

from src.tasks.segmentation.prompts import LABEL_BOX_BOTTOM_RIGHT, LABEL_BOX_TOP_LEFT, LABEL_NEGATIVE, LABEL_POSITIVE
from src.utils.pictures import overlay_masks


def draw_prompts(image: np.ndarray, points: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Clicks as filled circles (green foreground, red background) and boxes as rectangles."""
    out = image.copy()
    radius = max(3, image.shape[0] // 80)
    for obj_points, obj_labels in zip(points, labels, strict=True):
        corners = {int(lab): tuple(int(v) for v in pt) for pt, lab in zip(obj_points, obj_labels, strict=True)}
        if LABEL_BOX_TOP_LEFT in corners and LABEL_BOX_BOTTOM_RIGHT in corners:
            cv2.rectangle(out, corners[LABEL_BOX_TOP_LEFT], corners[LABEL_BOX_BOTTOM_RIGHT], (255, 255, 0), 2)
        for pt, lab in zip(obj_points, obj_labels, strict=True):
            if lab in (LABEL_POSITIVE, LABEL_NEGATIVE):
                colour = (0, 255, 0) if lab == LABEL_POSITIVE else (255, 0, 0)
                centre = (int(pt[0]), int(pt[1]))
                cv2.circle(out, centre, radius, colour, thickness=-1)
                cv2.circle(out, centre, radius, (255, 255, 255), thickness=1)
    return out


def overlay_with_prompts(image: np.ndarray, masks: np.ndarray, points: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """`overlay_masks`, then the prompts that produced the masks drawn on top."""
    return draw_prompts(overlay_masks(image, masks), points, labels)
