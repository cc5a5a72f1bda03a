"""Prompt sampling as small named units, after SAM2's own trainer.

All prompts are points with labels, as SAM2's prompt encoder takes them: 1 foreground click,
0 background click, 2/3 the top-left/bottom-right corners of a box, -1 padding. Coordinates are
pixel (x, y) in the S x S model input. Every function draws from an explicit random source, so
validation prompts are fixed by a seed and a resumed run repeats its draws: one torch.Generator
for all objects, or `ObjectGenerators`, one stream per object, with which an object's prompts do
not depend on the other objects in its batch (a batch split over data-parallel processes draws
the same prompts as the whole batch in one process).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from sam2.modeling.sam2_utils import sample_one_point_from_error_center

from src.errors import ConfigError
from src.utils.seeding import torch_generator

POINT, BOX = "point", "box"
LABEL_NEGATIVE, LABEL_POSITIVE, LABEL_BOX_TOP_LEFT, LABEL_BOX_BOTTOM_RIGHT, LABEL_PADDING = 0, 1, 2, 3, -1
CORRECTION_METHODS = ("uniform", "center")


@dataclass
class Prompts:
    points: torch.Tensor  # (N, P, 2) float, pixel (x, y)
    labels: torch.Tensor  # (N, P) int32

    @classmethod
    def empty(cls, count: int) -> Prompts:
        """No points yet for `count` objects, to `add` clicks to."""
        return cls(torch.zeros(count, 0, 2), torch.zeros(count, 0, dtype=torch.int32))

    @property
    def num_points(self) -> int:
        return int(self.points.shape[1])

    def add(self, points: torch.Tensor, labels: torch.Tensor) -> Prompts:
        return Prompts(torch.cat([self.points, points], dim=1), torch.cat([self.labels, labels], dim=1))


class ObjectGenerators:
    """One random stream per object, seeded from the object's sample (see `SegmentationDataset`)."""

    def __init__(self, seeds: Sequence[int]):
        self.generators = [torch_generator(int(seed)) for seed in seeds]

    def __len__(self) -> int:
        return len(self.generators)


RandomSource = torch.Generator | ObjectGenerators


def uniform(generator: RandomSource, rows: int, count: int, device: torch.device) -> torch.Tensor:
    """(rows, count) numbers in [0, 1): from one generator, or row i from the i-th object's stream."""
    if isinstance(generator, ObjectGenerators):
        if len(generator) != rows:
            raise ValueError(f"{len(generator)} object streams for {rows} objects")
        if rows == 0:
            return torch.empty(0, count, device=device)
        return torch.stack([torch.rand(count, generator=g) for g in generator.generators]).to(device)
    return torch.rand((rows, count), generator=generator, device=generator.device).to(device)


def mask_to_box(masks: torch.Tensor) -> torch.Tensor:
    """Tight (x0, y0, x1, y1) pixel boxes of (N, H, W) boolean masks; empty masks give zeros."""
    n, h, w = masks.shape
    cols, rows = masks.any(dim=1), masks.any(dim=2)
    xs = torch.arange(w, device=masks.device).expand(n, w)
    ys = torch.arange(h, device=masks.device).expand(n, h)
    x0 = torch.where(cols, xs, w).amin(dim=1)
    x1 = torch.where(cols, xs, -1).amax(dim=1)
    y0 = torch.where(rows, ys, h).amin(dim=1)
    y1 = torch.where(rows, ys, -1).amax(dim=1)
    boxes = torch.stack([x0, y0, x1, y1], dim=1).float()
    return torch.where(masks.flatten(1).any(dim=1, keepdim=True), boxes, torch.zeros_like(boxes))


def jitter_boxes(
    boxes: torch.Tensor, noise: float, max_px: float, size: tuple[int, int], generator: RandomSource
) -> torch.Tensor:
    """Move each corner by up to `noise` x the box side, capped at `max_px` (SAM2: 0.1 and 20 px)."""
    if noise <= 0:
        return boxes
    h, w = size
    sides = torch.stack([boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]], dim=1)
    reach = torch.clamp(sides * noise, max=max_px).repeat(1, 2)
    offsets = (2 * uniform(generator, boxes.shape[0], 4, boxes.device) - 1) * reach
    limits = torch.tensor([w - 1, h - 1, w - 1, h - 1], device=boxes.device, dtype=boxes.dtype)
    return torch.minimum(torch.clamp(boxes + offsets, min=0), limits)


