"""Segmentation evaluation for `python -m src.evaluate`: mIoU, Dice and NoC per prompt mode, and the report."""

from __future__ import annotations

import logging
from pathlib import Path

from hydra.utils import instantiate
from omegaconf import DictConfig

from src.errors import ConfigError
from src.tasks.segmentation.dataset import SegmentationDataset
from src.tasks.segmentation.evaluator import Evaluator
from src.tasks.segmentation.predictor import build_predictor, merged_adapter_weights, model_image_size, original_weights
from src.tasks.segmentation.report import (
    FINE_TUNED,
    ORIGINAL,
    Summary,
    comparison_table,
    mlflow_metrics,
    summarize,
    summary_table,
    write_report,
)
from src.tracking.checkpoints import Weights
from src.tracking.evaluations import log_evaluation_run
from src.utils.device import resolve_device, resolve_precision
from src.utils.seeding import seed_everything

log = logging.getLogger(__name__)


def evaluate_segmentation(cfg: DictConfig, tuned: Weights | None) -> Summary:
    """Every prompt mode of `evaluation.prompts.modes` on fixed seeded prompts, for the fine-tuned
    weights `tuned` (None: the original model), or both side by side with `compare=true`; the report
    goes to the run folder and its own MLflow run, linked to the training run that made the weights."""
    ecfg = cfg.evaluation
    seed_everything(int(ecfg.prompts.seed))  # so that a randomly initialised original model is reproducible
    tuned = merged_adapter_weights(cfg, tuned) if tuned is not None else None
    if cfg.compare:
        if tuned is None:
            raise ConfigError("compare=true compares the original model with checkpoint=...: give checkpoint=")
        weights = {ORIGINAL: original_weights(cfg), FINE_TUNED: tuned}
    elif tuned is None:
        log.info("using the original (un-tuned) SAM2.1 %s: model.checkpoint=%s", cfg.model.name, cfg.model.checkpoint)
        weights = {ORIGINAL: original_weights(cfg)}
    else:
        weights = {FINE_TUNED: tuned}
    reference = weights.get(FINE_TUNED) or weights[ORIGINAL]
    image_size = model_image_size(cfg, reference)  # every model sees the same input
    device = resolve_device(cfg.device)
    amp_dtype = resolve_precision(cfg.precision, device)
    predictors = {name: build_predictor(cfg.model, w, image_size, device, amp_dtype) for name, w in weights.items()}

    if cfg.dataset.get("generate"):
        instantiate(cfg.dataset.generate, root=cfg.dataset.root)
    dataset = SegmentationDataset(cfg.dataset.root, cfg.split, image_size, mask_type=cfg.dataset.mask_type)
    protocols = instantiate(ecfg.prompts)
    thresholds = [float(t) for t in ecfg.iou_thresholds]
    evaluator = Evaluator(
        protocols,
        predictors,
        thresholds,
        int(ecfg.min_object_area),
        ecfg.picture_mode,
        int(ecfg.num_pictures),
        int(ecfg.picture_side),
    )
    log.info(
        "evaluating %d images of %s/%s: %d prompt modes (%s) x %d model(s); the bar estimates the time left "
        "(fewer modes, e.g. evaluation.prompts.modes=[point,box], and cpu_threads=1 on a busy CPU take less)",
        len(dataset),
        cfg.dataset.name,
        cfg.split,
        len(protocols.modes),
        ", ".join(protocols.modes),
        len(predictors),
    )
    result = evaluator.run(dataset)

    summary = summarize(result.records, thresholds)
    tables = summary_table(summary, thresholds)
    if cfg.compare:
        tables = comparison_table(summary, protocols.modes, thresholds) + "\n\n" + tables
    print(f"\n{tables}\n")
    files = write_report(result, summary, tables, thresholds, Path(cfg.paths.run_dir))
    tags = {"task": "segmentation", "model": cfg.model.name, "checkpoint": reference.source}
    run_id = log_evaluation_run(cfg, "evaluate", tags, mlflow_metrics(summary), files, reference.training_run_id)
    log.info("report in %s and MLflow run %s", cfg.paths.run_dir, run_id)
    return summary
