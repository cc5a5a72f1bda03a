"""Input folders: images found by name, user masks paired with them, and fingerprints for reruns."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np

from src.data.layout import MASK_SUFFIXES, list_images
from src.data.mask_io import read_instance_mask
from src.utils.download import sha256_of


class Unlabelled(Exception):
    """An input that gets no mask; the message says why, and the run reports it as skipped."""


def fingerprint(path: str | Path | None) -> str | None:
    """Identity of an input, cheap to recompute: a file's SHA-256, or a folder's names, sizes and times."""
    if path is None:
        return None
    path = Path(path).expanduser()
    if path.is_file():
        return sha256_of(path)
    digest = hashlib.sha256()
    for item in sorted(path.rglob("*")):
        if item.is_file():
            stat = item.stat()
            digest.update(f"{item.relative_to(path)}\0{stat.st_size}\0{stat.st_mtime_ns}\n".encode())
    return digest.hexdigest()


class UserMasks:
    """Masks a user made elsewhere (binary or instance-id), matched to images by name.

    `mask_dir/a/001.png` belongs to the input image `a/001.jpg`; a mask of another size than its
    image, a missing mask and a mask without an image are each reported.
    """

    def __init__(self, mask_dir: str | Path | None, mask_type: str = "auto"):
        self.mask_dir, self.mask_type = mask_dir, mask_type
        self._masks: dict[str, Path] | None = None
        self.used: set[str] = set()

    @property
    def masks(self) -> dict[str, Path]:
        if self._masks is None:
            self._masks = list_images(self.mask_dir, "prepare.mask_dir", MASK_SUFFIXES)
        return self._masks

    def __call__(self, name: str, image: np.ndarray) -> tuple[None, np.ndarray]:
        mask = self.masks.get(name)
        if mask is None:
            raise Unlabelled(f"no mask named {name}.png (or .jpg, ...) in {self.mask_dir}")
        self.used.add(name)
        ids = read_instance_mask(mask, self.mask_type)
        if ids.shape != image.shape[:2]:
            raise Unlabelled(
                f"its mask {mask} is {ids.shape[1]}x{ids.shape[0]}, the image {image.shape[1]}x{image.shape[0]}"
            )
        if not ids.any():
            raise Unlabelled(f"its mask {mask} is empty")
        return None, ids

    def unmatched(self) -> dict[str, Path]:
        """Masks that no input image claimed (a typo in a name, an image deleted since)."""
        return {name: path for name, path in self.masks.items() if name not in self.used}
