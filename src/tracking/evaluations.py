"""An evaluation as its own MLflow run, whatever the task: params, metrics by step, report files as artifacts."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping, Sequence
from pathlib import Path

from hydra.utils import instantiate
from mlflow.exceptions import MlflowException
from omegaconf import DictConfig, OmegaConf

from src.tracking.runs import MlflowTracker, flatten
from src.tracking.tags import run_name, run_tags


def log_evaluation_run(
    cfg: DictConfig,
    run_prefix: str,
    task_tags: dict[str, str],
    metrics: Mapping[tuple[str, int], float],
    files: Sequence[tuple[Path, str | None]],
    training_run_id: str | None,
) -> str:
    """Log `metrics` ((name, step) -> value) and `files` ((file, artifact folder or None)) as a new run
    of `cfg.logger`, with the config as params and the tags every run has plus `task_tags`.

    The run is tagged with the training run that made the weights; when that run is in the same
    experiment the evaluation is also nested under it in the UI. Returns the new run's id.
    """
    tracker: MlflowTracker = instantiate(cfg.logger)
    tags = run_tags("src.evaluate", cfg, job="evaluate", dataset=cfg.dataset.name, split=str(cfg.split), **task_tags)
    if training_run_id:
        tags["training_run_id"] = training_run_id
        try:
            training = tracker.client.get_run(training_run_id)
        except MlflowException:  # logged to another store: the tag alone links them
            training = None
        experiment = tracker.client.get_experiment_by_name(tracker.experiment_name)
        if training and experiment and training.info.experiment_id == experiment.experiment_id:
            tags["mlflow.parentRunId"] = training_run_id
    run_id = tracker.start(run_name(cfg, run_prefix, cfg.dataset.name), tags)
    status = "FAILED"
    try:
        tracker.log_params(flatten(OmegaConf.to_container(cfg, resolve=True)))
        by_step: dict[int, dict[str, float]] = defaultdict(dict)
        for (name, step), value in metrics.items():
            by_step[step][name] = value
        for step, values in sorted(by_step.items()):
            tracker.log_metrics(values, step)
        for path, folder in files:
            tracker.log_artifact(path, folder)
        status = "FINISHED"
    finally:
        tracker.finish(status)
    return run_id
