"""LoRA on SAM2's Hiera trunk through Hugging Face `peft`, saved as stock SAM2 weights and as peft folders.

Full fine-tuning of the image encoder needs a large GPU at 1024 px, and decoder-only tuning keeps
the encoder's features as they are. Low-rank adapters on the trunk's linear layers adapt those
features with a small fraction of the parameters. `peft` injects them in place (the SAM2 model keeps
its own forward); a checkpoint merges them into plain weights that stock SAM2 loads unchanged, and
also keeps the frozen base weights and adapter tensors apart, so that a resumed run continues
exactly. The adapter alone (peft's format, see `src.utils.adapter_folder`) applies to its base at
load time.
"""

from __future__ import annotations

import copy
import json
import logging
import re
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig
from peft import LoraConfig, PeftModel, get_peft_model, get_peft_model_state_dict, set_peft_model_state_dict
from peft.tuners.lora import LoraLayer
from safetensors.torch import save_file
from sam2.modeling.sam2_base import SAM2Base
from torch import nn

from src.errors import CheckpointError, ConfigError
from src.models.registry import SAM2_HUB_IDS
from src.utils.adapter_folder import ADAPTER_CONFIG, ADAPTER_META, ADAPTER_WEIGHTS, TRAINED_PARTS
from src.utils.atomic import atomic_dir
from src.utils.folders import folder_size

log = logging.getLogger(__name__)

TRUNK = "image_encoder.trunk."
BASE_LAYER = ".base_layer."  # where peft moves an adapted layer's own weights
LORA_SETTINGS = ("r", "lora_alpha", "lora_dropout", "target_modules", "use_dora", "use_rslora", "bias", "lora_bias")


def lora_config(adapter_cfg: DictConfig, model_name: str) -> LoraConfig | None:
    """peft's LoraConfig for `adapter=lora`; None for `adapter=none`."""
    if adapter_cfg.name == "none":
        return None
    if adapter_cfg.name != "lora":
        raise ConfigError(f"adapter={adapter_cfg.name}: expected none or lora")
    return LoraConfig(
        r=int(adapter_cfg.rank),
        lora_alpha=float(adapter_cfg.alpha),
        lora_dropout=float(adapter_cfg.dropout),
        target_modules=str(adapter_cfg.target_modules),
        use_dora=bool(adapter_cfg.use_dora),
    )


def check_targets(sam: SAM2Base, target_modules: Any, where: str) -> list[str]:
    """The modules a regular expression selects, all of them nn.Linear layers of the Hiera trunk."""
    if not isinstance(target_modules, str):
        raise ConfigError(f"{where}={target_modules!r}: expected one regular expression over module names")
    try:
        pattern = re.compile(target_modules)
    except re.error as err:
        raise ConfigError(f"{where}={target_modules!r} is not a regular expression ({err})") from err
    chosen = [(name, m) for name, m in sam.named_modules() if pattern.fullmatch(name)]
    wrong = [
        f"{name} ({type(m).__name__})" for name, m in chosen if not (name.startswith(TRUNK) and type(m) is nn.Linear)
    ]
    if wrong or not chosen:
        found = f"it also selects {', '.join(wrong[:3])}" if wrong else "it selects no module"
        raise ConfigError(
            f"{where}={target_modules!r}: expected nn.Linear layers of {TRUNK[:-1]} only (e.g. "
            rf"image_encoder\.trunk\.blocks\.\d+\.attn\.(qkv|proj)); {found}"
        )
    return [name for name, _ in chosen]


