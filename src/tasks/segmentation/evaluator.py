"""Evaluate one or more predictors over a dataset split on identical prompts, object by object."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
from tqdm import tqdm

from src.errors import DataError
from src.tasks.segmentation.dataset import SegmentationDataset
from src.tasks.segmentation.drawing import draw_prompts, overlay_with_prompts
from src.tasks.segmentation.metrics import clicks_to_reach
from src.tasks.segmentation.predictor import Sam2Predictor
from src.tasks.segmentation.protocols import ModeResult, PromptProtocols
from src.tasks.segmentation.user_prompts import format_prompt
from src.utils.pictures import caption, grid, overlay_masks, resize_longest


@dataclass
class ObjectRecord:
    """One object of one image under one mode and one model: a row of the per-image CSV."""

    model: str
    mode: str
    image: str
    object_id: int
    area: int  # pixels at the original resolution
    iou: float
    dice: float
    prompt: str  # as src.predict arguments, to replay it
    clicks_to: dict[float, int] = field(default_factory=dict)  # NoC per IoU threshold (clicks mode)
    ious_per_click: list[float] = field(default_factory=list)


@dataclass
class EvaluationResult:
    records: list[ObjectRecord]
    pictures: dict[str, np.ndarray]  # image name -> image | ground truth | one prediction per model


class Evaluator:
    """Runs every mode of `protocols` with every predictor on each image; models share the prompts."""

    def __init__(
        self,
        protocols: PromptProtocols,
        predictors: dict[str, Sam2Predictor],
        iou_thresholds: list[float],
        min_object_area: int,
        picture_mode: str,
        num_pictures: int,
        picture_side: int,
    ):
        self.protocols, self.predictors = protocols, predictors
        self.iou_thresholds, self.min_object_area = list(iou_thresholds), min_object_area
        self.picture_mode = picture_mode if picture_mode in protocols.modes else protocols.modes[0]
        self.num_pictures, self.picture_side = num_pictures, picture_side

    def run(
        self, dataset: SegmentationDataset, indices: Sequence[int] | None = None, require_objects: bool = True
    ) -> EvaluationResult:
        """Records of the images `indices` (all by default); no object to evaluate is an error unless
        `require_objects` is false (a data-parallel process's share may hold none)."""
        result = EvaluationResult([], {})
        indices = range(len(dataset)) if indices is None else indices
        for index in tqdm(indices, desc=f"evaluate {dataset.split}", dynamic_ncols=True, leave=False):
            self._image(dataset, index, result)
        if require_objects and not result.records:
            raise DataError(
                f"no object of at least evaluation.min_object_area={self.min_object_area} px in "
                f"{dataset.root}/masks/{dataset.split}; nothing to evaluate"
            )
        return result

    def _image(self, dataset: SegmentationDataset, index: int, result: EvaluationResult) -> None:
        name = dataset.pairs[index].name
        image, ids = dataset.load(index)
        values, counts = np.unique(ids[ids > 0], return_counts=True)
        objects = values[counts >= self.min_object_area]
        if len(objects) == 0:
            return
        gt = torch.from_numpy(ids[None] == objects[:, None, None])
        fixed = self.protocols.fixed_prompts(gt, name)
        shown: dict[str, ModeResult] = {}
        for model, predictor in self.predictors.items():
            encoded = predictor.encode(image)
            for mode in self.protocols.modes:
                outcome = self.protocols.run(predictor, encoded, gt, mode, fixed.get(mode))
                result.records.extend(self._records(model, mode, name, objects, gt, outcome))
                if mode == self.picture_mode:
                    shown[model] = outcome
        if len(result.pictures) < self.num_pictures:
            result.pictures[name] = self._picture(image, gt, shown)

    def _records(
        self, model: str, mode: str, name: str, objects: np.ndarray, gt: torch.Tensor, outcome: ModeResult
    ) -> list[ObjectRecord]:
        clicked = outcome.ious_per_click is not None
        noc = {t: clicks_to_reach(outcome.ious_per_click, t) for t in self.iou_thresholds} if clicked else {}
        records = []
        for row, object_id in enumerate(objects.tolist()):
            record = ObjectRecord(
                model=model,
                mode=mode,
                image=name,
                object_id=object_id,
                area=int(gt[row].sum()),
                iou=float(outcome.iou[row]),
                dice=float(outcome.dice[row]),
                prompt=format_prompt(outcome.prompts.points[row], outcome.prompts.labels[row]),
            )
            if clicked:
                record.clicks_to = {t: int(noc[t][row]) for t in self.iou_thresholds}
                record.ious_per_click = outcome.ious_per_click[row].tolist()
            records.append(record)
        return records

    def _picture(self, image: np.ndarray, gt: torch.Tensor, shown: dict[str, ModeResult]) -> np.ndarray:
        """image with the prompts | ground truth | each model's masks with its mean IoU, one row."""
        first = next(iter(shown.values()))
        tiles = [
            (draw_prompts(image, first.prompts.points.numpy(), first.prompts.labels.numpy()), "image and prompts"),
            (overlay_masks(image, gt.numpy()), "ground truth"),
        ]
        for model, outcome in shown.items():
            prompts = outcome.prompts
            drawn = overlay_with_prompts(image, outcome.masks.numpy(), prompts.points.numpy(), prompts.labels.numpy())
            tiles.append((drawn, f"{model}, IoU {outcome.iou.mean():.3f}"))
        return grid([[caption(resize_longest(tile, self.picture_side), text) for tile, text in tiles]])
