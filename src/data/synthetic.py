"""The embedded default dataset: coloured shapes over CC0 photos from scikit-image's wheel.

It is generated locally and deterministically from its parameters, so the README's first command
and the tests need no download. It is written in the shared on-disk layout and then read back
through the same code as real data.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Sequence
from pathlib import Path

import cv2
import numpy as np
from skimage import data as skdata
from tqdm import tqdm

from src.data.layout import image_dir, mask_dir, mask_file
from src.errors import ConfigError, DataError
from src.utils.atomic import atomic_dir, file_lock

log = logging.getLogger(__name__)

# Photos bundled in the scikit-image wheel (public domain / CC0), usable offline.
PHOTOS = (
    "astronaut",
    "coffee",
    "chelsea",
    "rocket",
    "immunohistochemistry",
    "hubble_deep_field",
    "retina",
    "camera",
    "coins",
    "brick",
    "grass",
    "gravel",
    "moon",
    "clock",
)
SHAPES = ("ellipse", "rectangle", "polygon")
SPEC_FILE = "synthetic.json"


def _photo(name: str) -> np.ndarray:
    image = getattr(skdata, name)()
    if image.ndim == 2:
        image = np.repeat(image[..., None], 3, axis=2)
    return np.ascontiguousarray(image[..., :3])


def _background(rng: np.random.Generator, size: int) -> np.ndarray:
    photo = _photo(PHOTOS[rng.integers(len(PHOTOS))])
    h, w = photo.shape[:2]
    side = int(rng.uniform(0.5, 1.0) * min(h, w))
    y, x = rng.integers(0, h - side + 1), rng.integers(0, w - side + 1)
    return cv2.resize(photo[y : y + side, x : x + side], (size, size), interpolation=cv2.INTER_AREA)


def _draw_shape(
    ids: np.ndarray,
    value: int,
    rng: np.random.Generator,
    min_frac: float,
    max_frac: float,
    kinds: Sequence[str] = SHAPES,
) -> None:
    """One filled shape whose diameter is a fraction of the image's shorter side."""
    h, w = ids.shape
    radius = rng.uniform(min_frac, max_frac) * min(h, w) / 2
    cx, cy = rng.uniform(radius, np.array([w, h]) - radius)
    kind = kinds[rng.integers(len(kinds))]
    if kind == "ellipse":
        axes = (int(radius), int(radius * rng.uniform(0.5, 1.0)))
        cv2.ellipse(ids, (int(cx), int(cy)), axes, rng.uniform(0, 180), 0, 360, value, thickness=-1)
        return
    if kind == "rectangle":
        box = cv2.boxPoints(((cx, cy), (2 * radius, 2 * radius * rng.uniform(0.4, 1.0)), rng.uniform(0, 90)))
        corners = box.astype(np.int32)
    else:
        angles = np.sort(rng.uniform(0, 2 * np.pi, rng.integers(3, 7)))
        radii = radius * rng.uniform(0.6, 1.0, len(angles))
        corners = np.stack([cx + radii * np.cos(angles), cy + radii * np.sin(angles)], axis=1).astype(np.int32)
    cv2.fillPoly(ids, [corners], value)


def make_sample(
    rng: np.random.Generator, size: int, min_shapes: int, max_shapes: int, min_frac: float, max_frac: float
) -> tuple[np.ndarray, np.ndarray]:
    """One image and its instance ids; later shapes occlude earlier ones."""
    return paint_shapes(_background(rng, size), rng, min_shapes, max_shapes, min_frac, max_frac)


def paint_shapes(
    image: np.ndarray,
    rng: np.random.Generator,
    min_shapes: int,
    max_shapes: int,
    min_frac: float,
    max_frac: float,
    kinds: Sequence[str] = SHAPES,
) -> tuple[np.ndarray, np.ndarray]:
    """Paint between `min_shapes` and `max_shapes` textured shapes over a copy of `image`; return it and the ids."""
    if unknown := set(kinds) - set(SHAPES):
        raise ConfigError(f"shape kinds {sorted(unknown)}: expected some of {', '.join(SHAPES)}")
    image = image.copy()
    ids = np.zeros(image.shape[:2], np.uint8)
    for value in range(1, int(rng.integers(min_shapes, max_shapes + 1)) + 1):
        _draw_shape(ids, value, rng, min_frac, max_frac, kinds)
    for value in np.unique(ids[ids > 0]):
        region = ids == value
        colour = rng.integers(0, 256, 3)
        texture = rng.normal(0, 12, (int(region.sum()), 3))
        image[region] = np.clip(colour + texture, 0, 255).astype(np.uint8)
    return image, ids


def ensure_synthetic_dataset(
    root: str | Path,
    num_train: int = 48,
    num_val: int = 12,
    image_size: int = 256,
    min_shapes: int = 1,
    max_shapes: int = 3,
    min_size: float = 0.2,
    max_size: float = 0.5,
    seed: int = 0,
) -> Path:
    """Write the synthetic dataset to `root` unless the same one is already there; return `root`."""
    root = Path(root)
    spec = {
        "num_train": num_train,
        "num_val": num_val,
        "image_size": image_size,
        "min_shapes": min_shapes,
        "max_shapes": max_shapes,
        "min_size": min_size,
        "max_size": max_size,
        "seed": seed,
    }
    return generate_once(root, spec, SPEC_FILE, "a synthetic dataset", lambda tmp: _write(tmp, **spec))


def _write(
    tmp: Path,
    num_train: int,
    num_val: int,
    image_size: int,
    min_shapes: int,
    max_shapes: int,
    min_size: float,
    max_size: float,
    seed: int,
) -> None:
    for split_id, (split, count) in enumerate((("train", num_train), ("val", num_val))):
        image_dir(tmp, split).mkdir(parents=True)
        mask_dir(tmp, split).mkdir(parents=True)
        for i in tqdm(range(count), desc=f"synthetic {split}", leave=False):
            rng = np.random.default_rng([seed, split_id, i])
            image, ids = make_sample(rng, image_size, min_shapes, max_shapes, min_size, max_size)
            name = f"{split}_{i:04d}"
            jpeg = [cv2.IMWRITE_JPEG_QUALITY, 95]
            cv2.imwrite(str(image_dir(tmp, split) / f"{name}.jpg"), image[..., ::-1], jpeg)
            cv2.imwrite(str(mask_file(tmp, split, name)), ids)


def generate_once(root: Path, spec: dict, spec_file: str, kind: str, write: Callable[[Path], None]) -> Path:
    """Run `write(tmp)` into a fresh folder that replaces `root`, unless `root` already holds the same `spec`.

    One process at a time (parallel jobs of a sweep generate it once); a folder that holds something
    else is never overwritten; an interrupted run leaves no half-written `root`.
    """
    with file_lock(root.parent / ".locks" / root.name):
        marker = root / spec_file
        if marker.is_file() and json.loads(marker.read_text()) == spec:
            return root
        if root.exists() and any(root.iterdir()) and not marker.is_file():
            raise DataError(
                f"{root} exists and holds files that are not {kind} ({spec_file} is missing); "
                "point dataset.root at an empty or new folder"
            )
        log.info("generating %s in %s", kind, root)
        with atomic_dir(root) as tmp:
            write(tmp)
            (tmp / spec_file).write_text(json.dumps(spec, indent=2))
        return root
