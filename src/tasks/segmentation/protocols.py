"""How each evaluation mode prompts a predictor on one image, and what it measures.

All prompts are drawn at the image's original resolution, where a user clicks and where the
metrics are computed:

- `point`: one foreground click drawn uniformly inside each object (as training validation does);
- `points`: `num_positive` clicks inside and `num_negative` outside each object;
- `box`: each object's tight bounding box;
- `clicks`: the interactive protocol of RITM and SAM: the first click at the object's centre, each
  next one at the centre of the largest error of the previous mask (positive in a missed part,
  negative on a false detection), the previous mask fed back as the mask prompt, `max_clicks`
  rounds; the IoU after every click gives NoC@85/90.

Draws are seeded by (seed, image name, mode), so the same image gets the same prompts for every
model and every run: a comparison is between models, never between prompt draws.
"""

from __future__ import annotations

import zlib
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from src.errors import ConfigError
from src.tasks.segmentation.losses import mask_iou
from src.tasks.segmentation.metrics import mask_dice
from src.tasks.segmentation.predictor import EncodedImage, Sam2Predictor
from src.tasks.segmentation.prompts import Prompts, box_prompts, center_click, mask_to_box, point_prompts
from src.utils.seeding import derive_seed, torch_generator

POINT, POINTS, BOX, CLICKS = "point", "points", "box", "clicks"
MODES = (POINT, POINTS, BOX, CLICKS)


@dataclass
class ModeResult:
    """One mode on the N objects of one image."""

    iou: torch.Tensor  # (N,) of the final mask
    dice: torch.Tensor  # (N,)
    prompts: Prompts  # the final prompts, original pixels
    masks: torch.Tensor  # (N, H, W) final masks
    ious_per_click: torch.Tensor | None = None  # (N, max_clicks), clicks mode only


class PromptProtocols:
    """The prompt modes of an evaluation and their settings."""

    def __init__(
        self,
        modes: Sequence[str],
        num_positive: int,
        num_negative: int,
        max_clicks: int,
        seed: int,
    ):
        unknown = sorted(set(modes) - set(MODES))
        if unknown or not modes:
            raise ConfigError(f"evaluation.prompts.modes={list(modes)}: expected a non-empty subset of {list(MODES)}")
        if num_positive < 1 or num_negative < 0 or max_clicks < 1:
            raise ConfigError(
                "evaluation.prompts: num_positive and max_clicks must be >= 1, num_negative >= 0; got "
                f"{num_positive}, {max_clicks} and {num_negative}"
            )
        self.modes = [mode for mode in MODES if mode in modes]
        self.num_positive, self.num_negative, self.max_clicks = num_positive, num_negative, max_clicks
        self.seed = seed

    def fixed_prompts(self, gt: torch.Tensor, image_name: str) -> dict[str, Prompts]:
        """Prompts of the modes that do not depend on the model, for the (N, H, W) objects of an image."""
        prompts = {}
        for mode in self.modes:
            generator = torch_generator(derive_seed(self.seed, zlib.crc32(image_name.encode()), MODES.index(mode)))
            if mode == POINT:
                prompts[mode] = point_prompts(gt, 1, 0, generator)
            elif mode == POINTS:
                prompts[mode] = point_prompts(gt, self.num_positive, self.num_negative, generator)
            elif mode == BOX:
                prompts[mode] = box_prompts(mask_to_box(gt))
        return prompts

    def run(
        self, predictor: Sam2Predictor, image: EncodedImage, gt: torch.Tensor, mode: str, prompts: Prompts | None
    ) -> ModeResult:
        if mode == CLICKS:
            return self._clicks(predictor, image, gt)
        masks = predictor.predict(image, prompts).best_masks().cpu()
        return ModeResult(mask_iou(masks, gt), mask_dice(masks, gt), prompts, masks)

    def _clicks(self, predictor: Sam2Predictor, image: EncodedImage, gt: torch.Tensor) -> ModeResult:
        prompts, masks = Prompts.empty(gt.shape[0]), torch.zeros_like(gt)
        mask_input, ious = None, []
        for _ in range(self.max_clicks):
            prompts = center_click(gt, masks, prompts)
            prediction = predictor.predict(image, prompts, mask_input)
            masks = prediction.best_masks().cpu()
            mask_input = prediction.best_logits()
            ious.append(mask_iou(masks, gt))
        return ModeResult(ious[-1], mask_dice(masks, gt), prompts, masks, torch.stack(ious, dim=1))
