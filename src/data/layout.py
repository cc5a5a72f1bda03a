"""The on-disk layout every segmentation dataset shares, and its checks.

    ROOT/images/SPLIT/NAME.{jpg,png,...}
    ROOT/masks/SPLIT/NAME.{png,jpg}

Problems are collected over the whole split and reported together, so one run lists every file to
fix instead of failing on the first.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from src.data.mask_io import image_size
from src.errors import ConfigError, DataError

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")
MASK_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")
LAYOUT_HINT = "expected ROOT/images/SPLIT/NAME.jpg|png with a mask ROOT/masks/SPLIT/NAME.png of the same size"


IMAGES, MASKS = "images", "masks"  # the two folders of a dataset root, each with one folder per split


def image_dir(root: str | Path, split: str) -> Path:
    return Path(root) / IMAGES / split


def mask_dir(root: str | Path, split: str) -> Path:
    return Path(root) / MASKS / split


def mask_file(root: str | Path, split: str, name: str) -> Path:
    """Where the mask of image `name` goes (always PNG: masks must survive without compression loss)."""
    return mask_dir(root, split) / f"{name}.png"


def image_name(path: Path, folder: Path) -> str:
    """`folder/a/b/001.jpg` -> `a_b_001`: pages of different books stay apart."""
    return "_".join(path.relative_to(folder).with_suffix("").parts)


def find_images(folder: str | Path | None, key: str, suffixes: Iterable[str] = IMAGE_SUFFIXES) -> list[Path]:
    """Every image under `folder`, recursively and sorted, hidden files and folders ignored; `key` names the setting."""
    if folder is None:
        raise ConfigError(f"{key} is not set: expected a folder")
    folder = Path(folder).expanduser()
    if not folder.is_dir():
        raise ConfigError(f"{key}={folder}: no such folder")
    suffixes = tuple(suffixes)
    found = [
        path
        for path in sorted(folder.rglob("*"))
        if path.is_file()
        and path.suffix.lower() in suffixes
        and not any(part.startswith(".") for part in path.relative_to(folder).parts)
    ]
    if not found:
        raise DataError(f"{key}={folder} holds no images ({', '.join(suffixes)})")
    return found


def list_images(folder: str | Path | None, key: str, suffixes: Iterable[str] = IMAGE_SUFFIXES) -> dict[str, Path]:
    """name -> file for every image under `folder` (`find_images`), subfolders joined into the name."""
    found: dict[str, Path] = {}
    for path in find_images(folder, key, suffixes):
        name = image_name(path, Path(folder).expanduser())
        if name in found:
            raise DataError(f"{found[name]} and {path} both give the name {name!r}; rename one of them")
        found[name] = path
    return found


def image_tree(folder: str | Path | None, key: str) -> dict[str, Path]:
    """`a/b/001` -> `folder/a/b/001.jpg` for every image under `folder` (`find_images`): outputs mirror the input.

    Refused: two images of one name (`001.jpg`, `001.png`), and an image whose output folder would
    hold another's (`a/b.png` beside the folder `a/b/`).
    """
    tree: dict[str, Path] = {}
    for path in find_images(folder, key):
        name = path.relative_to(Path(folder).expanduser()).with_suffix("").as_posix()
        if name in tree:
            raise DataError(f"{tree[name]} and {path} both give the name {name!r}; rename one of them")
        tree[name] = path
    for name, path in tree.items():
        for parent in PurePosixPath(name).parents:
            if (other := tree.get(parent.as_posix())) is not None:
                raise DataError(
                    f"{other} and {path}: the outputs of {other.name} would be a folder {parent} that also holds "
                    f"those of {path.name}; rename {other.name} or the folder {path.parent.name}"
                )
    return tree


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
    images_in, masks_in = image_dir(root, split), mask_dir(root, split)
    for folder in (images_in, masks_in):
        if not folder.is_dir():
            raise DataError(f"{folder} does not exist; {LAYOUT_HINT} (dataset.root={root})")
    images = _by_stem(images_in, IMAGE_SUFFIXES)
    masks = _by_stem(masks_in, MASK_SUFFIXES)
    if not images:
        raise DataError(f"split {split!r} is empty: no images in {images_in}; {LAYOUT_HINT}")
    problems = []
    if missing := sorted(images.keys() - masks.keys()):
        problems.append(f"{len(missing)} images in {images_in} have no mask in {masks_in}: {_listing(missing)}")
    if orphans := sorted(masks.keys() - images.keys()):
        problems.append(f"{len(orphans)} masks in {masks_in} have no image in {images_in}: {_listing(orphans)}")
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
