"""The on-disk layout every segmentation dataset shares, and its checks.

    ROOT/images/SPLIT/NAME.{jpg,png,...}
    ROOT/masks/SPLIT/NAME.{png,jpg}

Problems are collected over the whole split and reported together, so one run lists every file to
fix instead of failing on the first.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from src.data.mask_io import image_size
from src.errors import DataError

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")
MASK_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")
LAYOUT_HINT = "expected ROOT/images/SPLIT/NAME.jpg|png with a mask ROOT/masks/SPLIT/NAME.png of the same size"


@dataclass(frozen=True)
class Pair:
    name: str
    image: Path
    mask: Path


def _by_stem(folder: Path, suffixes: Iterable[str]) -> dict[str, Path]:
    files: dict[str, Path] = {}
    for path in sorted(folder.iterdir()):
        if path.is_file() and path.suffix.lower() in suffixes and not path.name.startswith("."):
            if path.stem in files:
                raise DataError(f"{files[path.stem].name} and {path.name} in {folder} share the name {path.stem!r}")
            files[path.stem] = path
    return files


def _listing(names: list[str], limit: int = 10) -> str:
    shown = ", ".join(names[:limit])
    return shown + (f" ... ({len(names) - limit} more)" if len(names) > limit else "")


def find_pairs(root: str | Path, split: str, check_sizes: bool = True) -> list[Pair]:
    """All image/mask pairs of a split, matched by file name without extension."""
    root = Path(root)
    image_dir, mask_dir = root / "images" / split, root / "masks" / split
    for folder in (image_dir, mask_dir):
        if not folder.is_dir():
            raise DataError(f"{folder} does not exist; {LAYOUT_HINT} (dataset.root={root})")
    images = _by_stem(image_dir, IMAGE_SUFFIXES)
    masks = _by_stem(mask_dir, MASK_SUFFIXES)
    if not images:
        raise DataError(f"split {split!r} is empty: no images in {image_dir}; {LAYOUT_HINT}")
    problems = []
    if missing := sorted(images.keys() - masks.keys()):
        problems.append(f"{len(missing)} images in {image_dir} have no mask in {mask_dir}: {_listing(missing)}")
    if orphans := sorted(masks.keys() - images.keys()):
        problems.append(f"{len(orphans)} masks in {mask_dir} have no image in {image_dir}: {_listing(orphans)}")
    pairs = [Pair(name, images[name], masks[name]) for name in sorted(images.keys() & masks.keys())]
    if check_sizes and not problems:
        mismatched = []
        for pair in pairs:
            image_wh, mask_wh = image_size(pair.image), image_size(pair.mask)
            if image_wh != mask_wh:
                mismatched.append(
                    f"{pair.mask} is {mask_wh[0]}x{mask_wh[1]} but {pair.image.name} is {image_wh[0]}x{image_wh[1]}"
                )
        if mismatched:
            problems.append(f"{len(mismatched)} masks differ in size from their image: {_listing(mismatched, 5)}")
    if problems:
        raise DataError("; ".join(problems) + f". {LAYOUT_HINT}")
    return pairs