class EncoderAdapter:
    """peft's LoRA layers inside one SAM2 model, and the model's weights seen in stock SAM2 naming."""

    def __init__(self, sam: SAM2Base, config: LoraConfig, model_name: str):
        """Inject `config`'s adapter into `sam` (SAM2.1 `model_name`), whose other weights peft freezes."""
        self.targets = check_targets(sam, config.target_modules, "adapter.target_modules")
        # peft names the base model in the adapter's metadata after the model's `name_or_path`, as for Hub models
        sam.name_or_path = SAM2_HUB_IDS[model_name]
        self.peft: PeftModel = get_peft_model(sam, config)  # replaces the chosen layers of `sam` in place
        self.sam = sam

    def layers(self) -> dict[str, LoraLayer]:
        return {name: m for name, m in self.sam.named_modules() if isinstance(m, LoraLayer)}

    def adapter_state(self) -> dict[str, torch.Tensor]:
        """The adapter's own tensors (peft's naming, as in its saved file)."""
        # no embedding layers to save: peft would otherwise look the base up on the Hugging Face Hub
        state = get_peft_model_state_dict(self.peft, save_embedding_layers=False)
        return {k: v.detach().clone() for k, v in state.items()}

    def stock_state_dict(self, merged: bool) -> dict[str, torch.Tensor]:
        """The model's state dict under stock SAM2 names: the base weights, or with the adapter merged in."""
        layers = self.layers()
        state = {}
        for key, value in self.sam.state_dict().items():
            module = next((name for name in layers if key.startswith(name + ".")), None)
            if module is None:
                state[key] = value
            elif key.startswith(module + BASE_LAYER) and not merged:
                state[module + "." + key[len(module + BASE_LAYER) :]] = value
        if merged:
            for name, layer in layers.items():
                copied = copy.deepcopy(layer)
                copied.merge()
                state.update({f"{name}.{k}": v for k, v in copied.get_base_layer().state_dict().items()})
        return state

    def load_base(self, state: dict[str, torch.Tensor]) -> None:
        """Load a stock-named state dict into the base weights; the adapter's tensors stay as they are."""
        layers = self.layers()
        renamed = {}
        for key, value in state.items():
            module = next((name for name in layers if key.startswith(name + ".")), None)
            renamed[key if module is None else module + BASE_LAYER + key[len(module) + 1 :]] = value
        result = self.sam.load_state_dict(renamed, strict=False)
        if result.unexpected_keys or any(".lora_" not in k for k in result.missing_keys):
            raise CheckpointError(f"the base weights do not fit the adapted model ({result})")

    def load_adapter_state(self, tensors: dict[str, torch.Tensor], source: str) -> None:
        result = set_peft_model_state_dict(self.peft, tensors)
        missing = [k for k in result.missing_keys if ".lora_" in k]
        if result.unexpected_keys or missing:
            example = (result.unexpected_keys or missing)[0]
            raise CheckpointError(
                f"adapter {source} does not fit this model: {len(result.unexpected_keys)} unexpected and "
                f"{len(missing)} missing adapter tensors (e.g. {example})"
            )

    def training_state(self) -> dict[str, Any]:
        """What a checkpoint keeps beside the merged weights: the base of the adapted layers and the adapter."""
        base = self.stock_state_dict(merged=False)
        prefixes = tuple(name + "." for name in self.layers())
        return {
            "base": {k: v for k, v in base.items() if k.startswith(prefixes)},
            "tensors": self.adapter_state(),
        }

    def load_training_state(self, merged: dict[str, torch.Tensor], saved: dict[str, Any], source: str) -> None:
        """Restore exactly what `training_state` saved, with the other weights from the merged state dict."""
        self.load_base({**merged, **saved["base"]})
        self.load_adapter_state(saved["tensors"], source)

    def save(self, folder: Path, meta: dict[str, Any], parts: dict[str, torch.Tensor]) -> dict[str, int]:
        """Write the adapter folder (peft's `save_pretrained`, the trained parts, metadata); return its bytes:
        in all, and of the adapter's own tensors."""
        with atomic_dir(folder) as tmp:
            self.peft.save_pretrained(str(tmp), save_embedding_layers=False)
            if parts:
                save_file({k: v.detach().contiguous().cpu() for k, v in parts.items()}, str(tmp / TRAINED_PARTS))
            (tmp / ADAPTER_META).write_text(json.dumps(meta, indent=2))
        return {"size": folder_size(folder), "adapter_size": (folder / ADAPTER_WEIGHTS).stat().st_size}


def adapter_base_size(adapter: dict[str, Any], source: str) -> str:
    """The SAM2.1 size an adapter was trained on, from peft's `base_model_name_or_path`."""
    hub_id = adapter["config"].get("base_model_name_or_path")
    size = next((size for size, name in SAM2_HUB_IDS.items() if name == hub_id), None)
    if size is None:
        raise CheckpointError(
            f"adapter {source}: {ADAPTER_CONFIG} names base_model_name_or_path={hub_id!r}; expected one of "
            f"{', '.join(SAM2_HUB_IDS.values())}"
        )
    return size


def check_adapter_base(adapter: dict[str, Any], source: str, model_name: str) -> None:
    """Refuse an adapter trained on another SAM2.1 size than `model_name`, naming both."""
    size = adapter_base_size(adapter, source)
    if size != model_name:
        raise CheckpointError(
            f"adapter {source} was trained on SAM2.1 {size}, but model={model_name}: an adapter applies only to "
            f"the base it was trained on; use model={size}"
        )


def apply_adapter(sam: SAM2Base, adapter: dict[str, Any], source: str, model_name: str) -> dict[str, torch.Tensor]:
    """Apply an adapter folder's contents to `sam` (holding its base weights); return the merged state dict."""
    check_adapter_base(adapter, source, model_name)
    if adapter["config"].get("peft_type") != "LORA":
        raise CheckpointError(f"adapter {source}: peft_type={adapter['config'].get('peft_type')!r}; expected LORA")
    # the settings that shape a LoRA/DoRA layer; the rest (e.g. auto_mapping, which names a class) is not read
    config = {k: v for k, v in adapter["config"].items() if k in LORA_SETTINGS}
    lora = EncoderAdapter(sam, LoraConfig(**config), model_name)
    lora.load_adapter_state(adapter["tensors"], source)
    merged = lora.stock_state_dict(merged=True)
    parts = adapter["parts"]
    unknown = sorted(parts.keys() - merged.keys())
    reshaped = [k for k in parts.keys() & merged.keys() if parts[k].shape != merged[k].shape]
    if unknown or reshaped:
        example = (unknown or reshaped)[0]
        raise CheckpointError(f"adapter {source}: {TRAINED_PARTS} does not fit model={model_name} (e.g. {example})")
    merged.update(parts)
    return merged
