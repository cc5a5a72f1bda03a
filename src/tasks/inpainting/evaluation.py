"""`python -m src.evaluate checkpoint=RUN dataset=inpaint`: PSNR/SSIM over the hole and the whole image.

`compare=true` evaluates the untrained generator of the same shape beside it; `compare=OTHER`
(a second checkpoint) evaluates that one instead. Comparison pictures go to the run folder.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig
from torch.utils.data import DataLoader

from src.tasks.inpainting.dataset import InpaintDataset, collate_inpaint
from src.tasks.inpainting.inference import load_generator
from src.tasks.inpainting.model import generator_from_meta
from src.tasks.inpainting.task import evaluate_generator
from src.tracking.checkpoints import Weights, read_trained_checkpoint
from src.utils.device import autocast, resolve_device, resolve_precision
from src.utils.pictures import save_png

log = logging.getLogger(__name__)
METRICS = ("hole_psnr", "hole_ssim", "psnr", "ssim")


def evaluate_inpainting(cfg: DictConfig, weights: Weights) -> dict[str, dict[str, float]]:
    device = resolve_device(cfg.device)
    amp = resolve_precision(cfg.precision, device)
    dataset = InpaintDataset(cfg.dataset.root, str(cfg.split), None, train=False, seed=0)
    loader = DataLoader(dataset, batch_size=1, collate_fn=collate_inpaint)
    models: dict[str, Any] = {Path(weights.source).name if Path(weights.source).exists() else weights.source:
                              load_generator(weights, device)}  # fmt: skip
    compare = cfg.get("compare")
    if compare is True:
        torch.manual_seed(int(cfg.get("seed", 0)))
        models["untrained"] = generator_from_meta(weights.meta, weights.source).eval().to(device)
    elif compare:
        second = read_trained_checkpoint(str(compare), cfg.logger.tracking_uri)
        models[f"compare: {second.source}"] = load_generator(second, device)
    results, run_dir = {}, Path(cfg.paths.run_dir)
    for index, (name, generator) in enumerate(models.items()):
        with torch.no_grad():
            result = evaluate_generator(generator, loader, device, lambda: autocast(device, amp), 4)
        results[name] = result.metrics
        if result.image is not None:
            save_png(result.image, run_dir / f"inpainting_{index}.png")
    print(report(results, f"{cfg.dataset.root} split {cfg.split}: {len(dataset)} samples"), flush=True)
    return results


def report(results: dict[str, dict[str, float]], title: str) -> str:
    width = max(len(name) for name in results) + 2
    lines = [title, f"{'model':<{width}}" + "".join(f"{m:>11}" for m in METRICS)]
    for name, metrics in results.items():
        lines.append(f"{name:<{width}}" + "".join(f"{metrics[m]:>11.4f}" for m in METRICS))
    return "\n".join(lines)
