"""The mask of one object a person points at, from a segmentation checkpoint alone: for tools without a
SAM2 `model=` group of their own (`python -m src.inpaint points=... segmenter=RUN` removes the object)."""

from __future__ import annotations

from typing import Any

import numpy as np
from omegaconf import OmegaConf

from src.config import group_choices, group_config
from src.errors import CheckpointError
from src.tasks.segmentation.predictor import Sam2Predictor, load_predictor
from src.tasks.segmentation.user_prompts import typed_prompts
from src.tracking.checkpoints import Weights


def checkpoint_predictor(weights: Weights, key: str, device: str, precision: str, cache_dir: str) -> Sam2Predictor:
    """SAM2 of the size the segmentation checkpoint was trained as (its meta.model) at its own input size.

    `key` is the setting that named the weights, for messages; `cache_dir` is where an adapter's base
    weights are found (`paths.cache_dir`)."""
    name = weights.meta.get("model")
    if weights.task != "segmentation" or not isinstance(name, str) or name not in group_choices("model"):
        raise CheckpointError(
            f"{key}={weights.source}: a {weights.task} checkpoint naming model={name}; expected the weights or run "
            "folder of python -m src.train task=segmentation (a SAM2 size, model=tiny|small|base_plus|large)"
        )
    model = group_config("model", name)
    if not model.get("sam2_config"):
        raise CheckpointError(f"{key}={weights.source}: model={name} is not a SAM2 size; expected a segmentation run")
    model.image_size = None  # the size the checkpoint was fine-tuned at
    settings = {"model": model, "device": device, "precision": precision, "paths": {"cache_dir": cache_dir}}
    return load_predictor(OmegaConf.create(settings), weights)[0]


def object_mask(predictor: Sam2Predictor, image: np.ndarray, points: Any, box: Any, image_name: str) -> np.ndarray:
    """bool (H, W): the object that `points=`/`box=` (as people type them, in `image`'s pixels) mark,
    SAM2's candidate with the highest predicted IoU."""
    height, width = image.shape[:2]
    prompts = typed_prompts(points, box, width, height, image_name)
    return predictor.predict(predictor.encode(image), prompts).best_masks()[0].cpu().numpy()
