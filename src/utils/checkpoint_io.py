"""Saving and loading checkpoints: atomically, and without unpickling code."""

from __future__ import annotations

import os
import pickle
import zipfile
from pathlib import Path
from typing import Any

import torch

from src.errors import CheckpointError, first_line
from src.utils.atomic import atomic_path

# a run's checkpoints/ folder: best and last weights, and the training state beside last
BEST, LAST, STATE = "best.pt", "last.pt", "last_state.pt"


def torch_save_atomic(obj: Any, dest: str | os.PathLike) -> Path:
    """`torch.save` through a temporary file, so an interrupted save never corrupts `dest`."""
    with atomic_path(dest) as tmp:
        torch.save(obj, tmp)
    return Path(dest)


def read_checkpoint(path: str | Path) -> dict:
    """Load a checkpoint safely (`weights_only=True`: a file from the internet cannot run code)."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist")
    if path.stat().st_size == 0:
        raise CheckpointError(f"checkpoint {path} is empty (0 bytes); expected a PyTorch file saved with torch.save")
    try:
        loaded = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        raise CheckpointError(
            f"checkpoint {path} holds pickled Python objects, not only tensors (for example a whole model saved "
            "with torch.save(model)); it is loaded with weights_only=True so that a file cannot run code: save "
            "{'model': model.state_dict()} instead"
        ) from err
    except (RuntimeError, EOFError, zipfile.BadZipFile, ValueError, KeyError, IndexError, OSError) as err:
        raise CheckpointError(
            f"checkpoint {path} cannot be read as plain tensors ({type(err).__name__}: {first_line(err)}); expected a "
            "PyTorch file saved with torch.save, holding no code objects (it is loaded with weights_only=True)"
        ) from err
    if not isinstance(loaded, dict):
        raise CheckpointError(
            f"checkpoint {path} holds a {type(loaded).__name__}; expected a dict such as {{'model': state_dict}}"
        )
    return loaded


def weights_file(path: str | Path, key: str = "trainer.init_from") -> Path:
    """A weights file, or the best weights of a run folder, as given to `<key>=PATH`."""
    path = Path(path).expanduser()
    for candidate in (path, path / "checkpoints" / BEST, path / BEST):
        if candidate.is_file():
            return candidate
    raise CheckpointError(
        f"{key}={path}: not a file, and no {BEST} in it or its checkpoints/ folder; expected a "
        "weights file ({'model': state_dict}) or the run folder of an earlier training run"
    )