def sample_points(region: torch.Tensor, count: int, generator: RandomSource) -> tuple[torch.Tensor, torch.Tensor]:
    """`count` pixels drawn uniformly from each (N, H, W) region, with replacement.

    Returns points (N, count, 2) and a (N,) flag that is False where the region is empty (those
    rows hold zeros and must be padded by the caller). Each row consumes `count` numbers of its
    stream, whatever its region (inverse-CDF sampling).
    """
    n, w = region.shape[0], region.shape[-1]
    cumulative = region.flatten(1).float().cumsum(dim=1)
    total = cumulative[:, -1:]
    valid = total[:, 0] > 0
    # counts are whole numbers: a target in [k, k + 1) picks the region's (k+1)-th pixel
    targets = torch.minimum(uniform(generator, n, count, region.device) * total, total - 0.5)
    flat = torch.searchsorted(cumulative, targets, right=True)
    points = torch.stack([flat % w, flat // w], dim=-1).float()
    return points * valid[:, None, None], valid


def box_prompts(boxes: torch.Tensor) -> Prompts:
    labels = torch.tensor([LABEL_BOX_TOP_LEFT, LABEL_BOX_BOTTOM_RIGHT], dtype=torch.int32, device=boxes.device)
    return Prompts(boxes.reshape(-1, 2, 2), labels.expand(boxes.shape[0], 2).clone())


def point_prompts(masks: torch.Tensor, positive: int, negative: int, generator: RandomSource) -> Prompts:
    """`positive` clicks inside each mask and `negative` clicks outside it."""
    parts = []
    for region, count, label in ((masks, positive, LABEL_POSITIVE), (~masks, negative, LABEL_NEGATIVE)):
        if count <= 0:
            continue
        points, valid = sample_points(region, count, generator)
        labels = torch.full(points.shape[:2], label, dtype=torch.int32, device=masks.device)
        labels[~valid] = LABEL_PADDING
        parts.append((points, labels))
    return Prompts(torch.cat([p for p, _ in parts], dim=1), torch.cat([lab for _, lab in parts], dim=1))


def sample_correction_clicks(
    gt: torch.Tensor, pred: torch.Tensor, generator: RandomSource
) -> tuple[torch.Tensor, torch.Tensor]:
    """One click per object, uniform over where the prediction is wrong (SAM2's 'uniform' method).

    A click in a missed part of the object is positive, one on a false detection negative. Where
    the prediction is already perfect, a negative click lands on the background, as in SAM2.
    """
    false_negative = gt & ~pred
    errors = false_negative | (pred & ~gt)
    perfect = ~errors.flatten(1).any(dim=1)
    region = torch.where(perfect[:, None, None], ~gt, errors)
    points, valid = sample_points(region, 1, generator)
    x, y = points[:, 0, 0].long(), points[:, 0, 1].long()
    rows = torch.arange(gt.shape[0], device=gt.device)
    labels = false_negative[rows, y, x].to(torch.int32)
    labels[~valid] = LABEL_PADDING
    return points, labels[:, None]


def center_click(gt: torch.Tensor, pred: torch.Tensor, prompts: Prompts) -> Prompts:
    """RITM's click rule: one click per object at the centre of its largest error (deterministic)."""
    points, labels = sample_one_point_from_error_center(gt[:, None], pred[:, None])
    return prompts.add(points.to(gt.device), labels.to(device=gt.device, dtype=torch.int32))


class PromptSampler:
    """The training prompt recipe: an initial point or box prompt, then correction clicks."""

    def __init__(
        self,
        point_prob: float,
        positive_points: int,
        negative_points: int,
        box_noise: float,
        box_noise_max_px: float,
        correction_clicks: int,
        correction_method: str,
        multimask_output: bool,
    ):
        """The settings of `conf/prompts/` (where their defaults and meaning are written)."""
        if not 0.0 <= point_prob <= 1.0:
            raise ConfigError(f"prompts.point_prob={point_prob}: expected a probability in [0, 1]")
        if positive_points < 1 or negative_points < 0 or correction_clicks < 0:
            raise ConfigError(
                "prompts.positive_points must be >= 1, prompts.negative_points and prompts.correction_clicks >= 0"
            )
        if correction_method not in CORRECTION_METHODS:
            raise ConfigError(f"prompts.correction_method={correction_method!r}: expected one of {CORRECTION_METHODS}")
        self.point_prob = point_prob
        self.positive_points, self.negative_points = positive_points, negative_points
        self.box_noise, self.box_noise_max_px = box_noise, box_noise_max_px
        self.correction_clicks, self.correction_method = correction_clicks, correction_method
        self.multimask_output = multimask_output

    def choose_mode(self, generator: torch.Generator) -> str:
        """Point or box for a whole step, as SAM2's trainer does, so prompts batch without padding."""
        return POINT if torch.rand((), generator=generator, device=generator.device).item() < self.point_prob else BOX

    def initial(self, masks: torch.Tensor, mode: str, generator: RandomSource) -> Prompts:
        if mode == POINT:
            return point_prompts(masks, self.positive_points, self.negative_points, generator)
        boxes = jitter_boxes(mask_to_box(masks), self.box_noise, self.box_noise_max_px, masks.shape[-2:], generator)
        return box_prompts(boxes)

    def correct(self, gt: torch.Tensor, pred: torch.Tensor, prompts: Prompts, generator: RandomSource) -> Prompts:
        """Add one correction click per object from the error region of `pred`."""
        if self.correction_method == "center":
            return center_click(gt, pred, prompts)
        return prompts.add(*sample_correction_clicks(gt, pred, generator))

    def multimask(self, prompts: Prompts) -> bool:
        """Three candidate masks only for a single click, the one prompt that is truly ambiguous."""
        return self.multimask_output and prompts.num_points == 1
