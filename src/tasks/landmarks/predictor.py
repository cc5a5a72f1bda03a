"""Landmarks on whole images: crop, run the heatmap model, decode, map back to image pixels.

Built from a checkpoint's metadata (model config, scheme, heatmap settings), so evaluation,
prediction and exported files all rebuild exactly the model that was trained.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from src.errors import CheckpointError
from src.models.registry import backbone_key, sam2_config_path
from src.tasks.landmarks.geometry import crop_affine, crop_to_image, image_box, invert_affine, square_box, warp
from src.tasks.landmarks.heatmaps import HeatmapCodec
from src.tasks.landmarks.model import LandmarkModel, build_landmark_model
from src.tasks.landmarks.scheme import LandmarkScheme

META_KEYS = ("model_config", "scheme", "heatmap", "image_size", "crop_margin")
LEGACY_HEATMAP_TARGET = "src.tasks.landmarks.heatmaps.HeatmapCodec"  # what older metadata carried
HEATMAP_KEYS = ("sigma", "blur_kernel", "stride", "refine")


@dataclass
class LandmarkResult:
    points: np.ndarray  # (K, 2) image pixels
    scores: np.ndarray  # (K,) heatmap peaks, roughly 0..1
    box: tuple[float, float, float, float]  # the square crop used, x0, y0, x1, y1


def model_spec(meta: Mapping[str, Any], source: str) -> dict[str, Any]:
    """The model a checkpoint's metadata names, as registry keys and numbers only.

    Metadata is data from someone else's file: the backbone is a registered key (or the one
    `_target_` this project used to write), a SAM2 backbone one of the packaged configs, and the
    weights come from the checkpoint, so nothing is downloaded.
    """
    described = meta["model_config"]
    if not isinstance(described, Mapping):
        raise CheckpointError(f"{source} meta.model_config: expected a mapping, found {type(described).__name__}")
    spec: dict[str, Any] = {"name": str(described.get("name")), "image_size": int(meta["image_size"])}
    where = f"{source} meta.model_config"
    if "backbone" in described:
        spec["backbone"] = backbone_key(described["backbone"], f"{where}.backbone", CheckpointError)
    elif "sam2_config" in described:
        spec["sam2_config"] = sam2_config_path(described["sam2_config"], f"{where}.sam2_config", CheckpointError)
    else:
        raise CheckpointError(f"{where}: expected a `backbone` key or a `sam2_config`")
    return spec


def heatmap_codec(described: Any, source: str) -> HeatmapCodec:
    """The heatmap decoding a checkpoint's metadata names: the project's codec with plain numbers."""
    where = f"{source} meta.heatmap"
    if not isinstance(described, Mapping):
        raise CheckpointError(f"{where}: expected a mapping, found {type(described).__name__}")
    target = described.get("_target_", LEGACY_HEATMAP_TARGET)
    values = {k: v for k, v in described.items() if k != "_target_"}
    unknown = sorted(set(values) ^ set(HEATMAP_KEYS))  # unknown or missing
    plain = all(isinstance(v, (int, float, bool)) for v in values.values())
    if target != LEGACY_HEATMAP_TARGET or unknown or not plain:
        raise CheckpointError(
            f"{where}: expected {sorted(HEATMAP_KEYS)} as plain numbers and no other `_target_`; "
            f"found target {target!r}, keys {sorted(described)}"
        )
    return HeatmapCodec(**values)


class LandmarkPredictor:
    def __init__(self, model: LandmarkModel, scheme: LandmarkScheme, codec: HeatmapCodec, margin: float):
        self.model, self.scheme, self.codec, self.margin = model.eval(), scheme, codec, float(margin)

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @classmethod
    def from_checkpoint(cls, checkpoint: Mapping[str, Any], source: str) -> LandmarkPredictor:
        meta = checkpoint.get("meta") or {}
        missing = [k for k in META_KEYS if k not in meta]
        if meta.get("task") != "landmarks" or missing:
            raise CheckpointError(
                f"{source}: not a landmark checkpoint (meta task={meta.get('task')!r}, missing {missing}); "
                "expected best.pt/last.pt of a `python -m src.train task=landmarks` run or an export of one"
            )
        try:
            scheme = LandmarkScheme.from_config(meta["scheme"], source=f"{source} meta.scheme")
        except (ValueError, TypeError, KeyError) as err:
            raise CheckpointError(f"{source} meta.scheme: {err}") from err
        model = build_landmark_model(model_spec(meta, source), scheme.num_points)
        try:
            model.load_state_dict(checkpoint["model"])
        except RuntimeError as err:
            raise CheckpointError(f"{source}: weights do not fit the model its metadata describes ({err})") from err
        return cls(model, scheme, heatmap_codec(meta["heatmap"], source), float(meta["crop_margin"]))

    def to(self, device: torch.device) -> LandmarkPredictor:
        self.model.to(device)
        return self

    def crop(self, image: np.ndarray, box: tuple[float, float, float, float] | None) -> tuple[np.ndarray, np.ndarray]:
        """The model input and its image -> crop matrix: around `box` (with the margin) or the whole image."""
        if box is None:
            center, side = image_box(image.shape[1], image.shape[0])
        else:
            center, side = square_box(np.array([box[:2], box[2:]], dtype=np.float64), self.margin)
        matrix = crop_affine(center, side, self.model.image_size)
        return warp(image, matrix, self.model.image_size), matrix

    @torch.no_grad()
    def predict(self, image: np.ndarray, box: tuple[float, float, float, float] | None = None) -> LandmarkResult:
        crop, matrix = self.crop(image, box)
        batch = torch.from_numpy(np.ascontiguousarray(crop)).permute(2, 0, 1)[None].to(self.device)
        points, scores = self.codec.decode(self.model(batch))
        inverse = torch.from_numpy(invert_affine(matrix)).float()[None].to(self.device)
        original = crop_to_image(points, inverse)[0].cpu().numpy()
        corners = crop_to_image(torch.tensor([[[-0.5, -0.5], [crop.shape[1] - 0.5] * 2]]).to(inverse), inverse)[0]
        return LandmarkResult(original, scores[0].cpu().numpy(), tuple(float(v) for v in corners.flatten()))
