"""Starting weights for landmark models: SAM2's image encoder, or an mmpose HRNetV2 checkpoint.

mmpose names HRNet's modules as the original HRNet code does, and so does timm, so a checkpoint
such as the anime-face-detector's `hrnetv2_w18` (28 landmarks) maps by prefix:

    backbone.<name>                 -> backbone.model.<name>     (timm's HRNet inside TimmBackbone)
    keypoint_head.final_layer.<i>.  -> head.final_layer.<i>.     (our head mirrors mmpose's)

A file may hold the state dict at its top level, under "state_dict" (mmcv) or under "model".
Keys that map nowhere and model keys the file lacks are reported, never silently dropped.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from src.errors import CheckpointError
from src.models.backbones import Sam2Backbone
from src.tasks.landmarks.model import LandmarkModel
from src.utils.checkpoint_io import read_checkpoint

log = logging.getLogger(__name__)

MMPOSE_PREFIXES = (("backbone.", "backbone.model."), ("keypoint_head.", "head."))


@dataclass
class LoadReport:
    loaded: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)  # model keys the file does not provide
    unmapped: list[str] = field(default_factory=list)  # file keys with no place in the model
    reshaped: list[str] = field(default_factory=list)  # keys whose shapes differ (e.g. another point count)

    def summary(self) -> str:
        parts = [f"{len(self.loaded)} tensors loaded"]
        for name in ("missing", "unmapped", "reshaped"):
            keys = getattr(self, name)
            if keys:
                parts.append(f"{len(keys)} {name} (e.g. {', '.join(keys[:3])})")
        return "; ".join(parts)


def unwrap_state_dict(checkpoint: Any, source: str) -> dict[str, torch.Tensor]:
    """The tensors of an mmcv/mmpose, torch or timm checkpoint file."""
    if isinstance(checkpoint, dict):
        for key in ("state_dict", "model"):
            if isinstance(checkpoint.get(key), dict):
                return checkpoint[key]
        if checkpoint and all(isinstance(v, torch.Tensor) for v in checkpoint.values()):
            return checkpoint
    raise CheckpointError(f"checkpoint {source}: expected a state dict, or one under 'state_dict' or 'model'")


def mmpose_to_ours(key: str) -> str | None:
    """Our key for an mmpose HRNetV2 key; None when it has no counterpart."""
    for theirs, ours in MMPOSE_PREFIXES:
        if key.startswith(theirs):
            return ours + key[len(theirs) :]
    return None


def ours_to_mmpose(key: str) -> str | None:
    """The inverse of `mmpose_to_ours` (to write a model in mmpose's layout)."""
    for theirs, ours in MMPOSE_PREFIXES:
        if key.startswith(ours):
            return theirs + key[len(ours) :]
    return None


def is_mmpose(state: dict[str, torch.Tensor]) -> bool:
    """mmpose names the head `keypoint_head` and the HRNet's modules directly under `backbone.`."""
    return any(k.startswith("keypoint_head.") for k in state) or (
        any(k.startswith("backbone.") for k in state) and not any(k.startswith("backbone.model.") for k in state)
    )


def load_mapped(model: LandmarkModel, state: dict[str, torch.Tensor], source: str, mmpose: bool) -> LoadReport:
    """Load the tensors that fit (after mapping mmpose names); a file that fits nothing is an error."""
    own = model.state_dict()
    report, mapped = LoadReport(), {}
    for key, value in state.items():
        target = mmpose_to_ours(key) if mmpose else key
        if target is None or target not in own:
            report.unmapped.append(key)
        elif own[target].shape != value.shape:
            report.reshaped.append(f"{target} {tuple(value.shape)} vs {tuple(own[target].shape)}")
        else:
            mapped[target] = value
    report.loaded = sorted(mapped)
    report.missing = sorted(set(own) - set(mapped) - {r.split(" ")[0] for r in report.reshaped})
    if not mapped:
        raise CheckpointError(
            f"checkpoint {source}: none of its {len(state)} tensors fit this model ({report.summary()}); expected "
            "an mmpose HRNetV2 checkpoint (backbone.*, keypoint_head.final_layer.*) or one of ours"
        )
    model.load_state_dict(mapped, strict=False)
    return report


def load_backbone_checkpoint(model: LandmarkModel, path: str | Path) -> LoadReport:
    """`model.checkpoint` for a landmark model: SAM2 weights feed the image encoder, mmpose ones map."""
    checkpoint = read_checkpoint(path)
    state = unwrap_state_dict(checkpoint, str(path))
    if isinstance(model.backbone, Sam2Backbone):
        encoder = {k: v for k, v in state.items() if k.startswith("image_encoder.")}
        if not encoder:
            raise CheckpointError(f"checkpoint {path}: no image_encoder.* tensors; expected a SAM2 checkpoint")
        report = load_mapped(model, {f"backbone.{k}": v for k, v in encoder.items()}, str(path), mmpose=False)
    else:
        report = load_mapped(model, state, str(path), mmpose=is_mmpose(state))
    log.info("landmark model initialised from %s: %s", path, report.summary())
    if report.missing or report.reshaped:
        log.warning(
            "these model tensors keep their random initialisation: %s",
            ", ".join([*report.missing[:5], *report.reshaped[:5]]) + (" ..." if len(report.missing) > 5 else ""),
        )
    return report
