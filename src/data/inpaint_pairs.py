"""The on-disk layout of inpainting samples (seed 003's names), and reading one pair with its checks.

    ROOT/SPLIT/{prefix}_{mask_source}_{seq}_C.png   the image (RGB), the ground truth everywhere
    ROOT/SPLIT/{prefix}_{mask_source}_{seq}_M.png   its hole mask: 255 where the model must fill in

Several preparation runs share one folder as long as their (prefix, mask source) differ, so a
sample's key is everything before `_C`/`_M`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from src.data.mask_io import read_image
from src.errors import DataError

IMAGE_TAG, MASK_TAG = "C", "M"
SEQ_DIGITS = 6
_NAME = re.compile(
    rf"^(?P<prefix>.+)_(?P<source>[a-z][a-z0-9]*(?:_[a-z][a-z0-9]*)*)_(?P<seq>\d{{{SEQ_DIGITS}}})_(?P<tag>[CM])\.png$"
)


@dataclass(frozen=True)
class SampleName:
    prefix: str
    source: str
    seq: int

    @property
    def key(self) -> str:
        """What the image and mask file of the sample share: `{prefix}_{source}_{seq}`."""
        return f"{self.prefix}_{self.source}_{self.seq:0{SEQ_DIGITS}d}"

    def file(self, tag: str) -> str:
        return f"{self.key}_{tag}.png"

    @classmethod
    def parse(cls, file_name: str, sources: tuple[str, ...]) -> SampleName:
        """The inverse of `file`: `sources` are the known mask-source names (a prefix may hold `_`)."""
        match = _NAME.match(file_name)
        if match is None:
            raise DataError(f"{file_name}: expected PREFIX_SOURCE_{'N' * SEQ_DIGITS}_C.png or _M.png")
        head = f"{match['prefix']}_{match['source']}"
        for source in sorted(sources, key=len, reverse=True):
            if head.endswith(f"_{source}") and len(head) > len(source) + 1:
                return cls(head[: -len(source) - 1], source, int(match["seq"]))
        raise DataError(f"{file_name}: its mask source is none of {', '.join(sources)}")


@dataclass(frozen=True)
class InpaintPair:
    key: str
    image: Path
    mask: Path


def run_key(prefix: str, source: str) -> str:
    """The file-name start shared by every sample of one preparation run."""
    return f"{prefix}_{source}"


def find_inpaint_pairs(root: str | Path, split: str) -> list[InpaintPair]:
    """Every `_C.png` of ROOT/SPLIT with its `_M.png`; a missing partner is an error naming the file."""
    folder = Path(root) / split
    if not folder.is_dir():
        raise DataError(f"{folder} does not exist; prepare it with python -m src.prepare dataset=inpaint")
    pairs, missing = [], []
    for image in sorted(folder.glob(f"*_{IMAGE_TAG}.png")):
        key = image.name[: -len(f"_{IMAGE_TAG}.png")]
        mask = folder / f"{key}_{MASK_TAG}.png"
        if mask.is_file():
            pairs.append(InpaintPair(key, image, mask))
        else:
            missing.append(image.name)
    if missing:
        raise DataError(f"{folder}: {len(missing)} images have no _{MASK_TAG}.png mask, e.g. {missing[0]}")
    if not pairs:
        raise DataError(
            f"{folder} holds no *_{IMAGE_TAG}.png samples; prepare it with python -m src.prepare dataset=inpaint"
        )
    return pairs


def read_hole_mask(path: str | Path, shape: tuple[int, int], image_path: str | Path | None = None) -> np.ndarray:
    """A hole mask as bool (H, W): True (grey > 127) where the image is to be filled.

    Refuses a mask of another size than the image (`shape`), and masks without any hole or with
    nothing but hole, since neither can be learned from or filled.
    """
    mask = read_image(path)[..., 0] > 127
    if mask.shape != tuple(shape):
        of = f" {image_path}" if image_path else " the image"
        raise DataError(
            f"{path} is {mask.shape[1]}x{mask.shape[0]} but{of} is {shape[1]}x{shape[0]}; a mask must match its image"
        )
    if not mask.any():
        raise DataError(f"{path} has no hole (no pixel above 127); expected white where the image is to be filled")
    if mask.all():
        raise DataError(f"{path} is all hole; at least some pixels must be kept for the model to fill from")
    return mask
