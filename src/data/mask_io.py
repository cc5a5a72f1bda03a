"""Reading images and masks, with errors that name the file and what was expected.

A mask is binary (one object) or an instance-id map (0 background, 1..N objects). JPEG masks, as
Kvasir-SEG ships them, carry compression noise and are always thresholded at >127.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from src.errors import DataError

JPEG_SUFFIXES = (".jpg", ".jpeg")
MASK_TYPES = ("auto", "binary", "instance")
# An instance map holds a handful of ids; hundreds of grey levels mean an anti-aliased binary mask.
MAX_AUTO_INSTANCE_IDS = 100


def _open(path: Path) -> Image.Image:
    try:
        image = Image.open(path)
        image.load()
        return image
    except (UnidentifiedImageError, OSError, SyntaxError) as err:
        raise DataError(f"cannot read {path}: {err}. Expected a readable image file (JPEG, PNG, ...)") from err


def image_size(path: Path) -> tuple[int, int]:
    """(width, height) from the file header, without decoding the pixels."""
    try:
        with Image.open(path) as image:
            return image.size
    except (UnidentifiedImageError, OSError) as err:
        raise DataError(f"cannot read {path}: {err}. Expected a readable image file (JPEG, PNG, ...)") from err


def read_image(path: str | Path, upright: bool = False) -> np.ndarray:
    """RGB uint8 (H, W, 3).

    `upright=True` applies the EXIF orientation first, as image viewers do, so that pixel
    coordinates a user reads off a viewer (a photo from a phone) point where they meant. Dataset
    images are read as stored, since their masks were drawn on the stored pixels.
    """
    image = _open(Path(path))
    if upright:
        image = ImageOps.exif_transpose(image)
    return np.asarray(image.convert("RGB"))


def read_instance_mask(path: str | Path, mask_type: str = "auto") -> np.ndarray:
    """Instance ids (H, W) int32: 0 is background, each other value one object."""
    path = Path(path)
    if mask_type not in MASK_TYPES:
        raise DataError(f"dataset.mask_type={mask_type!r}: expected one of {', '.join(MASK_TYPES)}")
    image = _open(path)
    if image.mode in ("RGB", "RGBA"):
        rgb = np.asarray(image.convert("RGB"))
        if not (np.array_equal(rgb[..., 0], rgb[..., 1]) and np.array_equal(rgb[..., 0], rgb[..., 2])):
            raise DataError(
                f"mask {path} is a colour image; expected a single-channel mask (binary, or instance ids "
                "0..N), or a palette PNG whose indices are the ids"
            )
        values = rgb[..., 0]
    elif image.mode in ("L", "P", "1", "I", "I;16", "I;16B", "I;16L"):
        values = np.asarray(image)
    else:
        values = np.asarray(image.convert("L"))
    values = values.astype(np.int32)
    jpeg = path.suffix.lower() in JPEG_SUFFIXES
    if jpeg and mask_type == "instance":
        raise DataError(f"mask {path} is a JPEG: lossy compression corrupts instance ids; save instance masks as PNG")
    if mask_type == "binary" or jpeg:
        return _binarize(values)
    if mask_type == "auto":
        distinct = np.unique(values)
        if set(distinct.tolist()) <= {0, 255}:
            return _binarize(values)
        if len(distinct) > MAX_AUTO_INSTANCE_IDS:
            raise DataError(
                f"mask {path} has {len(distinct)} distinct values, which looks like an anti-aliased or "
                "grayscale binary mask rather than instance ids; set dataset.mask_type=binary to threshold it "
                "at >127"
            )
    return values


def _binarize(values: np.ndarray) -> np.ndarray:
    threshold = 127 if values.max(initial=0) > 1 else 0
    return (values > threshold).astype(np.int32)
