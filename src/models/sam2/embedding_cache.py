"""The frozen image encoder's outputs on disk: each image view is encoded once, across runs and sweeps.

With a frozen encoder, seed-style loops spend most of their time re-encoding the same images. Here
every view's features (the stride-16 image embedding and the two high-resolution levels) are
stored as one flat `.npy` file, read back memory-mapped:

    <data.cache_dir>/<key>/<pixels hash>.npy

`key` hashes everything the features depend on (SAM2 config, image size, storage dtype, the
encoder's compute precision and every weight `Sam2Model.encode` uses), the file name hashes the
view's pixels: a changed checkpoint, image or image size is a miss, never a stale hit. Files are
written under a temporary name and renamed, so jobs of a sweep that share the cache never see half
a file, whoever writes first.

Training views are encoded on first use (`FirstUse`), not all before the first step: a run on new
data starts training at once and pays only for the views it draws.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from collections.abc import Callable, Iterable
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from src.errors import ConfigError, DataError
from src.models.sam2.model import ImageFeatures, Sam2Model
from src.utils.atomic import atomic_path, file_lock, write_text_atomic

log = logging.getLogger(__name__)

CACHE_DTYPES = ("float16", "float32")
CACHE_MODES = ("auto", True, False)


def cache_enabled(mode: str | bool, encoder_trainable: bool) -> bool:
    """`data.cache_embeddings`: auto is on exactly when the encoder is frozen (its outputs never change)."""
    if mode not in CACHE_MODES:
        raise ConfigError(f"data.cache_embeddings={mode!r}: expected auto, true or false")
    if mode is True and encoder_trainable:
        raise ConfigError(
            "data.cache_embeddings=true but model.trainable includes image_encoder: a trained encoder's outputs "
            "change every step, so they cannot be cached; use data.cache_embeddings=auto or false"
        )
    return mode is True or (mode == "auto" and not encoder_trainable)


def pixels_hash(pixels: torch.Tensor | np.ndarray) -> str:
    """Content hash of one view's uint8 pixels (3, S, S), as the encoder receives them."""
    array = pixels.numpy() if isinstance(pixels, torch.Tensor) else pixels
    digest = hashlib.blake2b(np.ascontiguousarray(array).tobytes(), digest_size=16)
    digest.update(str(array.shape).encode())
    return digest.hexdigest()


def weights_hash(state: dict[str, torch.Tensor]) -> str:
    """Hash of tensors by name and value: any changed weight changes it."""
    digest = hashlib.blake2b(digest_size=16)
    for name in sorted(state):
        tensor = state[name].detach().cpu().contiguous()
        digest.update(f"{name}:{tensor.dtype}:{tuple(tensor.shape)}".encode())
        digest.update(tensor.view(torch.uint8).numpy().tobytes() if tensor.numel() else b"")
    return digest.hexdigest()


