"""Promptable segmentation: fine-tune SAM2 on masks with point, box and correction-click prompts."""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from hydra.utils import instantiate
from omegaconf import DictConfig
from torch import nn
from torch.utils.data import Dataset

from src.engine.task import Evaluation, StepOutput
from src.models.sam2.adapters import lora_config
from src.models.sam2.build import build_sam2_model, checked_sam2_state
from src.models.sam2.embedding_cache import EmbeddingCache, FirstUse, as_image_features, cache_enabled, stack_features
from src.models.sam2.model import ImageFeatures, Sam2Model
from src.models.sam2.weights import resolve_checkpoint
from src.tasks.segmentation.dataset import SegmentationDataset, collate_segmentation
from src.tasks.segmentation.evaluator import Evaluator
from src.tasks.segmentation.losses import MaskLoss
from src.tasks.segmentation.predictor import Sam2Predictor
from src.tasks.segmentation.prompts import ObjectGenerators, PromptSampler
from src.utils.atomic import file_lock
from src.utils.checkpoint_io import read_checkpoint
from src.utils.distributed import sum_over_ranks
from src.utils.pictures import grid

log = logging.getLogger(__name__)

ADAPTER_FOLDER = "adapter"  # in the run folder, beside checkpoints/


class PromptableSegmenter(nn.Module):
    """One training forward pass: an initial prompt, then correction clicks, a loss at every round.

    As in SAM2's trainer, each correction click is drawn from the error of the previous round's
    best mask, whose logits are also fed back as the mask prompt. The loss is averaged over
    rounds, so its scale does not change when `prompts.correction_clicks` is swept.
    """

    def __init__(self, model: Sam2Model, loss: MaskLoss, sampler: PromptSampler):
        super().__init__()
        self.model, self.loss, self.sampler = model, loss, sampler

    def forward(
        self,
        images: torch.Tensor,
        masks: torch.Tensor,
        image_index: torch.Tensor,
        prompt_seeds: list[int],
        generator: torch.Generator,
        features: ImageFeatures | None = None,
    ) -> tuple[dict[str, torch.Tensor], int]:
        """`generator` picks the prompt kind for the whole step; each object's clicks and box jitter come
        from its own stream (`prompt_seeds`), so they do not depend on how a batch is split.

        `features` are the images' cached encoder outputs; without them the images are encoded here.
        All objects of all images, each with its prompt, go through the decoder in one call per round.
        """
        if features is None:
            features = self.model.encode(images)
        size = (self.model.image_size, self.model.image_size)
        streams = ObjectGenerators(prompt_seeds)
        prompts = self.sampler.initial(masks, self.sampler.choose_mode(generator), streams)
        rounds = 1 + self.sampler.correction_clicks
        rows = torch.arange(masks.shape[0], device=masks.device)
        totals: dict[str, torch.Tensor] = {}
        mask_input = None
        for round_index in range(rounds):
            out = self.model.decode(
                features, image_index, prompts.points, prompts.labels, mask_input, self.sampler.multimask(prompts)
            )
            logits = self.model.upscale(out.low_res_logits, size)
            for name, value in self.loss(logits, out.iou_pred, masks).items():
                totals[name] = totals.get(name, 0) + value / rounds
            if round_index + 1 < rounds:
                best = out.iou_pred.argmax(dim=1)
                prompts = self.sampler.correct(masks, logits[rows, best].detach() > 0, prompts, streams)
                mask_input = out.low_res_logits[rows, best].unsqueeze(1).detach()
        return totals, masks.shape[0] * rounds


