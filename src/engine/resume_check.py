"""What changed between a run's saved config and the command resuming it, and whether that may change.

A resumed run continues the optimizer, schedule and MLflow run of the one it resumes; a changed lr
or loss silently ignored (or silently mixed into one MLflow run) would make both meaningless. Budget
and cadence settings may change; anything else needs `trainer.resume_changed=true`.
"""

from __future__ import annotations

from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf

from src.errors import ConfigError
from src.tracking.runs import flatten

# how long and how often: a resumed run may change these freely (they are reported)
CHANGEABLE = (
    "trainer.max_steps",
    "trainer.max_time",
    "trainer.max_epochs",
    "trainer.eval_every_steps",
    "trainer.eval_at_start",
    "trainer.log_every_steps",
    "trainer.save_every_epoch",
    "trainer.picture_every_steps",
)
# where and with what resources the run goes on: not part of what is trained (prefixes)
OPERATIONAL = (
    "paths.",
    "logger.",
    "hydra.",
    "trainer.resume",
    "trainer.init_from",
    "trainer.device",
    "trainer.cpu_threads",
    "trainer.stop_signals",
    "trainer.distributed.",
    "data.num_workers",
    "data.pin_memory",
    "data.persistent_workers",
)


def config_changes(saved_yaml: str, cfg: DictConfig) -> dict[str, tuple[str, str]]:
    """{key: (saved, now)} for every setting (but the operational ones) that differs."""
    before = flatten(OmegaConf.to_container(OmegaConf.create(saved_yaml), resolve=False))
    after = flatten(OmegaConf.to_container(cfg, resolve=True))
    changes = {}
    for key in sorted(before.keys() | after.keys()):
        if key.startswith(OPERATIONAL):
            continue
        old, new = before.get(key, "(absent)"), after.get(key, "(absent)")
        if old != new:
            changes[key] = (old, new)
    return changes


def describe(changes: dict[str, tuple[str, str]]) -> str:
    return "; ".join(f"{key}: {old} -> {new}" for key, (old, new) in changes.items())


def check_resume_changes(changes: dict[str, tuple[str, str]], source: str, allowed: bool) -> None:
    """Refuse settings that cannot change under a resumed run, unless `trainer.resume_changed=true`."""
    refused = {key: change for key, change in changes.items() if key not in CHANGEABLE}
    if refused and not allowed:
        raise ConfigError(
            f"resuming {source} with settings that differ from the run being resumed: {describe(refused)}. "
            f"Only {', '.join(CHANGEABLE)} may change when resuming; pass trainer.resume_changed=true to resume "
            "with the new values anyway, or start a new run (another hydra.run.dir, with trainer.init_from=PATH to "
            "keep the weights)"
        )


def apply_optimizer_changes(
    changes: dict[str, tuple[str, str]],
    optimizer: torch.optim.Optimizer,
    fresh_groups: list[dict[str, Any]],
    scheduler: torch.optim.lr_scheduler.LambdaLR | None,
    key: str = "optimizer",
) -> None:
    """Put changed optimizer settings (lr, weight decay, ...) into the restored state, which holds the old ones.

    `fresh_groups` are the param groups' settings as built from the new config, before the restore; `key`
    is where the optimizer's config sits (a part's own, e.g. `discriminator.optimizer`).
    """
    names = {name.removeprefix(f"{key}.") for name in changes if name.startswith(f"{key}.")}
    for index, (group, fresh) in enumerate(zip(optimizer.param_groups, fresh_groups, strict=True)):
        for name in names & fresh.keys():
            group[name] = fresh[name]
        if "lr" in names and scheduler is not None:
            base = fresh["initial_lr"]  # the scheduler set "lr" to its first multiple of it
            scheduler.base_lrs[index] = group["initial_lr"] = base
            group["lr"] = base * scheduler.lr_lambdas[index](scheduler.last_epoch)
