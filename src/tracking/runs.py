"""MLflow tracking: one run per training run, metrics sent in batches, resumable by run id.

The default store is a SQLite file under `outputs/` (no server needed); a `http://host:port`
tracking URI sends everything to a tracking server instead.
"""

from __future__ import annotations

import json
import logging
import os
import platform
import subprocess
import time
from importlib import metadata
from pathlib import Path
from typing import Any

import mlflow
import mlflow.pytorch
from mlflow.entities import Dataset, DatasetInput, InputTag, Metric, Param, RunTag
from mlflow.system_metrics.system_metrics_monitor import SystemMetricsMonitor
from mlflow.tracking import MlflowClient
from torch import nn

from src.utils.folders import folder_digest

log = logging.getLogger(__name__)

EXPERIMENT_KIND, MODEL_TRAINING = "mlflow.experimentKind", "custom_model_development"  # MLflow 3's UI mode
MAX_PARAM_LENGTH = 6000  # MLflow's limit on a param value
MAX_BATCH = 100  # params or tags per log_batch call
VERSIONED = ("torch", "torchvision", "sam2", "hydra-core", "omegaconf", "mlflow", "numpy", "schedulefree")
SLURM_TAGS = {
    "SLURM_JOB_ID": "slurm.job_id",
    "SLURM_ARRAY_JOB_ID": "slurm.array_job_id",
    "SLURM_ARRAY_TASK_ID": "slurm.array_task_id",
    "SLURM_RESTART_COUNT": "slurm.restart_count",  # how often the job was requeued
    "SLURM_JOB_NODELIST": "slurm.nodes",
    "SLURM_JOB_PARTITION": "slurm.partition",
}


def flatten(tree: Any, prefix: str = "") -> dict[str, str]:
    """Nested config -> {"a.b.c": "value"}; lists are written as JSON."""
    if isinstance(tree, dict):
        out: dict[str, str] = {}
        for key, value in tree.items():
            out.update(flatten(value, f"{prefix}{key}."))
        return out
    value = json.dumps(tree) if isinstance(tree, list | tuple) else str(tree)
    return {prefix[:-1]: value[:MAX_PARAM_LENGTH]}


def git_state(root: str | Path) -> dict[str, str]:
    """Commit and dirty flag of the repository at `root` (or 'unknown' outside git)."""

    def git(*args: str) -> str:
        return subprocess.run(["git", *args], cwd=root, capture_output=True, text=True, check=True, timeout=10).stdout

    try:
        commit = git("rev-parse", "HEAD").strip()
        dirty = bool(git("status", "--porcelain", "--untracked-files=no").strip())
    except (OSError, subprocess.SubprocessError):
        return {"git.commit": "unknown", "git.dirty": "unknown"}
    return {"git.commit": commit, "git.dirty": str(dirty).lower(), "mlflow.source.git.commit": commit}


def cluster_tags() -> dict[str, str]:
    """The SLURM job a run belongs to (empty outside SLURM), to find its logs and accounting."""
    return {tag: os.environ[var] for var, tag in SLURM_TAGS.items() if var in os.environ}


def library_versions() -> dict[str, str]:
    versions = {"version.python": platform.python_version()}
    for name in VERSIONED:
        try:
            versions[f"version.{name}"] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return versions


