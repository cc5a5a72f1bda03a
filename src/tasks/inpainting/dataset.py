"""Inpainting samples as training tiles: random crops (with a hole) of the prepared 512 px samples."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from src.data.inpaint_pairs import find_inpaint_pairs, read_hole_mask
from src.data.mask_io import read_image
from src.tasks.inpainting.hard_examples import HardExamples
from src.utils.seeding import derive_seed, torch_generator


class InpaintDataset(Dataset):
    """`(index, seed)` -> image, mask (1 in the hole) and index; training crops `tile` px at random
    (a few tries for one with a hole) and flips, validation takes the centre `tile` (null: all)."""

    def __init__(
        self, root: str | Path, split: str, tile: int | None, train: bool, seed: int,
        hard_examples: HardExamples | None = None,
    ):  # fmt: skip
        self.pairs = find_inpaint_pairs(root, split)
        self.tile, self.train, self.seed, self.hard = tile, train, seed, hard_examples

    def __len__(self) -> int:
        return len(self.pairs)

    def load(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        pair = self.pairs[index]
        image = read_image(pair.image)
        return image, read_hole_mask(pair.mask, image.shape[:2], pair.image)

    def __getitem__(self, key: int | tuple[int, int]) -> dict[str, Any]:
        index, seed = key if isinstance(key, tuple) else (key, derive_seed(self.seed, key))
        generator = torch_generator(seed)
        if self.hard is not None:
            index = self.hard.pick(index, generator)
        image, mask = self.load(index)
        image, mask = self._crop(image, mask, generator)
        if self.train and float(torch.rand((), generator=generator)) < 0.5:
            image, mask = image[:, ::-1], mask[:, ::-1]
        return {
            "image": torch.from_numpy(np.array(image)).permute(2, 0, 1).float().div(255),
            "mask": torch.from_numpy(np.array(mask))[None].float(),
            "index": index,
        }

    def _crop(self, image: np.ndarray, mask: np.ndarray, generator: torch.Generator) -> tuple[np.ndarray, np.ndarray]:
        height, width = mask.shape
        tile = self.tile
        if tile is None or (height <= tile and width <= tile):
            return image, mask
        tile_h, tile_w = min(tile, height), min(tile, width)
        if not self.train:
            y, x = (height - tile_h) // 2, (width - tile_w) // 2
            return image[y : y + tile_h, x : x + tile_w], mask[y : y + tile_h, x : x + tile_w]
        for _ in range(8):
            y = int(torch.randint(0, height - tile_h + 1, (), generator=generator))
            x = int(torch.randint(0, width - tile_w + 1, (), generator=generator))
            if mask[y : y + tile_h, x : x + tile_w].any():
                break
        return image[y : y + tile_h, x : x + tile_w], mask[y : y + tile_h, x : x + tile_w]


def collate_inpaint(items: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
    return {
        "image": torch.stack([item["image"] for item in items]),
        "mask": torch.stack([item["mask"] for item in items]),
        "index": torch.tensor([item["index"] for item in items]),
    }
