"""Object-shaped holes (object removal): the masks of a segmentation dataset or of `src.automask`."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import cv2
import numpy as np

from src.data.layout import mask_file
from src.data.mask_io import read_image, read_instance_mask
from src.data.preparation.holes import SourceImage
from src.errors import DataError


@dataclass
class ObjectHoles:
    name: str
    # null: the input is a prepared segmentation dataset and its own masks/SPLIT/NAME.png are used;
    # else a `python -m src.automask` output folder (NAME/masks/NNN.png per image)
    mask_dir: str | None
    max_objects: int  # objects removed at once (drawn at random among those large enough)
    min_area: float  # smallest object, as a fraction of the image
    dilate: int  # px the holes grow by, so that no outline of the object is left to copy

    per_crop: ClassVar[bool] = False

    def holes(self, image: np.ndarray, item: SourceImage, rng: np.random.Generator) -> np.ndarray:
        objects = self._objects(item, image.shape[:2])
        large = [mask for _, mask in objects if mask.mean() >= self.min_area]
        holes = np.zeros(image.shape[:2], bool)
        if not large:
            return holes
        count = int(rng.integers(1, min(self.max_objects, len(large)) + 1))
        for index in rng.choice(len(large), size=count, replace=False):
            holes |= large[int(index)]
        if self.dilate > 0:
            kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * self.dilate + 1,) * 2)
            holes = cv2.dilate(holes.astype(np.uint8), kernel) > 0
        return holes

    def _objects(self, item: SourceImage, shape: tuple[int, int]) -> list[tuple[Path, np.ndarray]]:
        if self.mask_dir is None:
            path = mask_file(item.root, item.split, item.name)
            if not path.is_file():
                raise DataError(
                    f"{item.path}: no object mask {path}; holes=objects reads a prepared segmentation dataset's "
                    "masks/SPLIT/NAME.png, or set holes.mask_dir to a python -m src.automask output folder"
                )
            ids = _sized(read_instance_mask(path), path, item, shape)
            return [(path, ids == value) for value in np.unique(ids[ids > 0])]
        folder = Path(self.mask_dir).expanduser() / item.name / "masks"
        if not folder.is_dir():
            raise DataError(f"{item.path}: no {folder}; expected src.automask output for it in holes.mask_dir")
        return [
            (path, _sized(read_image(path)[..., 0] > 127, path, item, shape)) for path in sorted(folder.glob("*.png"))
        ]


def _sized(mask: np.ndarray, path: Path, item: SourceImage, shape: tuple[int, int]) -> np.ndarray:
    if mask.shape != tuple(shape):
        raise DataError(
            f"{path} is {mask.shape[1]}x{mask.shape[0]} but {item.path} is {shape[1]}x{shape[0]}; "
            "an object mask must match its image"
        )
    return mask
