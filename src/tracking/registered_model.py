"""The model `logger.register_as=NAME` registers: one MLflow model with two flavours.

- `pytorch`: the module, pickled as `mlflow.pytorch` stores it (`mlflow.pytorch.load_model`), for
  people who want SAM2's `SAM2Base` itself;
- `python_function`, for a segmentation run: `mlflow.pyfunc.load_model(uri).predict(frame)` returns
  masks (src.tasks.segmentation.pyfunc). It reads the run's `best.pt`, stored beside the module, as
  plain tensors (`weights_only=True`) and builds SAM2 from the registry key in its metadata, so
  predicting never unpickles anything. Other tasks keep `mlflow.pytorch`'s own pyfunc flavour.

`Model.log(flavor=<this module>, ...)` calls `save_model` below, as it does a flavour's own.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import mlflow.pytorch
from mlflow import pyfunc
from mlflow.models import Model
from mlflow.models.model import MLMODEL_FILE_NAME
from mlflow.utils.environment import _CONDA_ENV_FILE_NAME, _PYTHON_ENV_FILE_NAME
from torch import nn

from src.utils.checkpoint_io import read_checkpoint

PREDICTORS = {"segmentation": "src.tasks.segmentation.pyfunc"}  # meta.task -> the pyfunc loader module


def save_model(path: str, mlflow_model: Model, module: nn.Module, checkpoint: str, **kwargs: Any) -> None:
    """The pytorch flavour with `checkpoint` as an extra file, and the task's predicting pyfunc flavour."""
    mlflow.pytorch.save_model(  # pt2 would trace forward(), which SAM2Base does not have
        module, path, mlflow_model=mlflow_model, serialization_format="pickle", extra_files=[checkpoint], **kwargs
    )
    loader = PREDICTORS.get(str(read_checkpoint(checkpoint).get("meta", {}).get("task", "segmentation")))
    if loader is None:
        return
    mlflow_model.flavors.pop(pyfunc.FLAVOR_NAME, None)
    pyfunc.add_to_model(
        mlflow_model,
        loader_module=loader,
        data=f"extra_files/{Path(checkpoint).name}",  # where mlflow.pytorch puts extra files
        conda_env=_CONDA_ENV_FILE_NAME,
        python_env=_PYTHON_ENV_FILE_NAME,
    )
    mlflow_model.save(str(Path(path) / MLMODEL_FILE_NAME))
