"""Exported landmark models: a plain state dict plus a YAML beside it that says how to rebuild it.

    animal_character_hrnetv2.pth    torch.save(state_dict): tensors only
    animal_character_hrnetv2.yaml   model config, image size, scheme, heatmap decoding, crop margin

`load_exported(path)` rebuilds the model from the YAML and loads the tensors with
`weights_only=True`; nothing of the trainer, Hydra run or MLflow is needed.
"""

from __future__ import annotations

from pathlib import Path

import torch

from src.errors import CheckpointError
from src.tasks.landmarks.predictor import LandmarkPredictor
from src.tracking.checkpoints import export_spec_path, read_export


def load_exported(path: str | Path, device: str | torch.device = "cpu") -> LandmarkPredictor:
    """A ready predictor from an exported `.pth` and the `.yaml` beside it."""
    path = Path(path)
    if not path.is_file() or not export_spec_path(path).is_file():
        raise CheckpointError(
            f"exported model {path}: expected {path} and {export_spec_path(path)} (written by python -m src.export)"
        )
    weights = read_export(path)
    return LandmarkPredictor.from_checkpoint(weights.checkpoint, weights.source).to(torch.device(device))
