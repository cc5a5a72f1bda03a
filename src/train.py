"""`python -m src.train [group=choice ...] [key=value ...]`: one training run, composed from conf/.

Returns the best monitored validation value, so Hydra sweepers (e.g. Optuna) can optimise it.
"""

from __future__ import annotations

import torch
from hydra.utils import get_class, instantiate
from omegaconf import DictConfig

from src.cli import command_line_overrides, hydra_entry
from src.config import PROJECT_ROOT, check_combination
from src.tracking import git_state, library_versions
from src.training.trainer import Trainer
from src.utils.device import resolve_device, resolve_precision
from src.utils.seeding import seed_everything


def train(cfg: DictConfig) -> float | None:
    check_combination(cfg)
    seed_everything(int(cfg.trainer.seed))
    device = resolve_device(cfg.trainer.device)
    amp_dtype = resolve_precision(cfg.trainer.precision, device)
    task = get_class(cfg.task._target_)(cfg, device)
    tracker = instantiate(cfg.logger)
    overrides = command_line_overrides()
    run_name = cfg.run_name or ",".join(overrides) or f"{cfg.model.name}@{cfg.dataset.name}"
    tags = {
        "overrides": " ".join(overrides) or "(none)",
        "task": cfg.task.name,
        "model": cfg.model.name,
        "dataset": cfg.dataset.name,
        "init": str(cfg.trainer.init_from or cfg.model.checkpoint or "random"),
        "device": str(device),
        "precision": str(amp_dtype or torch.float32).replace("torch.", ""),
        "run_dir": str(cfg.paths.run_dir),
        "mlflow.source.name": "src.train",
        **git_state(PROJECT_ROOT),
        **library_versions(),
    }
    trainer = Trainer(cfg, task, tracker, cfg.paths.run_dir, device, amp_dtype)
    result = trainer.fit(run_name, tags)
    return result[cfg.trainer.early_stopping.monitor]


@hydra_entry("train")
def main(cfg: DictConfig) -> float | None:
    return train(cfg)


if __name__ == "__main__":
    main()