class MlflowTracker:
    """A thin, explicit MLflow client wrapper (no global `mlflow.start_run` state)."""

    def __init__(
        self,
        tracking_uri: str,
        experiment_name: str,
        artifact_location: str | None = None,
        flush_every: int = 200,
        system_metrics: bool = False,
        log_checkpoint: bool = True,
        register_as: str | None = None,
    ):
        self.tracking_uri = tracking_uri
        self.client = MlflowClient(tracking_uri=tracking_uri)
        self.experiment_name = experiment_name
        self.artifact_location = artifact_location
        self.flush_every = flush_every
        self.system_metrics = system_metrics
        self.log_checkpoint = log_checkpoint  # whether best.pt is uploaded, read by the trainer
        self.register_as = register_as  # a Model Registry name for the best model, or None
        self._monitor: SystemMetricsMonitor | None = None
        self.run_id: str | None = None
        self._pending: list[Metric] = []

    def _experiment_id(self) -> str:
        experiment = self.client.get_experiment_by_name(self.experiment_name)
        if experiment is not None:
            if EXPERIMENT_KIND not in experiment.tags:  # made by an older version, or by hand
                self.client.set_experiment_tag(experiment.experiment_id, EXPERIMENT_KIND, MODEL_TRAINING)
            return experiment.experiment_id
        # a server chooses its own artifact root; a local store keeps artifacts beside the database
        location = None
        if self.artifact_location and not self.tracking_uri.startswith(("http://", "https://")):
            location = Path(self.artifact_location).resolve().as_uri()
        return self.client.create_experiment(
            self.experiment_name, artifact_location=location, tags={EXPERIMENT_KIND: MODEL_TRAINING}
        )

    def start(self, run_name: str, tags: dict[str, str], run_id: str | None = None) -> str:
        """Open a new run, or reopen `run_id` (a resumed training run continues its MLflow run)."""
        if run_id is not None:
            self.client.get_run(run_id)  # fails loudly if the store no longer has it
            self.client.update_run(run_id, status="RUNNING")
            self.run_id = run_id
            log.info("continuing MLflow run %s (%s)", run_id, self.tracking_uri)
        else:
            run = self.client.create_run(self._experiment_id(), run_name=run_name, tags=tags)
            self.run_id = run.info.run_id
            log.info(
                "MLflow run %s '%s' in experiment '%s' (%s)",
                self.run_id,
                run_name,
                self.experiment_name,
                self.tracking_uri,
            )
        if self.system_metrics:
            self._monitor = SystemMetricsMonitor(self.run_id, resume_logging=run_id is not None,
                                                 tracking_uri=self.tracking_uri)  # fmt: skip
            self._monitor.start()
        return self.run_id

    def log_dataset(self, name: str, root: Path, sizes: dict[str, int]) -> None:
        """The dataset as an MLflow input (the runs table's Dataset column): name, digest, split sizes."""
        dataset = Dataset(
            name=name,
            digest=folder_digest(root),
            source_type="local",
            source=json.dumps({"uri": root.resolve().as_uri()}),
            profile=json.dumps(sizes),
        )
        self.client.log_inputs(self.run_id, [DatasetInput(dataset, [InputTag("mlflow.data.context", "training")])])

    def register_model(self, module: nn.Module) -> str:
        """`module` as an MLflow PyTorch model of this run, registered as `register_as` (the Models page
        lists it; `mlflow.pytorch.load_model("models:/NAME/VERSION")` loads it). MLflow pickles the module:
        load registered models from a registry you trust. Returns the new version."""
        mlflow.set_tracking_uri(self.tracking_uri)
        with mlflow.start_run(run_id=self.run_id):
            info = mlflow.pytorch.log_model(module, name="model", registered_model_name=self.register_as)
        version = str(info.registered_model_version)
        log.info("registered the best model as %s version %s (%s)", self.register_as, version, info.model_uri)
        return version

    def log_params(self, params: dict[str, str]) -> None:
        items = [Param(k, v) for k, v in params.items()]
        for i in range(0, len(items), MAX_BATCH):
            self.client.log_batch(self.run_id, params=items[i : i + MAX_BATCH])

    def set_tags(self, tags: dict[str, str]) -> None:
        items = [RunTag(k, str(v)) for k, v in tags.items()]
        for i in range(0, len(items), MAX_BATCH):
            self.client.log_batch(self.run_id, tags=items[i : i + MAX_BATCH])

    def log_metrics(self, metrics: dict[str, float], step: int) -> None:
        """Queue metrics; they are sent in one call every `flush_every` values and on `flush()`."""
        now = int(time.time() * 1000)
        self._pending.extend(Metric(k, float(v), now, step) for k, v in metrics.items())
        if len(self._pending) >= self.flush_every:
            self.flush()

    def flush(self) -> None:
        while self._pending:
            batch, self._pending = self._pending[:1000], self._pending[1000:]
            self.client.log_batch(self.run_id, metrics=batch)

    def log_artifact(self, path: str | Path, artifact_path: str | None = None) -> None:
        self.client.log_artifact(self.run_id, str(path), artifact_path)

    def metric_history(self, key: str) -> list[tuple[int, float]]:
        self.flush()
        return [(m.step, m.value) for m in self.client.get_metric_history(self.run_id, key)]

    def finish(self, status: str = "FINISHED") -> None:
        if self.run_id is None:
            return
        if self._monitor is not None:
            self._monitor.finish()
            self._monitor = None
        self.flush()
        self.client.set_terminated(self.run_id, status=status)
