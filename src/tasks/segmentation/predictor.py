"""SAM2 as a promptable predictor for one image of any size: the component every inference tool shares.

`src.evaluate`, `src.predict` (and its browser page) and `src.automask` all run a model through
`Sam2Predictor`, so an image reaches the encoder exactly as it did in training (`resize_image`,
`Sam2Model.encode`), and every caller speaks in the image's own pixels: points and boxes go in as
original (x, y) pixel coordinates, masks come back at the original size. The predictor knows
nothing of files, configs or user interfaces; the functions at the end build one from a config.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial

import numpy as np
import torch
from omegaconf import DictConfig

from src.models.sam2.adapters import apply_adapter, check_adapter_base
from src.models.sam2.build import SAM2_IMAGE_SIZE, apply_sam2_weights, build_sam2_model
from src.models.sam2.embedding_cache import EmbeddingCache, as_image_features, stack_features
from src.models.sam2.model import ImageFeatures, Sam2Model
from src.models.sam2.weights import resolve_checkpoint
from src.tasks.segmentation.dataset import resize_image, to_chw
from src.tasks.segmentation.prompts import Prompts
from src.tracking.checkpoints import Weights, requested_weights
from src.utils.checkpoint_io import read_checkpoint
from src.utils.device import autocast, resolve_device, resolve_precision

log = logging.getLogger(__name__)


@dataclass
class EncodedImage:
    """An image after the encoder: its features and the size prompts and masks refer to."""

    features: ImageFeatures  # batch of one
    height: int
    width: int


@dataclass
class Prediction:
    """Candidate masks for N objects of one image, as low-resolution logits and predicted IoUs."""

    low_res_logits: torch.Tensor  # (N, M, S/4, S/4); M = 3 with multimask output, else 1
    scores: torch.Tensor  # (N, M): the model's own estimate of each candidate's IoU
    size: tuple[int, int]  # (H, W) of the original image

    @property
    def best(self) -> torch.Tensor:
        """(N,) index of the candidate with the highest predicted IoU."""
        return self.scores.argmax(dim=1)

    def best_logits(self) -> torch.Tensor:
        """(N, 1, S/4, S/4): the chosen masks as the mask prompt of a next click round."""
        rows = torch.arange(self.scores.shape[0], device=self.scores.device)
        return self.low_res_logits[rows, self.best].unsqueeze(1)

    def best_masks(self) -> torch.Tensor:
        """(N, H, W) boolean masks at the original size."""
        return Sam2Model.upscale(self.best_logits(), self.size)[:, 0] > 0

    def masks(self) -> torch.Tensor:
        """(N, M, H, W) boolean masks of every candidate at the original size."""
        return Sam2Model.upscale(self.low_res_logits, self.size) > 0


class Sam2Predictor:
    """Encode an image once, then decode any number of prompts against it, in original pixels."""

    def __init__(
        self,
        model: Sam2Model,
        device: torch.device,
        autocast: Callable[[], contextlib.AbstractContextManager] = contextlib.nullcontext,
        cache: EmbeddingCache | None = None,
    ):
        """`autocast`: the mixed-precision context of every forward pass (a no-op in fp32); `cache`: an
        embedding cache whose features are used for images it holds (training validation)."""
        self.model = model.to(device).eval()
        self.device, self.autocast, self.cache = device, autocast, cache

    @property
    def image_size(self) -> int:
        return self.model.image_size

    @torch.no_grad()
    def encode(self, image: np.ndarray) -> EncodedImage:
        """Features of an RGB uint8 (H, W, 3) image of any size."""
        if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
            raise ValueError(f"expected an RGB uint8 image (H, W, 3), got {image.dtype} {image.shape}")
        pixels = to_chw(resize_image(image, self.image_size))
        if self.cache is not None and self.cache.contains(pixels):
            features = as_image_features([f.to(self.device) for f in stack_features([self.cache.read(pixels)])])
        else:
            with self.autocast():
                features = self.model.encode(pixels[None].to(self.device))
        return EncodedImage(features, int(image.shape[0]), int(image.shape[1]))

    def to_model_space(self, points: torch.Tensor, image: EncodedImage) -> torch.Tensor:
        """Pixel (x, y) of the original image -> pixel (x, y) of the S x S model input (pixel centres kept)."""
        scale = torch.tensor([self.image_size / image.width, self.image_size / image.height])
        return (points.float().cpu() + 0.5) * scale - 0.5

    @torch.no_grad()
    def predict(
        self,
        image: EncodedImage,
        prompts: Prompts,
        mask_input: torch.Tensor | None = None,
        multimask: bool | None = None,
    ) -> Prediction:
        """Masks for N objects, each prompted by its row of `prompts` (original pixels).

        `mask_input` (N, 1, S/4, S/4) is a previous round's `best_logits()`, as SAM2 refines a mask
        click by click. By default a single click gets three candidates (the one truly ambiguous
        prompt) and anything more precise gets one.
        """
        if multimask is None:
            multimask = prompts.num_points == 1
        count = prompts.points.shape[0]
        points = self.to_model_space(prompts.points, image).to(self.device)
        labels = prompts.labels.to(self.device)
        index = torch.zeros(count, dtype=torch.long, device=self.device)
        with self.autocast():
            out = self.model.decode(
                image.features,
                index,
                points,
                labels,
                None if mask_input is None else mask_input.to(self.device),
                multimask=multimask,
            )
        return Prediction(out.low_res_logits.float(), out.iou_pred.float(), (image.height, image.width))


def original_weights(cfg: DictConfig) -> Weights:
    """The un-tuned model: `model.checkpoint` (the official weights, a file, or null for random)."""
    path = resolve_checkpoint(cfg.model, cfg.paths.cache_dir)
    if path is None:
        return Weights(None, "random initialisation")
    return Weights(read_checkpoint(path), str(path))


def chosen_weights(cfg: DictConfig) -> Weights:
    """`checkpoint=`, or the original model with `original=true` or no checkpoint (seed 001's --original)."""
    weights = requested_weights(cfg)
    if weights is None:
        log.info("using the original (un-tuned) SAM2.1 %s: model.checkpoint=%s", cfg.model.name, cfg.model.checkpoint)
        return original_weights(cfg)
    return merged_adapter_weights(cfg, weights)


def merged_adapter_weights(cfg: DictConfig, weights: Weights) -> Weights:
    """An adapter folder applied to its base (`model=` and `model.checkpoint`) as stock weights; others as they are."""
    if weights.checkpoint is None or "adapter" not in weights.checkpoint or "model" in weights.checkpoint:
        return weights
    adapter = weights.checkpoint["adapter"]
    check_adapter_base(adapter, weights.source, cfg.model.name)
    base = original_weights(cfg)
    sam = build_sam2_model(cfg.model.sam2_config, model_image_size(cfg, weights))
    if base.checkpoint is not None:
        apply_sam2_weights(sam, base.checkpoint, base.source, cfg.model.name)
    merged = apply_adapter(sam, adapter, weights.source, cfg.model.name)
    log.info("adapter %s applied to SAM2.1 %s (%s)", weights.source, cfg.model.name, base.source)
    source = f"{weights.source} on {base.source}"
    return Weights({"model": merged, "meta": weights.meta}, source, weights.training_run_id)


def model_image_size(cfg: DictConfig, weights: Weights) -> int:
    """`model.image_size` when set, else the size the weights were fine-tuned at, else SAM2's 1024."""
    size = cfg.model.image_size or weights.image_size or SAM2_IMAGE_SIZE
    if weights.image_size and int(size) != weights.image_size:
        log.warning(
            "model.image_size=%s but %s was fine-tuned at %d px; set model.image_size=null to use its own size",
            size,
            weights.source,
            weights.image_size,
        )
    return int(size)


def build_predictor(
    model_cfg: DictConfig, weights: Weights, image_size: int, device: torch.device, amp_dtype: torch.dtype | None
) -> Sam2Predictor:
    """SAM2 of `model_cfg`'s size at `image_size` with `weights`; a checkpoint of another size is explained."""
    sam = build_sam2_model(model_cfg.sam2_config, image_size)
    if weights.checkpoint is not None:
        apply_sam2_weights(sam, weights.checkpoint, weights.source, model_cfg.name)
    log.info("SAM2.1 %s at %d px from %s on %s", model_cfg.name, image_size, weights.source, device)
    return Sam2Predictor(Sam2Model(sam, list(model_cfg.trainable)), device, partial(autocast, device, amp_dtype))


def load_predictor(cfg: DictConfig, weights: Weights | None = None) -> tuple[Sam2Predictor, Weights]:
    """The predictor an inference config asks for (`checkpoint`, `original`, `model`, `device`, `precision`);
    `weights` when the caller has read them already."""
    weights = merged_adapter_weights(cfg, weights) if weights is not None else chosen_weights(cfg)
    device = resolve_device(cfg.device)
    predictor = build_predictor(
        cfg.model, weights, model_image_size(cfg, weights), device, resolve_precision(cfg.precision, device)
    )
    return predictor, weights
