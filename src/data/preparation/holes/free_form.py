"""LaMa-style free-form holes: thick random strokes and boxes, drawn for each crop."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import cv2
import numpy as np

from src.data.preparation.holes import SourceImage


@dataclass
class FreeFormHoles:
    name: str
    strokes: list[int]  # [min, max] strokes per crop
    vertices: list[int]  # [min, max] segments per stroke
    stroke_width: list[float]  # [min, max] as fractions of the crop side
    segment_length: list[float]  # [min, max] as fractions of the crop side
    boxes: list[int]  # [min, max] boxes per crop
    box_side: list[float]  # [min, max] box width/height as fractions of the crop side
    max_area: float  # a shape that would take the hole area above this fraction is not drawn

    per_crop: ClassVar[bool] = True

    def holes(self, image: np.ndarray, item: SourceImage | None, rng: np.random.Generator) -> np.ndarray:
        height, width = image.shape[:2]
        side = min(height, width)
        mask = np.zeros((height, width), np.uint8)
        shapes = ["stroke"] * int(rng.integers(self.strokes[0], self.strokes[1] + 1))
        shapes += ["box"] * int(rng.integers(self.boxes[0], self.boxes[1] + 1))
        for kind in rng.permutation(shapes) if shapes else []:
            candidate = mask.copy()
            if kind == "stroke":
                self._stroke(candidate, side, rng)
            else:
                self._box(candidate, side, rng)
            if candidate.mean() / 255 <= self.max_area:
                mask = candidate
        return mask > 0

    def _stroke(self, mask: np.ndarray, side: int, rng: np.random.Generator) -> None:
        height, width = mask.shape
        thickness = max(1, int(rng.uniform(*self.stroke_width) * side))
        x, y = float(rng.uniform(0, width)), float(rng.uniform(0, height))
        for _ in range(int(rng.integers(self.vertices[0], self.vertices[1] + 1))):
            angle = rng.uniform(0, 2 * np.pi)
            length = rng.uniform(*self.segment_length) * side
            nx = float(np.clip(x + length * np.cos(angle), 0, width - 1))
            ny = float(np.clip(y + length * np.sin(angle), 0, height - 1))
            cv2.line(mask, (int(x), int(y)), (int(nx), int(ny)), 255, thickness)
            cv2.circle(mask, (int(nx), int(ny)), thickness // 2, 255, -1)
            x, y = nx, ny

    def _box(self, mask: np.ndarray, side: int, rng: np.random.Generator) -> None:
        height, width = mask.shape
        box_w, box_h = (max(1, int(rng.uniform(*self.box_side) * side)) for _ in range(2))
        x0, y0 = int(rng.integers(0, max(1, width - box_w))), int(rng.integers(0, max(1, height - box_h)))
        mask[y0 : y0 + box_h, x0 : x0 + box_w] = 255
