"""`python -m src.evaluate_landmarks checkpoint=RUN dataset=animal split=test`: NME on a split.

Crops come from the true points' box with the margin the model was trained with (the top-down
protocol of seed 002, where a face detector supplies the box). NME is measured in original-image
pixels, overall and per landmark group, with the failure rate. The report (metrics.json,
per_image.csv, visualizations/) goes to the run folder and to its own MLflow run, tagged with the
training run that made the weights.
"""

from __future__ import annotations

import csv
import json
import logging
from pathlib import Path

import numpy as np
import torch
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf
from torch.utils.data import DataLoader
from tqdm import tqdm

from src.cli import command_line_overrides, hydra_entry
from src.config import PROJECT_ROOT
from src.data.landmark_dataset import LandmarkDataset, collate_landmarks
from src.errors import ConfigError
from src.landmarks.drawing import side_by_side
from src.landmarks.evaluation import evaluate_batch
from src.landmarks.nme import NmeMeter
from src.predict_landmarks import load_landmark_predictor
from src.tasks.base import to_device
from src.tracking import flatten, git_state, library_versions
from src.utils.atomic import atomic_path, write_text_atomic
from src.utils.device import resolve_device
from src.visualize import grid, save_png

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


def evaluate_landmarks(cfg: DictConfig) -> dict[str, float]:
    if not cfg.checkpoint:
        raise ConfigError("checkpoint= is required: a training run folder, a .pt file, an MLflow run id or an export")
    device = resolve_device(cfg.device)
    predictor = load_landmark_predictor(str(cfg.checkpoint), cfg.logger.tracking_uri).to(device)
    if cfg.dataset.get("generate"):
        instantiate(cfg.dataset.generate, root=cfg.dataset.root)
    dataset = LandmarkDataset(
        cfg.dataset.root, cfg.split, predictor.scheme, predictor.model.image_size, predictor.codec, predictor.margin
    )
    loader = DataLoader(dataset, int(cfg.batch_size), collate_fn=collate_landmarks, num_workers=int(cfg.num_workers))
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
                if len(rows) < int(cfg.num_pictures):
                    image, true = dataset.load(index)
                    title = f"prediction, NME {out.nme[row]:.3f}"
                    rows.append(
                        side_by_side(image, out.image_points[row], true, predictor.scheme, title, int(cfg.picture_side))
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
    _log_to_mlflow(cfg, metrics, files, pictures)
    log.info("report in %s", run_dir)
    return metrics


def _log_to_mlflow(cfg: DictConfig, metrics: dict[str, float], files: list[Path], pictures: list[Path]) -> None:
    overrides = command_line_overrides()
    tracker = instantiate(cfg.logger)
    tags = {
        "job": "evaluate_landmarks",
        "task": "landmarks",
        "dataset": cfg.dataset.name,
        "split": cfg.split,
        "checkpoint": str(cfg.checkpoint),
        "overrides": " ".join(overrides) or "(none)",
        "run_dir": str(cfg.paths.run_dir),
        "mlflow.source.name": "src.evaluate_landmarks",
        **git_state(PROJECT_ROOT),
        **library_versions(),
    }
    tracker.start(cfg.run_name or "evaluate landmarks " + (",".join(overrides) or cfg.dataset.name), tags)
    status = "FAILED"
    try:
        tracker.log_params(flatten(OmegaConf.to_container(cfg, resolve=True)))
        tracker.log_metrics({f"test/{k}": v for k, v in metrics.items() if np.isfinite(v)}, 0)
        for path in files:
            tracker.log_artifact(path)
        for path in pictures:
            tracker.log_artifact(path, "visualizations")
        status = "FINISHED"
    finally:
        tracker.finish(status)


@hydra_entry("evaluate_landmarks")
def main(cfg: DictConfig) -> dict[str, float]:
    return evaluate_landmarks(cfg)


if __name__ == "__main__":
    main()
