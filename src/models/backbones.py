"""Multi-level image backbones for dense heads: SAM2's Hiera encoder and timm's feature extractors.

Both return a list of feature maps, finest first, and say their `channels` and `strides`: the Hiera
image encoder of SAM2 (its FPN levels at strides 4, 8, 16) and timm's HRNet (`features_only`, the
four raw branches at strides 4, 8, 16, 32, i.e. HRNetV2).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn


class Sam2Backbone(nn.Module):
    """SAM2's image encoder (Hiera trunk + FPN neck); the rest of SAM2 is not kept."""

    def __init__(self, sam2_config: str, image_size: int):
        super().__init__()
        from src.models.sam2.build import build_sam2_model

        self.image_encoder = build_sam2_model(sam2_config, image_size).image_encoder
        channels = int(self.image_encoder.neck.d_model)
        levels = len(self.image_encoder.neck.backbone_channel_list) - int(self.image_encoder.scalp)
        self.channels = [channels] * levels
        self.strides = [4 * 2**i for i in range(levels)]

    def forward(self, pixels: torch.Tensor) -> list[torch.Tensor]:
        return list(self.image_encoder(pixels)["backbone_fpn"])


class TimmBackbone(nn.Module):
    """A timm model with `features_only=True`, e.g. HRNet-W18's four branches (HRNetV2)."""

    def __init__(self, name: str, pretrained: bool, out_indices: Sequence[int], feature_location: str):
        super().__init__()
        import timm

        self.model = timm.create_model(
            name,
            features_only=True,
            pretrained=pretrained,
            out_indices=tuple(out_indices),
            feature_location=feature_location,
        )
        self.channels = list(self.model.feature_info.channels())
        self.strides = list(self.model.feature_info.reduction())

    def forward(self, pixels: torch.Tensor) -> list[torch.Tensor]:
        return list(self.model(pixels))
