"""`python -m src.train [group=choice ...] [key=value ...]`: one training run, composed from conf/.

Returns the best monitored validation value, so Hydra sweepers (e.g. Optuna) can optimise it.
"""

from __future__ import annotations

import logging

import torch
from hydra.utils import get_class, instantiate
from omegaconf import DictConfig

from src.cli import hydra_entry
from src.config import check_combination
from src.engine.trainer import Trainer
from src.tracking.sweeps import sweep_job
from src.tracking.tags import run_name, run_tags
from src.utils.device import resolve_device, resolve_precision, set_cpu_threads
from src.utils.distributed import from_main, process_group
from src.utils.seeding import seed_everything


def train(cfg: DictConfig) -> float | None:
    check_combination(cfg)
    seed_everything(int(cfg.trainer.seed))
    settings = cfg.trainer.distributed
    device = resolve_device(cfg.trainer.device)
    set_cpu_threads(cfg.trainer.get("cpu_threads"), "trainer.cpu_threads")
    with process_group(device, settings.backend, settings.timeout_min) as (world, device):
        if not world.is_main:
            logging.getLogger("src").setLevel(logging.WARNING)  # rank 0 reports for all
        amp_dtype = resolve_precision(cfg.trainer.precision, device)
        task = get_class(cfg.task._target_)(cfg, device)
        tracker = instantiate(cfg.logger) if world.is_main else None  # rank 0 alone opens the store
        sweep = sweep_job()
        name = (sweep and sweep.run_name) or run_name(cfg, "", f"{cfg.model.name}@{cfg.dataset.name}")
        tags = run_tags(
            "src.train",
            cfg,
            task=cfg.task.name,
            model=cfg.model.name,
            dataset=cfg.dataset.name,
            init=str(cfg.trainer.init_from or cfg.model.checkpoint or "random"),
            device=str(device),
            precision=str(amp_dtype or torch.float32).replace("torch.", ""),
            processes=str(world.world_size),
            **(sweep.tags if sweep else {}),
        )
        # every process must write to, and resume from, the same folder (torchrun: one timestamp)
        run_dir = from_main(str(cfg.paths.run_dir))
        trainer = Trainer(cfg, task, tracker, run_dir, device, amp_dtype, world)
        result = trainer.fit(name, tags)
    return result[cfg.trainer.early_stopping.monitor]


@hydra_entry("train")
def main(cfg: DictConfig) -> float | None:
    return train(cfg)


if __name__ == "__main__":
    main()
