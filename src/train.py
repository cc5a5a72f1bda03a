"""`python -m src.train [group=choice ...] [key=value ...]`: one training run, composed from conf/.

Returns the best monitored validation value, so Hydra sweepers (e.g. Optuna) can optimise it.
"""

from __future__ import annotations

import logging

import torch
from hydra.utils import get_class, instantiate
from omegaconf import DictConfig

from src.cli import command_line_overrides, hydra_entry
from src.config import PROJECT_ROOT, check_combination
from src.sweeps import sweep_job
from src.tracking import cluster_tags, git_state, library_versions
from src.training.trainer import Trainer
from src.utils.device import resolve_device, resolve_precision, set_cpu_threads
from src.utils.distributed import from_main, process_group
from src.utils.seeding import seed_everything


def train(cfg: DictConfig) -> float | None:
    check_combination(cfg)
    seed_everything(int(cfg.trainer.seed))
    settings = cfg.trainer.distributed
    device = resolve_device(cfg.trainer.device)
    set_cpu_threads(cfg.trainer.get("cpu_threads"))
    with process_group(device, settings.backend, settings.timeout_min) as (world, device):
        if not world.is_main:
            logging.getLogger("src").setLevel(logging.WARNING)  # rank 0 reports for all
        amp_dtype = resolve_precision(cfg.trainer.precision, device)
        task = get_class(cfg.task._target_)(cfg, device)
        tracker = instantiate(cfg.logger) if world.is_main else None  # rank 0 alone opens the store
        overrides = command_line_overrides()
        sweep = sweep_job()
        run_name = (
            cfg.run_name or (sweep and sweep.run_name) or ",".join(overrides) or f"{cfg.model.name}@{cfg.dataset.name}"
        )
        tags = {
            "overrides": " ".join(overrides) or "(none)",
            "task": cfg.task.name,
            "model": cfg.model.name,
            "dataset": cfg.dataset.name,
            "init": str(cfg.trainer.init_from or cfg.model.checkpoint or "random"),
            "device": str(device),
            "precision": str(amp_dtype or torch.float32).replace("torch.", ""),
            "processes": str(world.world_size),
            "run_dir": str(cfg.paths.run_dir),
            "mlflow.source.name": "src.train",
            **(sweep.tags if sweep else {}),
            **cluster_tags(),
            **git_state(PROJECT_ROOT),
            **library_versions(),
        }
        # every process must write to, and resume from, the same folder (torchrun: one timestamp)
        run_dir = from_main(str(cfg.paths.run_dir))
        trainer = Trainer(cfg, task, tracker, run_dir, device, amp_dtype, world)
        result = trainer.fit(run_name, tags)
    return result[cfg.trainer.early_stopping.monitor]


@hydra_entry("train")
def main(cfg: DictConfig) -> float | None:
    return train(cfg)


if __name__ == "__main__":
    main()
