"""The models a file may ask for, by key: SAM2 sizes and landmark backbones.

Checkpoint metadata, exported YAML and MLflow artifacts come from other people. They name what to
build with a key of these registries (and plain numbers); a key is checked against the allowlist
and never reaches `instantiate` or an import, so a file cannot make the loader run code.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from src.errors import SamtuneError

# The four SAM2.1 configs packaged with `sam2`, by size
SAM2_CONFIGS = {
    "tiny": "configs/sam2.1/sam2.1_hiera_t.yaml",
    "small": "configs/sam2.1/sam2.1_hiera_s.yaml",
    "base_plus": "configs/sam2.1/sam2.1_hiera_b+.yaml",
    "large": "configs/sam2.1/sam2.1_hiera_l.yaml",
}

# Landmark backbones: timm's model name and the fixed `features_only` options of each key
BACKBONES: dict[str, dict[str, Any]] = {
    # HRNetV2-W18: the four raw branches (18/36/72/144 channels, strides 4-32), not the increments
    "hrnet_w18": {"name": "hrnet_w18", "feature_location": "", "out_indices": (1, 2, 3, 4)},
}

# The one `_target_` earlier versions of this project wrote into checkpoint and export metadata
LEGACY_BACKBONE_TARGET = "src.tasks.landmarks.model.TimmBackbone"


def sam2_config_path(value: Any, where: str, error: type[SamtuneError]) -> str:
    """The packaged config of a SAM2 size key or of its exact packaged path; anything else is refused."""
    if isinstance(value, str):
        if value in SAM2_CONFIGS:
            return SAM2_CONFIGS[value]
        if value in SAM2_CONFIGS.values():
            return value
    raise error(
        f"{where}={value!r}: expected a SAM2.1 size ({', '.join(SAM2_CONFIGS)}) or its config packaged "
        f"with sam2 ({', '.join(SAM2_CONFIGS.values())}); other files are not loaded"
    )


def sam2_size(value: Any, where: str, error: type[SamtuneError]) -> str:
    """The size key of a SAM2 config value (key or packaged path)."""
    path = sam2_config_path(value, where, error)
    return next(size for size, config in SAM2_CONFIGS.items() if config == path)


def backbone_key(value: Any, where: str, error: type[SamtuneError]) -> str:
    """A landmark backbone's registry key.

    Older metadata describes the backbone as `{_target_: src.tasks.landmarks.model.TimmBackbone,
    name: hrnet_w18, ...}`; that exact target with a registered name and its fixed options is mapped
    to the key, anything else is refused.
    """
    if isinstance(value, str) and value in BACKBONES:
        return value
    if isinstance(value, Mapping) and value.get("_target_") == LEGACY_BACKBONE_TARGET:
        key = next((k for k, spec in BACKBONES.items() if spec["name"] == value.get("name")), None)
        options = {k: v for k, v in value.items() if k not in ("_target_", "pretrained")}
        if key is not None and _same_options(options, BACKBONES[key]):
            return key
    raise error(
        f"{where}={_short(value)}: expected a backbone key ({', '.join(BACKBONES)}); "
        "metadata names a registered model, it does not describe code to run"
    )


def _same_options(options: Mapping[str, Any], spec: Mapping[str, Any]) -> bool:
    def plain(v: Any) -> Any:
        return list(v) if isinstance(v, (list, tuple)) else v

    return options.keys() == spec.keys() and all(plain(options[k]) == plain(spec[k]) for k in spec)


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 160 else text[:157] + "..."


# The Hugging Face Hub names of the four SAM2.1 sizes: what an adapter folder's adapter_config.json
# (peft's metadata) gives as its `base_model_name_or_path`
SAM2_HUB_IDS = {
    "tiny": "facebook/sam2.1-hiera-tiny",
    "small": "facebook/sam2.1-hiera-small",
    "base_plus": "facebook/sam2.1-hiera-base-plus",
    "large": "facebook/sam2.1-hiera-large",
}
