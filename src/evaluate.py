"""`python -m src.evaluate checkpoint=RUN [dataset=...] [compare=true]`: metrics of trained weights on a split.

Dispatches on what the checkpoint says it is: segmentation (mIoU, Dice and NoC per prompt mode,
`compare=true` beside the original model, `original=true` for the un-tuned one) or landmarks (NME
per group, failure rate) or inpainting (PSNR/SSIM over the hole and the image, LPIPS over the hole
with `lpips_weights=`; `compare=true` beside the untrained generator, `compare=CHECKPOINT` beside a
second one). Every report goes to the run folder and to its own MLflow run.
"""

from __future__ import annotations

from typing import Any

from omegaconf import DictConfig

from src.cli import hydra_entry, with_checkpoint_choices
from src.config import with_task_config
from src.tasks.inpainting.evaluation import evaluate_inpainting
from src.tasks.landmarks.evaluation import evaluate_landmarks
from src.tasks.segmentation.evaluation import evaluate_segmentation
from src.tracking.checkpoints import requested_weights


def evaluate(cfg: DictConfig) -> Any:
    weights = requested_weights(cfg)
    if weights is not None:
        cfg = with_checkpoint_choices(cfg, weights.meta, weights.source)
    if weights is not None and weights.task == "landmarks":
        return evaluate_landmarks(with_task_config(cfg, "landmarks"), weights)
    if weights is not None and weights.task == "inpainting":
        return evaluate_inpainting(cfg, weights)
    return evaluate_segmentation(cfg, weights)


@hydra_entry("evaluate")
def main(cfg: DictConfig) -> Any:
    return evaluate(cfg)


if __name__ == "__main__":
    main()
