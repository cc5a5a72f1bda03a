"""An adapter folder as files: peft's own two (config and LoRA tensors) plus what rebuilds the model.

    adapter_config.json         peft's config; `base_model_name_or_path` names the SAM2.1 size
    adapter_model.safetensors   peft's adapter tensors
    trained_parts.safetensors   the parts model.trainable trained beside the adapter (decoder, prompt encoder)
    samtune.json                task, model size, image size, step, MLflow run

Read here as data only (JSON and safetensors: no pickle, no code); `src.models.sam2.adapters`
writes the folder and checks what it names before applying it.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from safetensors import SafetensorError
from safetensors.torch import load_file

from src.errors import CheckpointError

ADAPTER_CONFIG = "adapter_config.json"  # peft's CONFIG_NAME
ADAPTER_WEIGHTS = "adapter_model.safetensors"  # peft's SAFETENSORS_WEIGHTS_NAME
TRAINED_PARTS = "trained_parts.safetensors"
ADAPTER_META = "samtune.json"


def is_adapter_folder(path: str | Path) -> bool:
    return (Path(path) / ADAPTER_CONFIG).is_file()


def read_adapter_folder(path: str | Path) -> dict[str, Any]:
    """`{"adapter": {"config", "tensors", "parts"}, "meta": {...}}` of an adapter folder."""
    path = Path(path)
    missing = [name for name in (ADAPTER_CONFIG, ADAPTER_WEIGHTS, ADAPTER_META) if not (path / name).is_file()]
    if missing:
        raise CheckpointError(
            f"adapter folder {path} lacks {', '.join(missing)}; expected the adapter/ folder of a training run "
            f"with adapter=lora ({ADAPTER_CONFIG}, {ADAPTER_WEIGHTS}, {ADAPTER_META})"
        )
    config, meta = (_read_json(path / name) for name in (ADAPTER_CONFIG, ADAPTER_META))
    parts = path / TRAINED_PARTS
    adapter = {
        "config": config,
        "tensors": _read_tensors(path / ADAPTER_WEIGHTS),
        "parts": _read_tensors(parts) if parts.is_file() else {},
    }
    return {"adapter": adapter, "meta": meta}


def _read_json(path: Path) -> dict[str, Any]:
    try:
        value = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise CheckpointError(f"{path} is not valid JSON ({err})") from err
    if not isinstance(value, dict):
        raise CheckpointError(f"{path}: expected a JSON object, found {type(value).__name__}")
    return value


def _read_tensors(path: Path) -> dict[str, Any]:
    try:
        return load_file(str(path), device="cpu")
    except (SafetensorError, OSError) as err:
        raise CheckpointError(f"{path} cannot be read as safetensors ({err})") from err
