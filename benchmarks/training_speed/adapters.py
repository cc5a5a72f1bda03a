"""`python -m src.bench bench.compare=adapters`: what adapting the image encoder costs, beside the alternatives.

Three runs of `src.train`'s trainer on the same data, from the same weights, each for the same
wall-clock budget (`trainer.max_time`: steps and validation): decoder-only tuning with the
embedding cache (`adapter=none`; the cache is filled before its run, as by an earlier run on the
same data, and that one-off time is its own column), LoRA on the Hiera trunk (`adapter=lora`) and
full fine-tuning (`model.trainable` with `image_encoder`). The table gives each one's trainable
parameters, median training-step time, peak memory and validation mIoU after the budget.
"""

from __future__ import annotations

import copy
import gc
import logging
import math
import statistics
import time
from pathlib import Path

import torch
from omegaconf import DictConfig, OmegaConf

from benchmarks.training_speed.run import trainer_row
from src.config import check_combination
from src.errors import ConfigError
from src.tasks.segmentation.task import SegmentationTask
from src.utils.atomic import write_text_atomic
from src.utils.device import autocast, resolve_device, resolve_precision, set_cpu_threads
from src.utils.seeding import seed_everything

log = logging.getLogger(__name__)

FULL = ["image_encoder", "sam_mask_decoder", "sam_prompt_encoder"]
# (name, overrides of the composed config)
VARIANTS = (
    ("adapter=none, decoder only, cached", {"adapter": {"name": "none"}}),
    ("adapter=lora", {}),
    ("full fine-tuning", {"adapter": {"name": "none"}, "model": {"trainable": FULL}}),
)
HEADERS = (
    "variant",
    "trainable params",
    "fraction",
    "s/step (median)",
    "peak {memory} MiB",
    "val mIoU",
    "steps",
    "cache fill s (once, before)",
)


def variant_cfg(cfg: DictConfig, overrides: dict, run_dir: Path) -> DictConfig:
    """`cfg` (adapter=lora) with a variant's overrides, the time budget and a cache folder of its own."""
    out = copy.deepcopy(cfg)
    OmegaConf.update(out, "trainer.max_time", float(cfg.bench.budget_s))
    OmegaConf.update(out, "data.cache_dir", str(run_dir / "embeddings"))
    return OmegaConf.merge(out, overrides)


def fill_cache(cfg: DictConfig, device: torch.device, amp_dtype: torch.dtype | None) -> float:
    """Encode every view into the variant's embedding cache before its run, as an earlier run on the same data
    would have; return the seconds it took (a one-off cost, not part of the budget)."""
    seed_everything(int(cfg.trainer.seed))  # as `trainer_row`: the same starting weights, hence the same cache key
    task = SegmentationTask(cfg, device)
    task.load_initial_weights()
    task.module.to(device)
    task.datasets()
    started = time.perf_counter()
    task.prepare(device, lambda: autocast(device, amp_dtype), fill_training_views=True)
    return time.perf_counter() - started


def bench_adapters(cfg: DictConfig) -> str:
    """Run the three variants; print the table and write it to the run folder as adapters.md."""
    if cfg.adapter.name != "lora":
        raise ConfigError(
            f"bench.compare=adapters with adapter={cfg.adapter.name}: the LoRA row takes its settings from "
            "adapter=lora; add adapter=lora (and any adapter.rank=..., adapter.target_modules=... to measure)"
        )
    check_combination(cfg)
    device = resolve_device(cfg.trainer.device)
    set_cpu_threads(cfg.trainer.get("cpu_threads"), "trainer.cpu_threads")
    amp_dtype = resolve_precision(cfg.trainer.precision, device)
    run_dir = Path(cfg.paths.run_dir)
    memory = "CUDA allocated" if device.type == "cuda" else "RSS"
    lines = ["| " + " | ".join(h.format(memory=memory) for h in HEADERS) + " |", "|" + "---|" * len(HEADERS)]
    for name, overrides in VARIANTS:
        log.info("%s for %g s", name, float(cfg.bench.budget_s))
        gc.collect()
        folder = run_dir / name.split(",")[0].replace(" ", "_").replace("=", "_")
        variant = variant_cfg(cfg, overrides, folder)
        fill = fill_cache(variant, device, amp_dtype) if SegmentationTask.caches_embeddings(variant) else math.nan
        row, trainer = trainer_row(variant, name, folder, device, amp_dtype)
        trainable = sum(p.numel() for p in trainer.params)
        total = sum(p.numel() for p in trainer.module.parameters())
        ends = trainer.timing.step_ends
        step_s = statistics.median(b - a for a, b in zip([0.0, *ends[:-1]], ends, strict=True)) if ends else math.nan
        cells = [name, f"{trainable:,}", f"{trainable / total:.2%}", f"{step_s:.2f}", f"{row.peak_mib:.0f}"]
        fill_cell = "n/a" if math.isnan(fill) else f"{fill:.0f}"
        lines.append("| " + " | ".join([*cells, f"{row.miou:.4f}", str(row.steps), fill_cell]) + " |")
        del trainer
    result = "\n".join(lines)
    precision = str(amp_dtype or torch.float32).replace("torch.", "")
    about = (
        f"model={cfg.model.name} image_size={cfg.model.image_size} dataset={cfg.dataset.name} device={device} "
        f"precision={precision} batch {cfg.trainer.batch_size} gradient_checkpointing="
        f"{cfg.model.gradient_checkpointing} lora rank {cfg.adapter.rank} on {cfg.adapter.target_modules}; "
        f"budget {float(cfg.bench.budget_s):g} s per variant"
    )
    write_text_atomic(f"# Adapters\n\n{about}\n\n{result}\n", run_dir / "adapters.md")
    print(f"\n{about}\n\n{result}\n\nwritten to {run_dir / 'adapters.md'}")
    return result
