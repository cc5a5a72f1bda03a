"""Images with instance masks at model resolution, for training and validation.

Each item holds the image (uint8, normalised later on the device), one boolean mask per object with
the seed of its training-prompt stream and, for validation, fixed prompts and the masks at the
original resolution, where metrics are computed.

With an embedding cache (`features`), an item also holds the image's cached encoder features (None
for a view not cached yet: the training process encodes it on first use). Augmentation then cannot
be drawn afresh per step, so each image has `cache_views` fixed views: view 0 is the image itself,
views 1.. are augmented once with seeded draws, and each training sample picks one of them by a
seeded draw of its own, whatever the cache holds: a cold and a warm cache train alike.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import torch
from torch.utils.data import Dataset
from tqdm import tqdm

from src.data.augment import JointAugment
from src.data.layout import find_pairs
from src.data.mask_io import read_image, read_instance_mask
from src.errors import DataError
from src.models.sam2.embedding_cache import EmbeddingCache
from src.utils.seeding import derive_seed

log = logging.getLogger(__name__)


def resize_image(image: np.ndarray, size: int) -> np.ndarray:
    """Square model input, as SAM2's predictor does: area filter when shrinking, bilinear when growing.

    Training, evaluation and inference all go through here, so a fine-tuned model sees at
    inference exactly the pixels it was trained on.
    """
    h, w = image.shape[:2]
    interp = cv2.INTER_AREA if h > size or w > size else cv2.INTER_LINEAR
    return cv2.resize(image, (size, size), interpolation=interp)


def resize_pair(image: np.ndarray, ids: np.ndarray, size: int) -> tuple[np.ndarray, np.ndarray]:
    """The image as `resize_image` makes it, and its instance ids resized with nearest neighbours."""
    ids = cv2.resize(ids.astype(np.float32), (size, size), interpolation=cv2.INTER_NEAREST).astype(np.int32)
    return resize_image(image, size), ids


class SegmentationDataset(Dataset):
    """One split of a dataset in the shared on-disk layout (see `src.data.layout`).

    Keys are an index, or `(index, seed)` pairs from `EpochSampler`, so augmentation draws depend
    on the sample and epoch only, not on which worker loads it.
    """

    def __init__(
        self,
        root: str | Path,
        split: str,
        image_size: int,
        mask_type: str = "auto",
        max_objects: int = 8,
        min_object_area: int = 16,
        augment: JointAugment | None = None,
        seed: int = 0,
        cache_views: int = 1,
    ):
        self.root, self.split = Path(root), split
        self.pairs = find_pairs(self.root, split)
        self.image_size, self.mask_type = image_size, mask_type
        self.max_objects, self.min_object_area = max_objects, min_object_area
        self.augment = augment
        self.seed = seed
        if cache_views < 1:
            raise DataError(f"data.cache_views={cache_views}: expected at least 1 (view 0 is the image itself)")
        self.cache_views = cache_views
        self.features: EmbeddingCache | None = None  # set by `SegmentationTask.prepare`

    def __len__(self) -> int:
        return len(self.pairs)

    def skip_empty_masks(self) -> int:
        """Leave out images whose mask holds no object (nothing to learn or score); name each, return how many.

        A split with no object at all is refused: it would train on nothing, or validate to NaN.
        """
        kept = []
        for pair in tqdm(self.pairs, desc=f"checking {self.split} masks", mininterval=1.0, leave=False):
            if read_instance_mask(pair.mask, self.mask_type).any():
                kept.append(pair)
            else:
                log.warning("mask %s is empty (no object): %s is skipped", pair.mask, pair.image)
        skipped = len(self.pairs) - len(kept)
        if not kept:
            raise DataError(
                f"split {self.split!r} of {self.root}: all {len(self.pairs)} masks are empty (no object to learn "
                "or score); check the masks, or dataset.mask_type if objects are not stored as ids > 0"
            )
        if skipped:
            log.warning("split %r: %d of %d images skipped for empty masks", self.split, skipped, len(self.pairs))
        self.pairs = kept
        return skipped

    def load(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        """Image (H, W, 3) and instance ids (H, W) at original resolution."""
        pair = self.pairs[index]
        image, ids = read_image(pair.image), read_instance_mask(pair.mask, self.mask_type)
        if image.shape[:2] != ids.shape:
            raise DataError(f"mask {pair.mask} is {ids.shape[::-1]} but {pair.image} is {image.shape[1::-1]} (w, h)")
        return image, ids

    def view(
        self, index: int, view: int, loaded: tuple[np.ndarray, np.ndarray] | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """Fixed view `view` of image `index` at model resolution: 0 as is, 1.. augmented by seeded draws.

        `loaded` is the image and ids from `load(index)`, when the caller has them already.
        """
        image, ids = resize_pair(*(loaded or self.load(index)), self.image_size)
        if view > 0 and self.augment is not None:
            image, ids = self.augment(image, ids, np.random.default_rng(derive_seed(self.seed, index, view)))
        return image, ids

    def cached_view_pixels(self, key: tuple[int, int]) -> torch.Tensor:
        """Pixels (3, S, S) of view `key` = (index, view), as the encoder takes them (for filling the cache)."""
        return to_chw(self.view(*key)[0])

    @property
    def cache_keys(self) -> list[tuple[int, int]]:
        """Every (index, view) pair an embedding cache must hold for this split."""
        return [(index, view) for index in range(len(self)) for view in range(self.cache_views)]

    def __getitem__(self, key: int | tuple[int, int]) -> dict[str, Any]:
        index, seed = key if isinstance(key, tuple) else (key, derive_seed(self.seed, key))
        rng = np.random.default_rng(seed)
        image, ids = self.load(index)
        if self.features is not None:  # one of the fixed views whose features are cached
            view = int(np.random.default_rng(derive_seed(seed, 1)).integers(self.cache_views))
            small_image, small_ids = self.view(index, view, (image, ids))
        else:
            small_image, small_ids = resize_pair(image, ids, self.image_size)
            if self.augment is not None:
                small_image, small_ids = self.augment(small_image, small_ids, rng)
        objects = self._select_objects(small_ids, rng)
        masks = torch.from_numpy(small_ids[None] == objects[:, None, None])
        item: dict[str, Any] = {
            "image": to_chw(small_image),
            "masks": masks,
            "index": index,
            # each object's prompts come from its own stream, whichever batch or process it lands in
            "prompt_seeds": [derive_seed(seed, int(obj)) for obj in objects],
        }
        if self.features is not None:
            item["features"] = self.features.lookup(item["image"])
        return item

    def _select_objects(self, ids: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """Object ids visible at model resolution, at most `max_objects` of them (drawn at random)."""
        values, counts = np.unique(ids[ids > 0], return_counts=True)
        objects = values[counts >= self.min_object_area]
        if len(objects) > self.max_objects:
            objects = np.sort(rng.choice(objects, self.max_objects, replace=False))
        return objects.astype(np.int32)


def to_chw(image: np.ndarray) -> torch.Tensor:
    """(H, W, 3) uint8 image as the (3, H, W) tensor models and caches take."""
    return torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1)


def collate_segmentation(items: list[dict[str, Any]]) -> dict[str, Any]:
    """Stack images; concatenate objects across images, each remembering its image's row."""
    batch: dict[str, Any] = {
        "images": torch.stack([item["image"] for item in items]),
        "masks": torch.cat([item["masks"] for item in items]),
        "image_index": torch.cat(
            [torch.full((len(item["masks"]),), row, dtype=torch.long) for row, item in enumerate(items)]
        ),
        "index": torch.tensor([item["index"] for item in items]),
        "prompt_seeds": [seed for item in items for seed in item["prompt_seeds"]],
    }
    if "features" in items[0]:  # per image: stacked by the task once the views not cached yet are encoded
        batch["features"] = [item["features"] for item in items]
    return batch
