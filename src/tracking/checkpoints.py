"""Where `checkpoint=` points: fine-tuned weights in a file, a training run folder, or an MLflow run.

Users evaluate what they see: the run folder `src.train` wrote, a weights file in it, or the run in
the MLflow UI (its run id, or a `runs:/<run id>/<artifact path>` URI). Artifacts are downloaded to
a temporary folder, read as plain tensors (`weights_only=True`) and the copy is deleted.
"""

from __future__ import annotations

import logging
import re
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from mlflow.artifacts import download_artifacts
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient
from omegaconf import DictConfig

from src.errors import CheckpointError
from src.utils.adapter_folder import is_adapter_folder, read_adapter_folder
from src.utils.atomic import write_text_atomic
from src.utils.checkpoint_io import BEST, read_checkpoint, torch_save_atomic, weights_file

log = logging.getLogger(__name__)

TASKS = ("segmentation", "landmarks", "inpainting")  # what meta.task may name
RUN_ID = re.compile(r"[0-9a-f]{32}")
RUNS_URI = "runs:/"
CHECKPOINT_ARTIFACT = f"checkpoints/{BEST}"  # where src.train logs a run's best weights
ACCEPTED = (
    "expected a weights file (.pt), the run folder of a training run, the adapter/ folder of an adapter run, "
    f"an MLflow run id (32 hex characters) or a runs:/<run id>/{CHECKPOINT_ARTIFACT} URI"
)


@dataclass
class Weights:
    """Model weights for inference, and where they came from."""

    checkpoint: dict[str, Any] | None  # {"model": state_dict, "meta": {...}}; None: random initialisation
    source: str  # where they came from, for messages and tags
    training_run_id: str | None = None  # the MLflow run that trained them, when known

    @property
    def meta(self) -> dict[str, Any]:
        meta = (self.checkpoint or {}).get("meta")
        return meta if isinstance(meta, dict) else {}

    @property
    def task(self) -> str:
        """The task the weights were trained for; official SAM2 files and older ones say nothing: segmentation."""
        task = self.meta.get("task", "segmentation")
        if task not in TASKS:
            raise CheckpointError(f"{self.source}: meta.task={task!r}; expected one of {list(TASKS)}")
        return task

    @property
    def image_size(self) -> int | None:
        """The model input size the weights were fine-tuned at, when the checkpoint says."""
        size = self.meta.get("image_size")
        return int(size) if size else None


def export_spec_path(weights: str | Path) -> Path:
    """The YAML beside an exported state dict that says how to rebuild its model."""
    return Path(weights).with_suffix(".yaml")


def write_export(checkpoint: dict[str, Any], output: str | Path) -> tuple[Path, Path]:
    """Write `checkpoint`'s weights as a plain state dict, and its metadata (how to rebuild it) beside them;
    `read_export` reads them back, for any task."""
    meta = dict(checkpoint.get("meta") or {})
    spec = {key: value for key, value in meta.items() if key != "mlflow_run_id"}  # the rest rebuilds the model
    weights = torch_save_atomic({k: v.detach().cpu() for k, v in checkpoint["model"].items()}, output)
    side = write_text_atomic(yaml.safe_dump(spec, sort_keys=False), export_spec_path(output))
    return weights, side


def read_export(path: str | Path) -> Weights:
    """An export of `python -m src.export`: a plain state dict and its metadata as YAML (data, never code)."""
    path, spec = Path(path), export_spec_path(path)
    try:
        meta = yaml.safe_load(spec.read_text())
    except yaml.YAMLError as err:
        raise CheckpointError(f"exported model {path}: {spec} is not valid YAML ({err})") from err
    if not isinstance(meta, dict):
        raise CheckpointError(f"exported model {path}: {spec} must be a mapping of metadata keys")
    return Weights({"model": read_checkpoint(path), "meta": meta}, str(path), meta.get("mlflow_run_id"))


