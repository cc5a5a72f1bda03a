"""Saving and loading checkpoints: atomically, and without unpickling code.

A `last.pt` may hold only the tensors that changed since the `best.pt` beside it, with a reference
(`meta.weights_base`: the file, the keys it provides and their sha256), so that frozen weights are
stored once per run; `read_checkpoint` returns it whole, checked against the digest.
"""

from __future__ import annotations

import hashlib
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
BASE = "weights_base"  # meta entry of a weights file that takes its unchanged tensors from another file


def tensors_digest(tensors: dict[str, Any], keys: list[str]) -> str:
    """sha256 over the named tensors' names, dtypes, shapes and bytes (bit-exact, unlike torch.equal)."""
    digest = hashlib.sha256()
    for key in keys:
        tensor = tensors[key].detach().cpu().contiguous()
        digest.update(f"{key}\0{tensor.dtype}\0{tuple(tensor.shape)}\n".encode())
        digest.update(tensor.reshape(-1).view(torch.uint8).numpy())
    return digest.hexdigest()


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
    meta = loaded.get("meta")
    if isinstance(meta, dict) and BASE in meta:
        return _completed(loaded, path, meta[BASE])
    return loaded


def _completed(partial: dict, path: Path, reference: Any) -> dict:
    """A weights file holding only what changed since its base (the best.pt beside it), made whole."""
    valid = isinstance(reference, dict) and {"file", "keys", "sha256"} <= set(reference)
    if not valid or Path(str(reference["file"])).name != reference["file"]:
        raise CheckpointError(f"checkpoint {path}: meta.{BASE} must name a file beside it, its keys and their sha256")
    base_path = path.parent / reference["file"]
    base = read_checkpoint(base_path).get("model", {})
    keys = list(reference["keys"])
    if any(key not in base for key in keys) or tensors_digest(base, keys) != reference["sha256"]:
        raise CheckpointError(
            f"checkpoint {path} holds only the weights that changed since {base_path}, and that file no longer "
            "holds the others (it was replaced or edited); load the step folder's own best.pt, or resume from "
            "an earlier copy of the run folder"
        )
    meta = {key: value for key, value in partial["meta"].items() if key != BASE}
    return {**partial, "model": {**{key: base[key] for key in keys}, **partial["model"]}, "meta": meta}


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
