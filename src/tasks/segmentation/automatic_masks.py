"""Automatic masks (seed 004): SAM2's automatic mask generator on our predictor, written as PNGs and COCO RLE.

`SAM2AutomaticMaskGenerator` prompts a grid of points, filters the masks by predicted IoU and
stability and removes duplicates. Its `SAM2ImagePredictor` assumes 1024-pixel inputs and SAM2's
own resizing; here it encodes through `Sam2Predictor`, so fine-tuned weights see images as they
did in training, at any model size. Small holes and islands (`min_mask_region_area`) are removed
on the CPU at full resolution, as the original SAM did, instead of by SAM2's optional CUDA
extension, which pip installs usually lack (SAM2 then skips the step with a warning).
"""

from __future__ import annotations

import contextlib
import json
import logging
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
from pycocotools import mask as coco_mask
from sam2.automatic_mask_generator import SAM2AutomaticMaskGenerator
from sam2.sam2_image_predictor import SAM2ImagePredictor
from sam2.utils.amg import MaskData

from src.tasks.segmentation.predictor import Sam2Predictor
from src.utils.atomic import atomic_dir
from src.utils.pictures import overlay_masks, save_mask_png, save_png

log = logging.getLogger(__name__)

MASKS_FILE = "masks.json"  # written last in each image's folder: its presence means the image is done


@contextlib.contextmanager
def _quiet_torchscript() -> Iterator[None]:
    """SAM2Transforms scripts its resize with `torch.jit.script`, which torch now deprecates loudly."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*torch.jit.script.*", category=FutureWarning)
        yield


class _EncodeThroughSamtune(SAM2ImagePredictor):
    """`SAM2ImagePredictor` whose `set_image` is `Sam2Predictor.encode` (our resizing, any model size)."""

    def __init__(self, predictor: Sam2Predictor):
        with _quiet_torchscript():
            super().__init__(predictor.model.sam)
        self._bb_feat_sizes = predictor.model.feature_sizes  # not 1024 px's; `set_image` below uses its own
        self.samtune = predictor

    @torch.no_grad()
    def set_image(self, image: np.ndarray) -> None:
        self.reset_predictor()
        encoded = self.samtune.encode(image)
        self._orig_hw = [(encoded.height, encoded.width)]
        self._features = {
            "image_embed": encoded.features.image_embed,
            "high_res_feats": encoded.features.high_res_feats,
        }
        self._is_image_set = True


class AutomaticMaskGenerator(SAM2AutomaticMaskGenerator):
    """SAM2's generator with every setting from config, encoding through `Sam2Predictor`."""

    def __init__(self, predictor: Sam2Predictor, **settings: Any):
        with _quiet_torchscript():
            super().__init__(predictor.model.sam, output_mode="coco_rle", **settings)
        self.predictor = _EncodeThroughSamtune(predictor)
        self.samtune = predictor

    def _generate_masks(self, image: np.ndarray) -> MaskData:
        data = super()._generate_masks(image)
        if self.min_mask_region_area > 0:
            nms = max(self.box_nms_thresh, self.crop_nms_thresh)
            data = self.postprocess_small_regions(data, self.min_mask_region_area, nms)
        return data

    def generate(self, image: np.ndarray) -> list[dict[str, Any]]:
        """Mask records, largest first, under autocast on CUDA."""
        with self.samtune.autocast():
            records = super().generate(image)
        return sorted(records, key=lambda r: r["area"], reverse=True)


def write_masks(image: np.ndarray, records: list[dict[str, Any]], folder: Path, source: str) -> Path:
    """One image's outputs, all or nothing: overlay.png, masks/NNN.png and masks.json (COCO RLE)."""
    height, width = image.shape[:2]
    with atomic_dir(folder) as tmp:
        annotations = []
        masks = []
        for index, record in enumerate(records):
            mask = coco_mask.decode(record["segmentation"]).astype(bool)
            masks.append(mask)
            mask_file = f"masks/{index:03d}.png"
            save_mask_png(mask, tmp / mask_file)
            annotations.append(
                {
                    "id": index,
                    "segmentation": record["segmentation"],  # COCO RLE: {"size": [h, w], "counts": str}
                    "area": int(record["area"]),
                    "bbox": [float(v) for v in record["bbox"]],  # x, y, width, height
                    "predicted_iou": float(record["predicted_iou"]),
                    "stability_score": float(record["stability_score"]),
                    "point_coords": record["point_coords"],
                    "crop_box": [float(v) for v in record["crop_box"]],
                    "mask_file": mask_file,
                }
            )
        stack = np.stack(masks) if masks else np.zeros((0, height, width), bool)
        save_png(overlay_masks(image, stack), tmp / "overlay.png")
        document = {"image": {"file_name": source, "height": height, "width": width}, "annotations": annotations}
        (tmp / MASKS_FILE).write_text(json.dumps(document, indent=1))
    return folder
