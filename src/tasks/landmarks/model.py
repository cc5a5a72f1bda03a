"""Landmark heatmap models: a multi-level backbone and an HRNetV2-style head.

The head follows HRNetV2 (Sun et al., 2019) as mmpose's `TopdownHeatmapSimpleHead` with
`input_transform=resize_concat` builds it for the anime-face-detector: every feature level is
upsampled to the finest, concatenated, mixed by a 1x1 conv-BN-ReLU and mapped to one heatmap per
landmark by a 1x1 conv. Its parameters are named as mmpose names them (`final_layer.0/1/3`), so
mmpose checkpoints map onto it key for key.

Backbones (`src.models.backbones`): the Hiera image encoder of SAM2 or timm's HRNet, named by
`src.models.registry` keys.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from omegaconf import DictConfig, OmegaConf
from torch import nn

from src.errors import ConfigError
from src.models.backbones import Sam2Backbone, TimmBackbone
from src.models.registry import BACKBONES, backbone_key

log = logging.getLogger(__name__)

BACKBONE_PARTS = ("image_encoder", "backbone")  # model.trainable names for the backbone (SAM2 | timm)


class HeatmapHead(nn.Module):
    """Upsample all levels to the finest, concatenate, 1x1 conv-BN-ReLU, 1x1 conv to K heatmaps."""

    def __init__(self, in_channels: Sequence[int], num_points: int):
        super().__init__()
        total = int(sum(in_channels))
        self.final_layer = nn.Sequential(
            nn.Conv2d(total, total, kernel_size=1),
            nn.BatchNorm2d(total),
            nn.ReLU(inplace=True),
            nn.Conv2d(total, num_points, kernel_size=1),
        )

    def forward(self, features: Sequence[torch.Tensor]) -> torch.Tensor:
        size = features[0].shape[-2:]
        levels = [features[0]] + [
            F.interpolate(f, size=size, mode="bilinear", align_corners=False) for f in features[1:]
        ]
        return self.final_layer(torch.cat(levels, dim=1))


class LandmarkModel(nn.Module):
    """uint8 RGB crops (B, 3, S, S) -> heatmaps (B, K, S/stride, S/stride); the backbone may be frozen."""

    def __init__(self, backbone: nn.Module, num_points: int, image_size: int, train_backbone: bool):
        super().__init__()
        self.backbone, self.image_size = backbone, int(image_size)
        self.head = HeatmapHead(backbone.channels, num_points)
        self.heatmap_stride = int(backbone.strides[0])
        self.train_backbone = train_backbone
        self.backbone.requires_grad_(train_backbone)
        # ImageNet statistics (SAM2's and mmpose's); not saved, so state dicts stay plain
        self.register_buffer("pixel_mean", torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1) * 255, persistent=False)
        self.register_buffer("pixel_std", torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1) * 255, persistent=False)

    def train(self, mode: bool = True) -> LandmarkModel:
        super().train(mode)
        if not self.train_backbone:
            self.backbone.eval()  # a frozen backbone keeps its BatchNorm statistics and no dropout
        return self

    def trainable_parameters(self) -> list[nn.Parameter]:
        return [p for p in self.parameters() if p.requires_grad]

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        pixels = (images.float() - self.pixel_mean) / self.pixel_std
        with torch.set_grad_enabled(self.train_backbone and torch.is_grad_enabled()):
            features = self.backbone(pixels)
        return self.head(features)


def _plain(cfg: Mapping[str, Any] | DictConfig) -> dict[str, Any]:
    return OmegaConf.to_container(cfg, resolve=True) if isinstance(cfg, DictConfig) else dict(cfg)


def build_landmark_model(model_cfg: Mapping[str, Any] | DictConfig, num_points: int) -> LandmarkModel:
    """The model `model=` describes: a registered `backbone` key or a SAM2 `sam2_config`; nothing is imported
    or instantiated from the config, so the same function safely rebuilds models from checkpoint metadata."""
    cfg = _plain(model_cfg)
    image_size = int(cfg["image_size"])
    trainable = list(cfg.get("trainable") or [])
    if "backbone" in cfg:
        key = backbone_key(cfg["backbone"], "model.backbone", ConfigError)
        backbone = TimmBackbone(**BACKBONES[key], pretrained=bool(cfg.get("pretrained", False)))
    elif "sam2_config" in cfg:
        backbone = Sam2Backbone(cfg["sam2_config"], image_size)
    else:
        raise ConfigError(f"model={cfg.get('name')}: expected a `backbone` key or a `sam2_config` key")
    if image_size % max(backbone.strides):
        raise ConfigError(f"model.image_size={image_size}: expected a multiple of {max(backbone.strides)}")
    train_backbone = any(part in trainable for part in BACKBONE_PARTS)
    if not train_backbone:
        log.info(
            "landmarks: the %s backbone is frozen, only the head learns (add image_encoder or "
            "backbone to model.trainable to fine-tune it)",
            cfg.get("name"),
        )
    return LandmarkModel(backbone, num_points, image_size, train_backbone)