def read_trained_checkpoint(spec: str, tracking_uri: str) -> Weights:
    """Read the weights `checkpoint=<spec>` names (a weights file, an export with its YAML, a run folder, an
    adapter folder, an MLflow run id or URI); MLflow ids and URIs are looked up in `tracking_uri`."""
    text = str(spec).strip()
    path = Path(text).expanduser()
    if path.is_file() and export_spec_path(path).is_file():
        return read_export(path)
    if is_adapter_folder(path):  # {"adapter": ..., "meta": ...}: applied to its base when the model is built
        adapter = read_adapter_folder(path)
        return Weights(adapter, str(path), adapter["meta"].get("mlflow_run_id"))
    if path.exists():
        file = weights_file(path, key="checkpoint")
        found = Weights(read_checkpoint(file), str(file))
        found.training_run_id = found.meta.get("mlflow_run_id")
        return found
    if text.startswith(RUNS_URI):
        run_id, _, artifact = text[len(RUNS_URI) :].strip("/").partition("/")
        return _from_mlflow(text, run_id, artifact or CHECKPOINT_ARTIFACT, tracking_uri)
    if RUN_ID.fullmatch(text):
        return _from_mlflow(text, text, CHECKPOINT_ARTIFACT, tracking_uri)
    raise CheckpointError(f"checkpoint={text}: no such file or folder, and not an MLflow run; {ACCEPTED}")


def requested_weights(cfg: DictConfig) -> Weights | None:
    """The trained weights `checkpoint=` names; None for the un-tuned model (`original=true` or no checkpoint)."""
    if cfg.get("original") or cfg.get("checkpoint") is None:
        return None
    return read_trained_checkpoint(str(cfg.checkpoint), cfg.logger.tracking_uri)


def _check_store(spec: str, tracking_uri: str) -> None:
    """A SQLite store that does not exist would be created empty by MLflow; say where to look instead."""
    if tracking_uri.startswith("sqlite:///"):
        database = Path(tracking_uri[len("sqlite:///") :])
        if not database.is_file():
            raise CheckpointError(
                f"checkpoint={spec} looks like an MLflow run, but there is no MLflow store at {database}; set "
                "logger.tracking_uri to where the training run was logged (sqlite:///PATH/mlflow.db or "
                "http://host:5000), or pass the run folder"
            )


def _from_mlflow(spec: str, run_id: str, artifact: str, tracking_uri: str) -> Weights:
    _check_store(spec, tracking_uri)
    client = MlflowClient(tracking_uri)
    try:
        run = client.get_run(run_id)
    except MlflowException as err:
        raise CheckpointError(
            f"checkpoint={spec}: no MLflow run {run_id} in {tracking_uri} ({str(err).splitlines()[0]}); set "
            "logger.tracking_uri to the store the training run was logged to"
        ) from err
    folder = artifact.rpartition("/")[0] or None
    listed = {entry.path: entry for entry in client.list_artifacts(run_id, folder)}
    if artifact in listed and listed[artifact].is_dir:  # runs:/<id>/checkpoints
        artifact = f"{artifact}/{BEST}"
        listed = {entry.path: entry for entry in client.list_artifacts(run_id, artifact.rpartition("/")[0])}
    if artifact not in listed:
        present = sorted(entry.path for entry in client.list_artifacts(run_id)) or ["no artifacts"]
        run_dir = run.data.tags.get("run_dir")
        raise CheckpointError(
            f"MLflow run {run_id} ('{run.info.run_name}', {run.info.status}) has no checkpoint artifact {artifact} "
            f"(it has: {', '.join(present)}). src.train logs {CHECKPOINT_ARTIFACT} when a run ends, so a run that "
            "is still going or stopped early has none"
            + (f"; pass its run folder instead: checkpoint={run_dir}" if run_dir else "")
        )
    with tempfile.TemporaryDirectory(prefix="samtune-checkpoint-") as tmp:
        log.info("downloading %s of MLflow run %s", artifact, run_id)
        local = download_artifacts(run_id=run_id, artifact_path=artifact, dst_path=tmp, tracking_uri=tracking_uri)
        checkpoint = read_checkpoint(local)
    return Weights(checkpoint, f"runs:/{run_id}/{artifact}", run_id)
