"""Filling holes with trained weights: one image, or a folder of images and masks that resumes."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np
import torch
from tqdm import tqdm

from src.data.inpaint_pairs import read_hole_mask
from src.data.mask_io import read_image
from src.errors import CheckpointError, DataError
from src.tasks.inpainting.model import LightInpaintGenerator, generator_from_meta
from src.tracking.checkpoints import Weights
from src.utils.pictures import save_png

log = logging.getLogger(__name__)


def load_generator(weights: Weights, device: torch.device) -> LightInpaintGenerator:
    """The generator of an inpainting checkpoint or export, in eval mode on `device`."""
    if weights.task != "inpainting":
        raise CheckpointError(f"{weights.source} holds a {weights.task} model; expected an inpainting checkpoint")
    generator = generator_from_meta(weights.meta, weights.source)
    try:
        generator.load_state_dict(weights.checkpoint["model"])
    except RuntimeError as err:
        raise CheckpointError(
            f"{weights.source}: its weights do not fit its own meta.generator_config ({err})"
        ) from err
    return generator.eval().to(device)


def grown(holes: np.ndarray, dilate: int) -> np.ndarray:
    """The hole grown by `dilate` px, so that the edge of a removed object is filled too."""
    if dilate <= 0:
        return holes
    kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * dilate + 1,) * 2)
    return cv2.dilate(holes.astype(np.uint8), kernel) > 0


@torch.no_grad()
def fill(
    generator: torch.nn.Module, image: np.ndarray, holes: np.ndarray, device: torch.device,
    autocast: Callable[[], contextlib.AbstractContextManager] = contextlib.nullcontext,
) -> np.ndarray:  # fmt: skip
    """RGB uint8 (H, W, 3) with the `holes` (bool (H, W)) filled; every other pixel unchanged."""
    pixels = torch.from_numpy(np.array(image)).permute(2, 0, 1)[None].float().div(255).to(device)
    mask = torch.from_numpy(holes.astype(np.float32))[None, None].to(device)
    with autocast():
        output = generator(pixels, mask).float().clamp(0, 1)
    filled = (output[0].permute(1, 2, 0).cpu().numpy() * 255).round().astype(np.uint8)
    return np.where(holes[..., None], filled, image)


def inpaint_files(
    generator: torch.nn.Module, pairs: dict[str, tuple[Path, Path]], output_dir: Path, dilate: int,
    device: torch.device, autocast: Callable[[], contextlib.AbstractContextManager],
) -> tuple[list[Path], int]:  # fmt: skip
    """Fill every (image, mask) pair into OUTPUT_DIR/NAME.png; pairs whose output exists are skipped (resume).

    Returns the files written and how many were already there."""
    written, done = [], 0
    for name, (image_path, mask_path) in tqdm(pairs.items(), desc="inpaint", mininterval=1.0):
        target = output_dir / f"{name}.png"
        if target.is_file():
            done += 1
            continue
        image = read_image(image_path)
        holes = grown(read_hole_mask(mask_path, image.shape[:2], image_path), dilate)
        written.append(save_png(fill(generator, image, holes, device, autocast), target))
    return written, done


def matching_masks(images: dict[str, Path], mask_folder: Path) -> dict[str, tuple[Path, Path]]:
    """name -> (image, mask) with masks named like the images (NAME.png, or seed 003's NAME_M.png).

    In seed 003's layout images and masks share a folder: its `_M` files are masks, not images."""
    images = {n: p for n, p in images.items() if not (n.endswith("_M") and f"{n[:-2]}_C" in images)}
    pairs, missing = {}, []
    for name, image in images.items():
        stem = name[:-2] if name.endswith("_C") else name
        candidates = [mask_folder / f"{name}.png", mask_folder / f"{stem}_M.png"]
        found = next((c for c in candidates if c.is_file() and c != image), None)
        if found is None:
            missing.append(name)
        else:
            pairs[name] = (image, found)
    if missing:
        raise DataError(
            f"mask={mask_folder}: no mask NAME.png (or NAME_M.png) for {len(missing)} images, e.g. {missing[0]}"
        )
    return pairs
