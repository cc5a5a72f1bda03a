"""Exported landmark models: a plain state dict plus a YAML beside it that says how to rebuild it.

    animal_character_hrnetv2.pth    torch.save(state_dict): tensors only
    animal_character_hrnetv2.yaml   model config, image size, scheme, heatmap decoding, crop margin

`load_exported(path)` rebuilds the model from the YAML and loads the tensors with
`weights_only=True`; nothing of the trainer, Hydra run or MLflow is needed.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
import yaml

from src.errors import CheckpointError
from src.landmarks.predictor import LandmarkPredictor
from src.utils.atomic import write_text_atomic
from src.utils.checkpoint_io import torch_save_atomic


def spec_path(weights: str | Path) -> Path:
    return Path(weights).with_suffix(".yaml")


def write_export(checkpoint: dict[str, Any], output: str | Path) -> tuple[Path, Path]:
    """Write `checkpoint`'s weights as a plain state dict, and its metadata (how to rebuild it) beside them."""
    meta = dict(checkpoint.get("meta") or {})
    spec = {key: value for key, value in meta.items() if key != "mlflow_run_id"}  # the rest rebuilds the model
    weights = torch_save_atomic({k: v.detach().cpu() for k, v in checkpoint["model"].items()}, output)
    side = write_text_atomic(yaml.safe_dump(spec, sort_keys=False), spec_path(output))
    return weights, side


def load_exported(path: str | Path, device: str | torch.device = "cpu") -> LandmarkPredictor:
    """A ready predictor from an exported `.pth` and the `.yaml` beside it."""
    path = Path(path)
    side = spec_path(path)
    if not path.is_file() or not side.is_file():
        raise CheckpointError(f"exported model {path}: expected {path} and {side} (written by python -m src.export)")
    meta = yaml.safe_load(side.read_text())
    state = torch.load(path, map_location="cpu", weights_only=True)
    return LandmarkPredictor.from_checkpoint({"model": state, "meta": meta}, str(path)).to(torch.device(device))
