"""`python -m src.evaluate model=small dataset=kvasir checkpoint=RUN [compare=true]`: metrics on a split.

Evaluates fine-tuned weights (or the original model) in every prompt mode of
`evaluation.prompts.modes`, on fixed seeded prompts; `compare=true` also runs the original model on
the same prompts and prints seed 001's side-by-side table. The report goes to the run folder and
to its own MLflow run, linked to the training run that made the weights.
"""

from __future__ import annotations

import logging
from pathlib import Path

from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from src.cli import command_line_overrides, hydra_entry
from src.config import PROJECT_ROOT
from src.data.segmentation_dataset import SegmentationDataset
from src.errors import ConfigError
from src.evaluation.report import (
    FINE_TUNED,
    ORIGINAL,
    Summary,
    comparison_table,
    log_evaluation,
    summarize,
    summary_table,
    write_report,
)
from src.evaluation.runner import Evaluator
from src.inference import (
    build_predictor,
    chosen_weights,
    fine_tuned_weights,
    model_image_size,
    original_weights,
    uses_original,
)
from src.tracking import flatten, git_state, library_versions
from src.utils.device import resolve_device, resolve_precision
from src.utils.seeding import seed_everything

log = logging.getLogger(__name__)


def evaluate(cfg: DictConfig) -> Summary:
    ecfg = cfg.evaluation
    seed_everything(int(ecfg.prompts.seed))  # so that a randomly initialised original model is reproducible
    if cfg.compare:
        if uses_original(cfg):
            raise ConfigError("compare=true compares the original model with checkpoint=...: give checkpoint=")
        tuned = fine_tuned_weights(cfg)
        weights = {ORIGINAL: original_weights(cfg), FINE_TUNED: tuned}
    else:
        weights = {ORIGINAL if uses_original(cfg) else FINE_TUNED: chosen_weights(cfg)}
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
    result = evaluator.run(dataset)

    summary = summarize(result.records, thresholds)
    tables = summary_table(summary, thresholds)
    if cfg.compare:
        tables = comparison_table(summary, protocols.modes, thresholds) + "\n\n" + tables
    print(f"\n{tables}\n")
    files = write_report(result, summary, tables, thresholds, Path(cfg.paths.run_dir))
    overrides = command_line_overrides()
    tags = {
        "job": "evaluate",
        "model": cfg.model.name,
        "dataset": cfg.dataset.name,
        "split": cfg.split,
        "checkpoint": reference.source,
        "overrides": " ".join(overrides) or "(none)",
        "run_dir": str(cfg.paths.run_dir),
        "mlflow.source.name": "src.evaluate",
        **git_state(PROJECT_ROOT),
        **library_versions(),
    }
    run_id = log_evaluation(
        instantiate(cfg.logger),
        cfg.run_name or "evaluate " + (",".join(overrides) or cfg.dataset.name),
        tags,
        flatten(OmegaConf.to_container(cfg, resolve=True)),
        summary,
        files,
        reference.training_run_id,
    )
    log.info("report in %s and MLflow run %s", cfg.paths.run_dir, run_id)
    return summary


@hydra_entry("evaluate")
def main(cfg: DictConfig) -> Summary:
    return evaluate(cfg)


if __name__ == "__main__":
    main()