class SegmentationTask:
    """SAM2 fine-tuning on a dataset in the shared mask layout; validated by mIoU and Dice."""

    def __init__(self, cfg: DictConfig, device: torch.device):
        self.cfg = cfg
        self.tcfg = cfg.task
        sam = build_sam2_model(cfg.model.sam2_config, int(cfg.model.image_size))
        self.model = Sam2Model(
            sam,
            list(cfg.model.trainable),
            bool(cfg.model.get("gradient_checkpointing", False)),
            adapter=lora_config(cfg.adapter, cfg.model.name) if "adapter" in cfg else None,
            model_name=cfg.model.name,
        )
        self.use_cache = self.caches_embeddings(cfg)
        self.first_use: FirstUse | None = None  # set by `prepare` when the cache is on
        if self.model.adapter is not None:
            log.info("adapter=%s: embedding cache off (the adapted encoder changes every step)", cfg.adapter.name)
        self.loss = instantiate(cfg.loss)
        self.sampler = PromptSampler(**cfg.prompts)
        self.module = PromptableSegmenter(self.model, self.loss, self.sampler)
        self.collate = collate_segmentation

    @staticmethod
    def caches_embeddings(cfg: DictConfig) -> bool:
        """Whether `data.cache_embeddings` is on for this config (auto: with a frozen image encoder)."""
        mode = cfg.get("data", {}).get("cache_embeddings", False)
        adapted = cfg.get("adapter", {}).get("name", "none") != "none"
        return cache_enabled(mode, "image_encoder" in cfg.model.trainable or adapted)

    # weights ---------------------------------------------------------------
    def trainable_parameters(self) -> list[nn.Parameter]:
        return self.model.trainable_parameters()

    def load_initial_weights(self) -> None:
        path = resolve_checkpoint(self.cfg.model, self.cfg.paths.cache_dir)
        if path is not None:
            self.load_weights(read_checkpoint(path), str(path))

    def load_weights(self, checkpoint: dict[str, Any], source: str) -> None:
        """Stock SAM2 weights, or one of our checkpoints; with an adapter they are its base, and a checkpoint
        of an adapter run restores its base and adapter exactly (resume)."""
        state = checked_sam2_state(self.model.stock_state_dict(), checkpoint, source, self.cfg.model.name)
        self.model.load_stock_state_dict(state, checkpoint.get("adapter"), source)

    def exported_module(self) -> nn.Module:
        if self.model.adapter is None:
            return self.model.sam
        # the merged weights are stock SAM2's: a plain SAM2 of this size, without peft's layers
        return build_sam2_model(self.cfg.model.sam2_config, self.model.image_size)

    def export_weights(self) -> dict[str, Any]:
        meta = {
            "task": "segmentation",
            "model": self.cfg.model.name,
            "sam2_config": self.cfg.model.sam2_config,
            "image_size": self.model.image_size,
        }
        if self.model.adapter is not None:
            meta["adapter"] = str(self.cfg.adapter.name)
        return {**self.model.state_for_checkpoint(), "meta": meta}

    def after_save(self, run_dir: Path, weights: dict[str, Any], is_best: bool) -> dict[str, float]:
        """With an adapter, new best weights also go to `run_dir/adapter/` (peft's format, with the trained
        decoder parts); its size on disk is logged, in all and of the adapter's own tensors."""
        if self.model.adapter is None or not is_best:
            return {}
        prefixes = tuple(f"{part}." for part in self.model.trainable)
        parts = {k: v for k, v in weights["model"].items() if k.startswith(prefixes)}
        sizes = self.model.adapter.save(run_dir / ADAPTER_FOLDER, weights["meta"], parts)
        return {f"adapter/{name}_mib": size / 2**20 for name, size in sizes.items()}

    # data ------------------------------------------------------------------
    def datasets(self) -> tuple[Dataset, Dataset]:
        dataset = self.cfg.dataset
        if dataset.get("generate"):
            instantiate(dataset.generate, root=dataset.root)
        common = {
            "root": dataset.root,
            "image_size": self.model.image_size,
            "mask_type": dataset.mask_type,
            "max_objects": int(self.tcfg.max_objects_per_image),
            "min_object_area": int(self.tcfg.min_object_area),
            "seed": int(self.cfg.trainer.seed),
        }
        augment = instantiate(self.cfg.augmentation)
        augmented = augment.geometric or augment.photometric
        views = int(self.cfg.data.cache_views) if self.use_cache and augmented else 1
        if self.use_cache and augmented and views == 1:
            log.warning("data.cache_views=1: training sees each image as is, without augmentation")
        train = SegmentationDataset(split=dataset.train_split, augment=augment, cache_views=views, **common)
        val = SegmentationDataset(split=dataset.val_split, **common)
        for split in (train, val):
            split.skip_empty_masks()
        self.splits = (train, val)
        return train, val

    def prepare(
        self,
        device: torch.device,
        autocast: Callable[[], contextlib.AbstractContextManager],
        fill_training_views: bool = False,
    ) -> None:
        """With a frozen encoder, encode the validation views not cached yet; training views are encoded on
        first use (`FirstUse`), or here too with `fill_training_views` (as an earlier run would have).

        Runs once the starting weights are loaded, since the cache is keyed by them.
        """
        if not self.use_cache:
            return
        with autocast():  # the precision the encoder computes in is part of the cache's key
            lowered = torch.is_autocast_enabled(device.type)
            precision = str(torch.get_autocast_dtype(device.type)).removeprefix("torch.") if lowered else "float32"
        cache = EmbeddingCache.for_model(
            self.cfg.data.cache_dir, self.model, self.cfg.model.sam2_config, str(self.cfg.data.cache_dtype), precision
        )

        def encode(images: torch.Tensor) -> ImageFeatures:
            with torch.no_grad(), autocast():
                return self.model.encode(images.to(device))

        batch_size = int(self.cfg.data.cache_fill_batch_size)
        train, val = self.splits
        # jobs of a sweep starting together: one fills, the others wait and then find the views cached
        with file_lock(cache.lock):
            for split in (val, train) if fill_training_views else (val,):
                keys = split.cache_keys
                views = (split.cached_view_pixels(key) for key in keys)
                started = time.perf_counter()
                encoded = cache.fill(views, len(keys), encode, batch_size, f"caching {split.split} embeddings")
                seconds = time.perf_counter() - started
                log.info(
                    "embedding cache %s: %d of %d %s views encoded now, in %.1f s (%.2f images/s, up to %d per "
                    "encoder call)",
                    cache.directory,
                    encoded,
                    len(keys),
                    split.split,
                    seconds,
                    encoded / max(seconds, 1e-9),
                    batch_size,
                )
        if not fill_training_views:
            log.info(
                "embedding cache: the %d %s views (%d images x data.cache_views=%d) are encoded on first use, "
                "at most %d per encoder call",
                len(train.cache_keys),
                train.split,
                len(train),
                train.cache_views,
                batch_size,
            )
        train.features = val.features = cache
        self.first_use = FirstUse(cache, encode, batch_size)

    def _log_first_use(self) -> None:
        """What encoding training views on first use has cost so far (at each validation)."""
        first_use = self.first_use
        if first_use is not None:
            log.info(
                "embedding cache: %d of %d training views encoded on first use so far, in %.1f s (%.2f images/s)",
                first_use.encoded,
                len(self.splits[0].cache_keys),
                first_use.seconds,
                first_use.encoded / max(first_use.seconds, 1e-9),
            )

    # steps -----------------------------------------------------------------
    def training_step(self, module: nn.Module, batch: dict[str, Any], generator: torch.Generator) -> StepOutput | None:
        if batch["masks"].shape[0] == 0:
            return None
        masks = batch["masks"]
        features = None
        if self.first_use is not None:  # the views the loader found no cached features for are encoded now
            parts = self.first_use.complete(batch["features"], batch["images"])
            features = as_image_features([level.to(masks.device) for level in stack_features(parts)])
        losses, prompts = module(
            batch["images"], masks, batch["image_index"], batch["prompt_seeds"], generator, features=features
        )
        counts = {"images": int(batch["images"].shape[0]), "prompts": prompts}
        return StepOutput(losses, counts, loss_weight=float(masks.shape[0]))  # the loss is a mean over objects

    def evaluate(
        self,
        module: nn.Module,
        loader: Any,
        device: torch.device,
        autocast: Callable[[], contextlib.AbstractContextManager],
    ) -> Evaluation:
        """`src.evaluate`'s protocol in `task.validation.prompt` mode: mIoU and Dice at each image's
        original resolution on the same seeded prompts, so a sweep optimises the number evaluation reports.

        The split's images are shared out over data-parallel processes and the sums combined; with the
        embedding cache on, the encoder's features come from it.
        """
        self._log_first_use()
        val = self.splits[1]
        evaluation = self.cfg.evaluation
        protocols = instantiate(evaluation.prompts, modes=[self.tcfg.validation.prompt])
        predictor = Sam2Predictor(self.model, device, autocast, val.features)
        evaluator = Evaluator(
            protocols,
            {"validation": predictor},
            [float(t) for t in evaluation.iou_thresholds],
            int(evaluation.min_object_area),
            self.tcfg.validation.prompt,
            int(self.tcfg.validation.num_sample_images),
            int(evaluation.picture_side),
        )
        rank, world = (dist.get_rank(), dist.get_world_size()) if dist.is_initialized() else (0, 1)
        result = evaluator.run(val, range(rank, len(val), world), require_objects=False)
        ious, dices = [r.iou for r in result.records], [r.dice for r in result.records]
        iou_sum, dice_sum, count = sum_over_ranks([sum(ious), sum(dices), len(ious)])
        nan = float("nan")
        metrics = {"miou": iou_sum / count if count else nan, "dice": dice_sum / count if count else nan}
        metrics["objects"] = count
        pictures = list(result.pictures.values())
        return Evaluation(metrics=metrics, image=grid([[p] for p in pictures]) if pictures else None)
