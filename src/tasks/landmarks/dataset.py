"""Landmark samples: images listed in ROOT/<split>.txt with a complete ROOT/annotated/<stem>.json.

Each sample is a square crop around the annotated points' box (enlarged by `margin`), resized to
the model input: the top-down setting of seed 002, where a face detector supplies the box. The
crop's affine matrix is returned too, so predictions map back to the original image, where NME
is measured. Images without a complete annotation are skipped and counted, not silently dropped.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset, default_collate

from src.data.augment import JointAugment
from src.data.mask_io import read_image
from src.errors import DataError
from src.tasks.landmarks.annotations import (
    RELATIVE_TO_ROOT,
    LandmarkAnnotation,
    annotated_image,
    annotation_path,
    load_annotation,
)
from src.tasks.landmarks.geometry import apply_affine, crop_affine, invert_affine, square_box, warp
from src.tasks.landmarks.heatmaps import HeatmapCodec
from src.tasks.landmarks.scheme import LandmarkScheme
from src.utils.seeding import derive_seed

log = logging.getLogger(__name__)

ANNOTATED = "annotated"


class LandmarkAugment:
    """Random mirror flip (left/right points swapped), rotation, zoom, shift and colour jitter."""

    def __init__(
        self,
        hflip: float,
        rotation: float,
        scale: Sequence[float],
        shift: float,
        brightness: float,
        contrast: float,
        saturation: float,
        hue: float,
    ):
        """The settings of `task.augmentation` in conf/task/landmarks.yaml (where their defaults live)."""
        self.hflip, self.rotation, self.shift = float(hflip), float(rotation), float(shift)
        self.scale = (float(scale[0]), float(scale[1]))
        # colour only: the geometry above moves points too, which JointAugment's warp cannot
        self.colour = JointAugment(0.0, 0.0, 0.0, (1.0, 1.0), brightness, contrast, saturation, hue)

    def draw(self, rng: np.random.Generator) -> dict[str, Any]:
        return {
            "angle": float(rng.uniform(-self.rotation, self.rotation)),
            "zoom": float(rng.uniform(*self.scale)),
            "shift": rng.uniform(-self.shift, self.shift, size=2),
            "flip": bool(rng.random() < self.hflip),
        }

    def jitter(self, image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        return self.colour(image, np.zeros((1, 1), np.uint8), rng)[0]


@dataclass
class LandmarkEntry:
    image: Path
    annotation: LandmarkAnnotation
    source: Path  # the annotation file, for messages


def split_list(root: Path, split: str) -> list[str]:
    """Image paths (relative to `root`) in ROOT/<split>.txt."""
    path = root / f"{split}.txt"
    if not path.is_file():
        present = sorted(p.name for p in root.glob("*.txt")) if root.is_dir() else []
        raise DataError(
            f"split list {path} does not exist (found: {present or 'nothing'}); expected one image path relative "
            f"to {root} per line, as `python -m src.prepare dataset=animal` writes"
        )
    return [line.strip() for line in path.read_text().splitlines() if line.strip() and not line.startswith("#")]


def find_annotated(root: str | Path, split: str, scheme: LandmarkScheme) -> tuple[list[LandmarkEntry], dict[str, int]]:
    """Listed images with a complete annotation; the others counted by reason."""
    root = Path(root)
    entries, skipped = [], {"not annotated": 0, "incomplete": 0}
    for relative in split_list(root, split):
        source = annotation_path(root / ANNOTATED, relative)
        if not source.is_file():
            skipped["not annotated"] += 1
            continue
        annotation = load_annotation(source, scheme)
        if not annotation.complete:
            skipped["incomplete"] += 1
            continue
        if annotated_image(annotation, source, root).resolve() != (root / relative).resolve():
            raise DataError(
                f"{source}: annotates {annotation.image!r} but {root / (split + '.txt')} lists {relative!r} "
                "under the same file name; two images share a stem"
            )
        image = root / relative
        if not image.is_file():
            raise DataError(f"{root / (split + '.txt')} lists {relative}, but {image} does not exist")
        as_listed = replace(annotation, image=relative, image_relative_to=RELATIVE_TO_ROOT)  # reports name it so
        entries.append(LandmarkEntry(image, as_listed, source))
    return entries, skipped


class LandmarkDataset(Dataset):
    """One split: crops at `image_size`, heatmap targets, and what evaluation needs to map back.

    Keys are an index or `(index, seed)` from `EpochSampler` (augmentation depends on the sample
    and epoch only). Items: image (3, S, S) uint8, heatmaps (K, S/stride, S/stride), weights (K,),
    points (K, 2) in the crop, true_points (K, 2) in the original image, inverse (2, 3) crop -> image.
    """

    def __init__(
        self,
        root: str | Path,
        split: str,
        scheme: LandmarkScheme,
        image_size: int,
        codec: HeatmapCodec,
        margin: float = 0.25,
        augment: LandmarkAugment | None = None,
        seed: int = 0,
    ):
        self.root, self.split, self.scheme = Path(root), split, scheme
        self.entries, self.skipped = find_annotated(self.root, split, scheme)
        skipped = ", ".join(f"{n} {reason}" for reason, n in self.skipped.items() if n)
        if not self.entries:
            raise DataError(
                f"no complete landmark annotation for the {split} split of {self.root} "
                f"({skipped or 'the list is empty'}); annotate images with `python -m src.annotate` "
                f"(files in {self.root / ANNOTATED})"
            )
        if skipped:
            log.warning("%s split of %s: %d images used, skipped %s", split, self.root, len(self.entries), skipped)
        self.image_size, self.codec, self.margin = int(image_size), codec, float(margin)
        self.augment, self.seed = augment, seed
        self.flip_permutation = scheme.flip_permutation()

    def __len__(self) -> int:
        return len(self.entries)

    def load(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        """Original image and its (K, 2) annotated points; a size mismatch names both files."""
        entry = self.entries[index]
        image = read_image(entry.image)
        height, width = image.shape[:2]
        if (width, height) != (entry.annotation.width, entry.annotation.height):
            raise DataError(
                f"{entry.source} was made on a {entry.annotation.width}x{entry.annotation.height} image, but "
                f"{entry.image} is {width}x{height}; re-annotate it or restore the original image"
            )
        return image, np.asarray(entry.annotation.points, dtype=np.float64)

    def __getitem__(self, key: int | tuple[int, int]) -> dict[str, Any]:
        index, seed = key if isinstance(key, tuple) else (key, derive_seed(self.seed, key))
        image, true_points = self.load(index)
        center, side = square_box(true_points, self.margin)
        size = self.image_size
        if self.augment is None:
            matrix = crop_affine(center, side, size)
            crop = warp(image, matrix, size)
            points = apply_affine(matrix, true_points)
        else:
            rng = np.random.default_rng(seed)
            draw = self.augment.draw(rng)
            matrix = crop_affine(center + draw["shift"] * side, side, size, draw["angle"], draw["zoom"], draw["flip"])
            crop = self.augment.jitter(warp(image, matrix, size), rng)
            points = apply_affine(matrix, true_points)
            if draw["flip"]:
                points = points[self.flip_permutation]  # the mirrored left eye is now the right eye
        points_t = torch.from_numpy(points).float()
        heatmaps, weights = self.codec.encode(points_t, size)
        return {
            "image": torch.from_numpy(np.ascontiguousarray(crop)).permute(2, 0, 1),
            "heatmaps": heatmaps,
            "weights": weights,
            "points": points_t,
            "true_points": torch.from_numpy(true_points).float(),
            "inverse": torch.from_numpy(invert_affine(matrix)).float(),
            "index": index,
        }


def collate_landmarks(items: list[dict[str, Any]]) -> dict[str, Any]:
    """Stack every field; the batch's images are `images`, as in segmentation batches."""
    batch = default_collate(items)
    batch["images"] = batch.pop("image")
    return batch
