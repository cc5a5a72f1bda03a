"""Landmark evaluation: one step shared by training validation and `python -m src.evaluate`, and the report."""

from __future__ import annotations

import contextlib
import csv
import json
import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from hydra.utils import instantiate
from omegaconf import DictConfig
from torch.utils.data import DataLoader
from tqdm import tqdm

from src.engine.task import to_device
from src.tasks.landmarks.dataset import LandmarkDataset, collate_landmarks
from src.tasks.landmarks.drawing import side_by_side
from src.tasks.landmarks.geometry import crop_to_image
from src.tasks.landmarks.heatmaps import HeatmapCodec
from src.tasks.landmarks.model import LandmarkModel
from src.tasks.landmarks.nme import NmeMeter
from src.tasks.landmarks.predictor import LandmarkPredictor
from src.tracking.checkpoints import Weights
from src.tracking.evaluations import log_evaluation_run
from src.utils.atomic import atomic_path, write_text_atomic
from src.utils.device import resolve_device
from src.utils.pictures import grid, save_png


@dataclass
class BatchPrediction:
    heatmaps: torch.Tensor  # (B, K, h, w)
    crop_points: np.ndarray  # (B, K, 2) in the model input
    image_points: np.ndarray  # (B, K, 2) in the original images
    nme: np.ndarray  # (B,) each image's NME


def evaluate_batch(
    model: LandmarkModel,
    codec: HeatmapCodec,
    batch: dict[str, Any],
    meter: NmeMeter,
    autocast: Callable[[], contextlib.AbstractContextManager] = contextlib.nullcontext,
) -> BatchPrediction:
    """Predict a batch of crops, map the points back to their images and add them to `meter`."""
    with autocast():
        heatmaps = model(batch["images"])
    points, _ = codec.decode(heatmaps)
    original = crop_to_image(points, batch["inverse"].float()).cpu().numpy()
    nme = meter.update(original, batch["true_points"].cpu().numpy())
    return BatchPrediction(heatmaps, points.cpu().numpy(), original, nme)


log = logging.getLogger(__name__)


def nme_table(metrics: dict[str, float], normalize: str, threshold: float) -> str:
    """The printed report: NME per group and overall (in %), and the failure rate."""
    rows = [(k.removeprefix("nme_"), v) for k, v in metrics.items() if k.startswith("nme_")]
    rows += [("overall", metrics["nme"])]
    width = max(len(name) for name, _ in rows)
    lines = [f"NME ({normalize}) on {int(metrics['images'])} images", f"{'group':<{width}}  NME %"]
    lines += [f"{name:<{width}}  {100 * value:6.2f}" for name, value in rows]
    lines.append(f"failure rate (NME > {threshold:g}): {100 * metrics['failure_rate']:.1f}%")
    return "\n".join(lines)


def evaluate_landmarks(cfg: DictConfig, weights: Weights) -> dict[str, float]:
    """NME of `weights` on `cfg.split`, per group and overall, with pictures; reported to the run folder and MLflow.

    Crops come from the true points' box with the margin the model was trained with (the top-down
    protocol of seed 002, where a face detector supplies the box); NME is measured in original pixels.
    """
    device = resolve_device(cfg.device)
    predictor = LandmarkPredictor.from_checkpoint(weights.checkpoint, weights.source).to(device)
    if cfg.dataset.get("generate"):
        instantiate(cfg.dataset.generate, root=cfg.dataset.root)
    dataset = LandmarkDataset(
        cfg.dataset.root, cfg.split, predictor.scheme, predictor.model.image_size, predictor.codec, predictor.margin
    )
    loader = DataLoader(
        dataset,
        int(cfg.evaluation.batch_size),
        collate_fn=collate_landmarks,
        num_workers=int(cfg.evaluation.num_workers),
    )
    normalize, threshold = cfg.task.nme.normalize, float(cfg.task.nme.failure_threshold)
    meter = NmeMeter(predictor.scheme, normalize, threshold)
    run_dir = Path(cfg.paths.run_dir)
    per_image, rows = [], []
    with torch.no_grad():
        for batch in tqdm(loader, desc=f"NME {cfg.dataset.name}/{cfg.split}", dynamic_ncols=True):
            batch = to_device(batch, device)
            out = evaluate_batch(predictor.model, predictor.codec, batch, meter)
            for row, index in enumerate(batch["index"].tolist()):
                entry = dataset.entries[index]
                per_image.append((entry.annotation.image, float(out.nme[row])))
                if len(rows) < int(cfg.evaluation.num_pictures):
                    image, true = dataset.load(index)
                    title = f"prediction, NME {out.nme[row]:.3f}"
                    rows.append(
                        side_by_side(
                            image,
                            out.image_points[row],
                            true,
                            predictor.scheme,
                            title,
                            int(cfg.evaluation.picture_side),
                        )
                    )
    metrics = meter.compute()
    table = nme_table(metrics, normalize, threshold)
    print(f"\n{table}\n")

    report = {
        "checkpoint": str(cfg.checkpoint),
        "dataset": cfg.dataset.name,
        "split": cfg.split,
        "normalize": normalize,
        "failure_threshold": threshold,
        "metrics": metrics,
    }
    files = [write_text_atomic(json.dumps(report, indent=1) + "\n", run_dir / "metrics.json")]
    files.append(write_text_atomic(table + "\n", run_dir / "nme_table.txt"))
    with atomic_path(run_dir / "per_image.csv") as tmp, open(tmp, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["image", "nme"])
        writer.writerows(sorted(per_image, key=lambda item: -item[1]))
    files.append(run_dir / "per_image.csv")
    pictures = [
        save_png(grid(rows[i : i + 4]), run_dir / "visualizations" / f"samples_{i // 4:03d}.png")
        for i in range(0, len(rows), 4)
    ]
    log_evaluation_run(
        cfg,
        "evaluate landmarks",
        {"task": "landmarks", "checkpoint": str(cfg.checkpoint)},
        {(f"test/{k}", 0): v for k, v in metrics.items() if np.isfinite(v)},
        [(path, None) for path in files] + [(path, "visualizations") for path in pictures],
        weights.training_run_id,
    )
    log.info("report in %s", run_dir)
    return metrics
