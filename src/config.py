"""Config helpers: resolvers used in `conf/`, and checks on combinations Hydra cannot express."""

from __future__ import annotations

from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from src.errors import ConfigError

PROJECT_ROOT = Path(__file__).resolve().parent.parent


def register_resolvers() -> None:
    """`${project_root:}` is the repository folder, whatever the working directory."""
    if not OmegaConf.has_resolver("project_root"):
        OmegaConf.register_new_resolver("project_root", lambda: str(PROJECT_ROOT))


def check_combination(cfg: DictConfig) -> None:
    """Refuse combinations that would silently do something other than what was asked."""
    schedule_free = "ScheduleFree" in str(cfg.optimizer.get("_target_", ""))
    if schedule_free and cfg.trainer.get("name") == "cyclic":
        raise ConfigError(
            "optimizer=schedulefree with trainer=cyclic: Schedule-Free AdamW runs at a fixed learning rate after "
            "its own warmup (optimizer.warmup_steps), so the cyclic trainer's cosine restarts would not happen. "
            "Use optimizer=adamw trainer=cyclic for cyclic rounds, then optimizer=schedulefree trainer=default "
            "trainer.init_from=<previous run> for the Schedule-Free rounds (seed 003's recipe)"
        )
    task = cfg.task.get("name")
    if task == "segmentation" and not cfg.model.get("sam2_config"):
        raise ConfigError(
            f"model={cfg.model.name} with task=segmentation: {cfg.model.name} is a landmark model (no SAM2 mask "
            "decoder); use task=landmarks, or a SAM2 size (model=tiny|small|base_plus|large) for segmentation"
        )
    adapter = cfg.get("adapter", {}).get("name", "none")
    if adapter != "none" and task != "segmentation":
        raise ConfigError(f"adapter={adapter} with task={task}: adapters are for SAM2 segmentation; use adapter=none")
    if task == "segmentation" and "mask_type" not in cfg.dataset:
        raise ConfigError(
            f"dataset={cfg.dataset.name} with task=segmentation: it holds landmark annotations, not masks; "
            "use task=landmarks"
        )


# training settings that must be numbers, checked before anything is built:
# key -> (kind, lowest, whether `lowest` itself is refused, whether null is allowed)
TRAINING_NUMBERS = {
    "trainer.batch_size": (int, 1, False, False),
    "trainer.accumulate_grad_batches": (int, 1, False, False),
    "trainer.max_epochs": (int, 1, False, False),
    "trainer.max_steps": (int, 1, False, True),
    "trainer.max_time": (float, 0, True, True),
    "trainer.eval_every_steps": (int, 1, False, True),
    "trainer.log_every_steps": (int, 1, False, False),
    "trainer.picture_every_steps": (int, 1, False, True),
    "trainer.gradient_clip_norm": (float, 0, True, True),
    "trainer.seed": (int, 0, False, False),
    "optimizer.lr": (float, 0, False, False),  # 0: a run that cannot move (a baseline)
    "data.num_workers": (int, 0, False, False),
}


def check_training_numbers(cfg: DictConfig) -> None:
    """Refuse `trainer.batch_size=abc`, `trainer.max_steps=-5` and the like in one line, before the model is built."""
    for key, (kind, lowest, strict, nullable) in TRAINING_NUMBERS.items():
        value = OmegaConf.select(cfg, key, default="<absent>")
        if value == "<absent>" or (value is None and nullable):
            continue
        wanted = "an integer" if kind is int else "a number"
        expected = f"expected {wanted} {'>' if strict else '>='} {lowest}{' (or null)' if nullable else ''}"
        numeric = isinstance(value, int | float) and not isinstance(value, bool)
        if not numeric or (kind is int and not float(value).is_integer()):
            raise ConfigError(f"{key}={value!r}: {expected}")
        if value < lowest or (strict and value == lowest):
            raise ConfigError(f"{key}={value}: {expected}")


def group_choices(group: str) -> list[str]:
    """The choices of a config group: the YAML files in conf/<group>/."""
    return sorted(path.stem for path in (PROJECT_ROOT / "conf" / group).glob("*.yaml"))


def group_config(group: str, choice: str) -> DictConfig:
    """conf/<group>/<choice>.yaml on its own, without the groups it selects (`defaults`), for a command
    whose config has no such group; `choice` is a key checked against the group's files."""
    known = group_choices(group)
    if choice not in known:
        raise ConfigError(f"{group} {choice!r}: expected one of {known}")
    settings = OmegaConf.load(PROJECT_ROOT / "conf" / group / f"{choice}.yaml")
    settings.pop("defaults", None)
    return settings


def with_task_config(cfg: DictConfig, task: str) -> DictConfig:
    """`cfg` with `task` set to conf/task/<task>.yaml when the command did not choose a task.

    Evaluation and prediction learn the task from the checkpoint; its settings (e.g. `task.nme`)
    still come from the one place they are defined. `task` is a key checked against conf/task/.
    """
    if cfg.get("task") is not None:
        return cfg
    settings = group_config("task", task)
    merged = cfg.copy()
    OmegaConf.set_struct(merged, False)
    merged.task = settings
    return merged


register_resolvers()
