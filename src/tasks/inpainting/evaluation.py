"""`python -m src.evaluate checkpoint=RUN dataset=inpaint`: PSNR/SSIM over the hole and the whole image.

LPIPS over the hole joins them when `lpips_weights=` names a torchvision AlexNet state dict.
`compare=true` evaluates the untrained generator of the same shape beside it; `compare=OTHER`
(a second checkpoint) evaluates that one instead. The table and the pictures (input with its hole
| output | truth, per model) go to the run folder and to the evaluation's own MLflow run.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import torch
from omegaconf import DictConfig
from torch import nn
from torch.utils.data import DataLoader

from src.tasks.inpainting.dataset import InpaintDataset, collate_inpaint
from src.tasks.inpainting.inference import load_generator
from src.tasks.inpainting.metrics import hole_lpips_network
from src.tasks.inpainting.model import generator_from_meta
from src.tasks.inpainting.task import evaluate_generator
from src.tracking.checkpoints import Weights, read_trained_checkpoint
from src.tracking.evaluations import log_evaluation_run
from src.utils.atomic import write_text_atomic
from src.utils.device import autocast, resolve_device, resolve_precision
from src.utils.pictures import save_png

log = logging.getLogger(__name__)
METRICS = ("hole_psnr", "hole_ssim", "hole_lpips", "psnr", "ssim")
CHECKPOINT = "checkpoint"  # the role of the evaluated weights; the other row is "untrained" or "compare"


def evaluate_inpainting(cfg: DictConfig, weights: Weights) -> dict[str, dict[str, float]]:
    """Table row name -> metrics, for the checkpoint and (with `compare=`) the model it is compared with."""
    device = resolve_device(cfg.device)
    amp = resolve_precision(cfg.precision, device)
    dataset = InpaintDataset(cfg.dataset.root, str(cfg.split), None, train=False, seed=0)
    loader = DataLoader(dataset, batch_size=1, collate_fn=collate_inpaint)
    lpips = hole_lpips_network(cfg.get("lpips_weights"), "lpips_weights")
    models = {CHECKPOINT: (_shown_name(weights.source), load_generator(weights, device))}
    models.update(_compared(cfg, weights, device))
    results, roles, files, run_dir = {}, {}, [], Path(cfg.paths.run_dir)
    for role, (name, generator) in models.items():
        with torch.no_grad():
            result = evaluate_generator(
                generator, loader, device, lambda: autocast(device, amp), int(cfg.evaluation.num_pictures), lpips
            )
        results[name], roles[role] = result.metrics, result.metrics
        if result.image is not None:
            files.append((save_png(result.image, run_dir / "pictures" / f"inpainting_{role}.png"), "pictures"))
    table = report(results, f"{cfg.dataset.root} split {cfg.split}: {len(dataset)} samples")
    print(table, flush=True)
    files += [
        (write_text_atomic(table + "\n", run_dir / "summary.md"), None),
        (write_text_atomic(json.dumps(results, indent=1) + "\n", run_dir / "metrics.json"), None),
    ]
    tags = {"task": "inpainting", "checkpoint": weights.source}
    run_id = log_evaluation_run(cfg, "evaluate inpainting", tags, mlflow_metrics(roles), files, weights.training_run_id)
    log.info("report in %s and MLflow run %s", run_dir, run_id)
    return results


def _shown_name(source: str) -> str:
    return Path(source).name if Path(source).exists() else source


def _compared(cfg: DictConfig, weights: Weights, device: torch.device) -> dict[str, tuple[str, nn.Module]]:
    """`compare=true`: the untrained generator of the checkpoint's shape; `compare=OTHER`: that checkpoint."""
    compare = cfg.get("compare")
    if compare is True:
        torch.manual_seed(int(cfg.get("seed", 0)))
        return {"untrained": ("untrained", generator_from_meta(weights.meta, weights.source).eval().to(device))}
    if compare:
        second = read_trained_checkpoint(str(compare), cfg.logger.tracking_uri)
        return {"compare": (f"compare: {second.source}", load_generator(second, device))}
    return {}


def mlflow_metrics(roles: dict[str, dict[str, float]]) -> dict[tuple[str, int], float]:
    """`<role>/<metric>` (checkpoint, untrained or compare) and, beside another model, `change/<metric>`."""
    metrics = {(f"{role}/{key}", 0): value for role, values in roles.items() for key, value in values.items()}
    for other in set(roles) - {CHECKPOINT}:
        for key, value in roles[CHECKPOINT].items():
            metrics[(f"change/{key}", 0)] = value - roles[other][key]
    return metrics


def report(results: dict[str, dict[str, float]], title: str) -> str:
    """The printed table: one row per model, a column per metric every row has."""
    columns = [m for m in METRICS if all(m in metrics for metrics in results.values())]
    width = max(len(name) for name in results) + 2
    lines = [title, f"{'model':<{width}}" + "".join(f"{m:>11}" for m in columns)]
    for name, metrics in results.items():
        lines.append(f"{name:<{width}}" + "".join(f"{metrics[m]:>11.4f}" for m in columns))
    return "\n".join(lines)
