"""One evaluation step of a landmark model, shared by training validation and `src.evaluate_landmarks`."""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from src.landmarks.geometry import crop_to_image
from src.landmarks.heatmaps import HeatmapCodec
from src.landmarks.nme import NmeMeter
from src.models.landmark_model import LandmarkModel


@dataclass
class BatchPrediction:
    heatmaps: torch.Tensor  # (B, K, h, w)
    crop_points: np.ndarray  # (B, K, 2) in the model input
    image_points: np.ndarray  # (B, K, 2) in the original images
    nme: np.ndarray  # (B,) each image's NME


def evaluate_batch(
    model: LandmarkModel,
    codec: HeatmapCodec,
    batch: dict[str, Any],
    meter: NmeMeter,
    autocast: Callable[[], contextlib.AbstractContextManager] = contextlib.nullcontext,
) -> BatchPrediction:
    """Predict a batch of crops, map the points back to their images and add them to `meter`."""
    with autocast():
        heatmaps = model(batch["images"])
    points, _ = codec.decode(heatmaps)
    original = crop_to_image(points, batch["inverse"].float()).cpu().numpy()
    nme = meter.update(original, batch["true_points"].cpu().numpy())
    return BatchPrediction(heatmaps, points.cpu().numpy(), original, nme)
