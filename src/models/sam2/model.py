"""SAM2's image path as two calls: encode each image once, decode many prompts against it.

The seed scripts reached into `SAM2ImagePredictor._features` and reused the last image's features
for a whole batch. Here every prompt carries the index of its image, so a batch of several images
with several objects each is decoded in one call, each object against its own image.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from peft import LoraConfig
from sam2.modeling.sam2_base import SAM2Base
from torch import nn

from src.errors import ConfigError
from src.models.sam2.activation_checkpointing import checkpoint_blocks
from src.models.sam2.adapters import EncoderAdapter

log = logging.getLogger(__name__)

TRAINABLE_PARTS = ("image_encoder", "sam_prompt_encoder", "sam_mask_decoder")
# Weights `encode` uses besides the image encoder: SAM2 projects the two high-resolution levels with
# the mask decoder's conv_s0/conv_s1 while encoding, and adds the no-memory embedding.
ENCODE_EXTRA_WEIGHTS = ("sam_mask_decoder.conv_s0.", "sam_mask_decoder.conv_s1.", "no_mem_embed")


@dataclass
class ImageFeatures:
    """Encoder output for a batch of images: the stride-16 embedding and the two finer levels."""

    image_embed: torch.Tensor  # (B, 256, S/16, S/16)
    high_res_feats: list[torch.Tensor]  # [(B, 32, S/4, S/4), (B, 64, S/8, S/8)]

    def select(self, image_index: torch.Tensor) -> ImageFeatures:
        """Features repeated per prompt: row i belongs to image `image_index[i]`."""
        return ImageFeatures(self.image_embed[image_index], [f[image_index] for f in self.high_res_feats])


@dataclass
class DecoderOutput:
    low_res_logits: torch.Tensor  # (N, M, S/4, S/4), M = 3 with multimask output, else 1
    iou_pred: torch.Tensor  # (N, M)


class Sam2Model(nn.Module):
    """A SAM2 model with a chosen set of trainable parts; the rest is frozen and kept in eval mode."""

    def __init__(
        self,
        sam: SAM2Base,
        trainable: Sequence[str],
        gradient_checkpointing: bool = False,
        adapter: LoraConfig | None = None,
        model_name: str = "",
    ):
        """`adapter`: LoRA on the image encoder's trunk (its base weights frozen); `model_name` is the size it names."""
        super().__init__()
        unknown = sorted(set(trainable) - set(TRAINABLE_PARTS))
        if unknown or not trainable:
            raise ConfigError(
                f"model.trainable={list(trainable)}: expected a non-empty subset of {list(TRAINABLE_PARTS)}"
            )
        self.sam = sam
        self.trainable = tuple(part for part in TRAINABLE_PARTS if part in trainable)
        if adapter is not None and "image_encoder" in self.trainable:
            raise ConfigError(
                "adapter=lora with model.trainable including image_encoder: the adapter is there to keep the "
                "encoder's weights frozen; drop image_encoder from model.trainable, or use adapter=none"
            )
        # peft injects its layers in place and freezes everything else; the trainable parts learn as before
        self.adapter = EncoderAdapter(sam, adapter, model_name) if adapter is not None else None
        for name, param in sam.named_parameters():
            param.requires_grad_(name.split(".", 1)[0] in self.trainable or ".lora_" in name)
        self.image_size = int(sam.image_size)
        # Strides 4, 8 and 16 of the Hiera FPN; SAM2ImagePredictor hard-codes them for 1024 px.
        self.feature_sizes = [(self.image_size // s, self.image_size // s) for s in (4, 8, 16)]
        # ImageNet statistics, as SAM2's own transforms; not saved, so checkpoints stay stock SAM2
        self.register_buffer("pixel_mean", torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1) * 255, persistent=False)
        self.register_buffer("pixel_std", torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1) * 255, persistent=False)
        if gradient_checkpointing:
            checkpoint_blocks(sam.image_encoder.trunk.blocks)

    @property
    def encoder_trainable(self) -> bool:
        """Whether the encoder's outputs change while training (trained in full, or adapted)."""
        return "image_encoder" in self.trainable or self.adapter is not None

    def state_for_checkpoint(self) -> dict[str, Any]:
        """`{"model": stock SAM2 state dict}` (an adapter merged in), plus `"adapter"`: how to resume it exactly."""
        if self.adapter is None:
            return {"model": self.sam.state_dict()}
        return {"model": self.adapter.stock_state_dict(merged=True), "adapter": self.adapter.training_state()}

    def stock_state_dict(self) -> dict[str, torch.Tensor]:
        """The weights under stock SAM2 names that checkpoints load into (an adapter's base weights)."""
        return self.sam.state_dict() if self.adapter is None else self.adapter.stock_state_dict(merged=False)

    def load_stock_state_dict(
        self, state: dict[str, torch.Tensor], saved_adapter: dict[str, Any] | None, source: str
    ) -> None:
        """Load stock-named weights; with an adapter, into its base (and its own tensors from `saved_adapter`)."""
        if self.adapter is None:
            self.sam.load_state_dict(state)
        elif saved_adapter is None:
            self.adapter.load_base(state)
        else:
            self.adapter.load_training_state(state, saved_adapter, source)

    def train(self, mode: bool = True) -> Sam2Model:
        super().train(mode)
        # frozen parts stay in eval mode so that dropout/drop-path never act on them
        for part in TRAINABLE_PARTS:
            if part not in self.trainable and not (part == "image_encoder" and self.adapter is not None):
                getattr(self.sam, part).eval()
        return self

    def trainable_parameters(self) -> list[nn.Parameter]:
        return [p for p in self.parameters() if p.requires_grad]

    def encoder_state(self) -> dict[str, torch.Tensor]:
        """Every weight `encode` depends on: what an embedding cache's key must cover."""
        return {
            name: value
            for name, value in self.sam.state_dict().items()
            if name.startswith("image_encoder.") or name.startswith(ENCODE_EXTRA_WEIGHTS)
        }

    @property
    def feature_shapes(self) -> list[tuple[int, int, int]]:
        """Unbatched shapes of `encode`'s outputs: [image_embed, high_res_0, high_res_1]."""
        decoder = self.sam.sam_mask_decoder
        (h4, w4), (h8, w8), (h16, w16) = self.feature_sizes
        return [
            (decoder.transformer_dim, h16, w16),
            (decoder.conv_s0.out_channels, h4, w4),
            (decoder.conv_s1.out_channels, h8, w8),
        ]

    def encode(self, images: torch.Tensor) -> ImageFeatures:
        """Run the image encoder on uint8 RGB images (B, 3, S, S); normalisation happens here, on the device.

        With a frozen encoder this runs without gradients, so conv_s0/conv_s1 (parts of the mask
        decoder) never learn either: their outputs can be cached like the encoder's.
        """
        grad = self.encoder_trainable and torch.is_grad_enabled()
        with torch.set_grad_enabled(grad), torch.profiler.record_function("sam2.encode"):
            pixels = (images.float() - self.pixel_mean) / self.pixel_std
            backbone_out = self.sam.forward_image(pixels)
            _, vision_feats, _, _ = self.sam._prepare_backbone_features(backbone_out)
            if self.sam.directly_add_no_mem_embed:
                vision_feats[-1] = vision_feats[-1] + self.sam.no_mem_embed
            batch = images.shape[0]
            feats = [
                feat.permute(1, 2, 0).reshape(batch, -1, *size)
                for feat, size in zip(vision_feats[::-1], self.feature_sizes[::-1], strict=True)
            ][::-1]
        return ImageFeatures(image_embed=feats[-1], high_res_feats=feats[:-1])

    def decode(
        self,
        features: ImageFeatures,
        image_index: torch.Tensor,
        points: torch.Tensor,
        labels: torch.Tensor,
        mask_input: torch.Tensor | None = None,
        multimask: bool = False,
    ) -> DecoderOutput:
        """Decode N prompts; `points` (N, P, 2) are pixel (x, y) in the S x S model input."""
        with torch.profiler.record_function("sam2.decode"):
            per_prompt = features.select(image_index)
            sparse, dense = self.sam.sam_prompt_encoder(points=(points, labels), boxes=None, masks=mask_input)
            low_res, iou_pred, _, _ = self.sam.sam_mask_decoder(
                image_embeddings=per_prompt.image_embed,
                image_pe=self.sam.sam_prompt_encoder.get_dense_pe(),
                sparse_prompt_embeddings=sparse,
                dense_prompt_embeddings=dense,
                multimask_output=multimask,
                repeat_image=False,
                high_res_features=per_prompt.high_res_feats,
            )
        return DecoderOutput(low_res_logits=low_res, iou_pred=iou_pred)

    @staticmethod
    def upscale(low_res_logits: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
        """Mask logits at `size` (H, W), bilinear as SAM2's own post-processing."""
        return F.interpolate(low_res_logits.float(), size=size, mode="bilinear", align_corners=False)
