"""Build SAM2 from the configs packaged with `sam2`, without touching Hydra's global state.

`sam2.build_sam.build_sam2` composes its config through the global Hydra instance. Inside our own
`@hydra.main` app that instance belongs to us and points at `conf/`, so the stock builder fails
with "Cannot find primary config". Loading the packaged YAML with OmegaConf and instantiating it
gives the same model (same modules, same post-processing flags) with no global state involved.
"""

from __future__ import annotations

import logging
import re
from importlib import resources
from pathlib import Path
from typing import Any

from hydra.utils import instantiate
from omegaconf import OmegaConf
from sam2.modeling.sam2_base import SAM2Base

from src.errors import CheckpointError, ConfigError
from src.models.registry import sam2_config_path
from src.utils.checkpoint_io import read_checkpoint

log = logging.getLogger(__name__)

# The overrides `build_sam2(..., apply_postprocessing=True)` adds: fall back to multimask output when
# a single mask is unstable. They only act in eval mode, so training is unaffected.
POSTPROCESSING = {
    "model.sam_mask_decoder_extra_args.dynamic_multimask_via_stability": True,
    "model.sam_mask_decoder_extra_args.dynamic_multimask_stability_delta": 0.05,
    "model.sam_mask_decoder_extra_args.dynamic_multimask_stability_thresh": 0.98,
}

SAM2_IMAGE_SIZE = 1024  # the input size of the official SAM2.1 weights

# Hiera trunk (embedding width, number of blocks) of each SAM2.1 size, to name the size a
# checkpoint was made for when it does not fit the chosen one.
HIERA_SIGNATURES = {(96, 12): "tiny", (96, 16): "small", (112, 24): "base_plus", (144, 48): "large"}


def build_sam2_model(sam2_config: str, image_size: int) -> SAM2Base:
    """SAM2 with random weights from one of the SAM2.1 configs packaged with `sam2` (a size or its path)."""
    source = resources.files("sam2").joinpath(sam2_config_path(sam2_config, "model.sam2_config", ConfigError))
    if image_size % 32 or image_size <= 0:
        raise ConfigError(f"model.image_size={image_size}: expected a positive multiple of 32 (SAM2 uses 1024)")
    cfg = OmegaConf.create(source.read_text())
    OmegaConf.update(cfg, "model.image_size", image_size, force_add=True)
    for key, value in POSTPROCESSING.items():
        OmegaConf.update(cfg, key, value, force_add=True)
    OmegaConf.resolve(cfg)
    return instantiate(cfg.model, _recursive_=True)


def describe_sam2_state(state: dict) -> str:
    """Name the SAM2 size a state dict was made for, from its Hiera trunk."""
    embed = state.get("image_encoder.trunk.patch_embed.proj.weight")
    blocks = {m.group(1) for key in state if (m := re.match(r"image_encoder\.trunk\.blocks\.(\d+)\.", key))}
    if embed is None or not blocks:
        return "it does not look like a SAM2 state dict"
    signature = (int(embed.shape[0]), len(blocks))
    size = HIERA_SIGNATURES.get(signature)
    detail = f"Hiera width {signature[0]}, {signature[1]} blocks"
    return f"it looks like SAM2.1 {size} ({detail}): use model={size}" if size else f"its trunk has {detail}"


def load_sam2_weights(model: SAM2Base, path: str | Path, model_name: str) -> dict:
    """Load a `{"model": state_dict}` file into `model`; return the file's other entries (its metadata)."""
    return apply_sam2_weights(model, read_checkpoint(path), str(path), model_name)


def apply_sam2_weights(model: SAM2Base, checkpoint: Any, source: str, model_name: str) -> dict:
    """Load an already-read checkpoint, explaining any mismatch with the chosen model size."""
    model.load_state_dict(checked_sam2_state(model.state_dict(), checkpoint, source, model_name))
    return {k: v for k, v in checkpoint.items() if k != "model"}


def checked_sam2_state(own: dict, checkpoint: Any, source: str, model_name: str) -> dict:
    """A checkpoint's state dict, checked to fit `own` (a model's state dict) key for key and shape for shape."""
    if not isinstance(checkpoint, dict) or not isinstance(checkpoint.get("model"), dict):
        found = sorted(checkpoint)[:8] if isinstance(checkpoint, dict) else type(checkpoint).__name__
        raise CheckpointError(
            f"checkpoint {source}: expected a dict with a 'model' state dict (as the official "
            f"sam2.1_hiera_*.pt files and this repository's best.pt/last.pt); found {found}"
        )
    state = checkpoint["model"]
    missing = sorted(own.keys() - state.keys())
    unexpected = sorted(state.keys() - own.keys())
    reshaped = [k for k in own.keys() & state.keys() if own[k].shape != state[k].shape]
    if missing or unexpected or reshaped:
        example = (
            f"{reshaped[0]} is {tuple(state[reshaped[0]].shape)} there, {tuple(own[reshaped[0]].shape)} here"
            if reshaped
            else (missing or unexpected)[0]
        )
        raise CheckpointError(
            f"checkpoint {source} does not fit model={model_name}: {len(reshaped)} tensors differ in shape, "
            f"{len(missing)} missing, {len(unexpected)} unexpected (e.g. {example}); "
            f"{describe_sam2_state(state)}"
        )
    return state