class EmbeddingCache:
    """One folder of cached features for one (model, weights, image size, dtype); picklable for loader workers."""

    def __init__(self, directory: str | Path, shapes: list[tuple[int, ...]], dtype: str = "float16"):
        if dtype not in CACHE_DTYPES:
            raise ConfigError(f"data.cache_dtype={dtype!r}: expected one of {', '.join(CACHE_DTYPES)}")
        self.directory = Path(directory)
        self.shapes = [tuple(int(d) for d in shape) for shape in shapes]
        self.dtype = dtype
        self.sizes = [int(np.prod(shape)) for shape in self.shapes]

    @classmethod
    def for_model(
        cls, root: str | Path, model: Sam2Model, sam2_config: str, dtype: str = "float16", precision: str = "float32"
    ) -> EmbeddingCache:
        """The folder for `model`'s current encoder weights under `root`; `precision`: the dtype the encoder
        computes in (bf16 autocast gives features within bf16's precision of fp32's, not the same ones)."""
        identity = {
            "sam2_config": sam2_config,
            "image_size": model.image_size,
            "dtype": dtype,
            "weights": weights_hash(model.encoder_state()),
        }
        if precision != "float32":  # fp32 caches keep the folders they had before precisions were told apart
            identity["precision"] = precision
        key = hashlib.blake2b(json.dumps(identity, sort_keys=True).encode(), digest_size=12).hexdigest()
        cache = cls(Path(root) / key, model.feature_shapes, dtype)
        about = cache.directory / "identity.json"
        if not about.exists():  # for people browsing the cache; not read back
            write_text_atomic(json.dumps({**identity, "shapes": cache.shapes}, indent=1), about)
        return cache

    def path(self, pixels: torch.Tensor | np.ndarray) -> Path:
        return self.directory / f"{pixels_hash(pixels)}.npy"

    def contains(self, pixels: torch.Tensor | np.ndarray) -> bool:
        return self.path(pixels).exists()

    def read(self, pixels: torch.Tensor | np.ndarray) -> list[torch.Tensor]:
        """The view's features [image_embed, high_res_0, high_res_1], unbatched, in the storage dtype."""
        path = self.path(pixels)
        try:
            flat = np.load(path, mmap_mode="r")
        except FileNotFoundError as err:
            raise FileNotFoundError(f"{path}: no cached features for this view; the cache was not filled") from err
        except (OSError, ValueError, EOFError) as err:
            raise DataError(f"{path}: corrupt cached features ({err}); delete it, the next run encodes it") from err
        if flat.shape != (sum(self.sizes),):
            raise DataError(f"{path}: corrupt cached features ({flat.shape}); delete it, the next run encodes it")
        parts, start = [], 0
        for shape, size in zip(self.shapes, self.sizes, strict=True):
            parts.append(torch.from_numpy(np.array(flat[start : start + size]).reshape(shape)))
            start += size
        return parts

    def lookup(self, pixels: torch.Tensor | np.ndarray) -> list[torch.Tensor] | None:
        """`read`, or None for a view not cached yet or a corrupt file (named in a warning): encoded on use."""
        try:
            return self.read(pixels)
        except FileNotFoundError:
            return None
        except DataError as err:
            log.warning("%s", err)
            return None

    @property
    def lock(self) -> Path:
        """The file jobs sharing this cache lock while they encode: one encodes a view, the others then read it."""
        return self.directory / ".fill.lock"

    def write(self, pixels: torch.Tensor | np.ndarray, features: list[torch.Tensor]) -> None:
        """Store one view's unbatched features; atomic, so concurrent writers of the same view are harmless."""
        flat = np.concatenate([f.detach().float().cpu().numpy().reshape(-1) for f in features]).astype(self.dtype)
        with atomic_path(self.path(pixels)) as tmp, open(tmp, "wb") as handle:
            np.save(handle, flat)

    def _whole(self, path: Path) -> bool:
        """Whether `path` holds one view's features (False, with a warning naming it, for a corrupt file)."""
        expected = (sum(self.sizes),)
        try:
            flat = np.load(path, mmap_mode="r")
            problem = None if flat.shape == expected and flat.dtype == self.dtype else f"{flat.dtype}{flat.shape}"
        except (OSError, ValueError, EOFError) as err:
            problem = str(err).strip() or type(err).__name__
        if problem is not None:
            shown = f"{self.dtype}{expected}"
            log.warning("%s: corrupt cached features (%s, expected %s); encoding that view again", path, problem, shown)
        return problem is None

    def fill(
        self,
        views: Iterable[torch.Tensor],
        total: int,
        encode: Callable[[torch.Tensor], ImageFeatures],
        batch_size: int,
        desc: str = "caching embeddings",
        progress: bool = True,
    ) -> int:
        """Encode and store every view (uint8, (3, S, S)) not cached yet; return how many were encoded."""
        pending: dict[str, torch.Tensor] = {}  # by file: a view seen twice is encoded once
        encoded = 0

        def flush() -> None:
            nonlocal encoded
            features = encode(torch.stack(list(pending.values())))
            for row, pixels in enumerate(pending.values()):
                self.write(pixels, [features.image_embed[row], *(f[row] for f in features.high_res_feats)])
            encoded += len(pending)
            pending.clear()

        with tqdm(views, total=total, desc=desc, dynamic_ncols=True, mininterval=1.0, disable=not progress) as bar:
            for pixels in bar:
                path = self.path(pixels)
                if not path.exists() or not self._whole(path):
                    pending[path.name] = pixels
                if len(pending) >= batch_size:
                    flush()
                bar.set_postfix(encoded=encoded + len(pending), refresh=False)
            if pending:
                flush()
        return encoded


class FirstUse:
    """Training views encoded when a batch first draws them, in the training process.

    The loader reads the views already cached; the batch's others are encoded in one no-grad call
    (under the cache's lock, so that sweep jobs drawing the same views encode each once), written
    atomically and read back like the hits: a step computes the same on a cold cache as on a warm one.
    """

    def __init__(self, cache: EmbeddingCache, encode: Callable[[torch.Tensor], ImageFeatures], batch_size: int):
        self.cache, self.encode, self.batch_size = cache, encode, batch_size
        self.encoded, self.seconds = 0, 0.0  # what first use has cost so far

    def complete(self, parts: list[list[torch.Tensor] | None], pixels: torch.Tensor) -> list[list[torch.Tensor]]:
        """`parts` (one per image, None where the loader found no cached features) with every None filled;
        `pixels` (B, 3, S, S) uint8: the batch's views."""
        missing = [row for row, part in enumerate(parts) if part is None]
        if not missing:
            return parts  # type: ignore[return-value]
        started = time.perf_counter()
        views = [pixels[row].cpu() for row in missing]
        with file_lock(self.cache.lock):
            self.encoded += self.cache.fill(views, len(views), self.encode, self.batch_size, progress=False)
        self.seconds += time.perf_counter() - started
        filled = list(parts)
        for row, view in zip(missing, views, strict=True):
            filled[row] = self.cache.read(view)
        return filled  # type: ignore[return-value]


def stack_features(parts: list[list[torch.Tensor]]) -> list[torch.Tensor]:
    """Batch per-view features read by `EmbeddingCache.read` (the collate step)."""
    return [torch.stack([view[level] for view in parts]) for level in range(len(parts[0]))]


def as_image_features(stacked: list[torch.Tensor]) -> ImageFeatures:
    """Batched cached features as the decoder takes them, in float32 (autocast lowers them where it is on)."""
    embed, *high_res = (part.float() for part in stacked)
    return ImageFeatures(image_embed=embed, high_res_feats=high_res)
