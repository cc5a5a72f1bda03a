"""What every `python -m src.<entry>` shares: Hydra set-up and one-line errors for user mistakes."""

from __future__ import annotations

import functools
import logging
import os
import sys
from collections.abc import Callable
from typing import Any

import hydra
from hydra import compose
from hydra.core.global_hydra import GlobalHydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig

from src.config import PROJECT_ROOT, group_choices
from src.errors import SamtuneError, TrainingInterrupted
from src.utils.device import set_cpu_threads

CONFIG_DIR = str(PROJECT_ROOT / "conf")


CHECKPOINT_CHOICES = ("model", "dataset")  # groups a checkpoint's metadata names (meta.model, meta.dataset)

log = logging.getLogger(__name__)


def command_line_overrides() -> list[str]:
    """The key=value overrides of the running command (empty outside a Hydra app)."""
    return list(HydraConfig.get().overrides.task) if HydraConfig.initialized() else []


def with_checkpoint_choices(cfg: DictConfig, meta: dict[str, Any], source: str) -> DictConfig:
    """`cfg` composed again with the model and dataset the checkpoint was trained with, unless the
    command chose them, so inference commands need not restate what the checkpoint knows.

    The names are data: each must be a file of its conf/ group, or it is ignored with a warning.
    Outside a Hydra app (a config built in Python) `cfg` is returned as it is.
    """
    if not HydraConfig.initialized():
        return cfg
    overrides = command_line_overrides()
    chosen = {override.split("=", 1)[0].lstrip("+~") for override in overrides}
    taken = []
    for group in CHECKPOINT_CHOICES:
        value = meta.get(group)
        if group in chosen or group not in cfg or not isinstance(value, str) or value == cfg[group].get("name"):
            continue
        if value not in group_choices(group):
            log.warning(
                "%s names %s=%s, which is not in conf/%s/; keeping %s=%s",
                source,
                group,
                value,
                group,
                group,
                cfg[group].get("name"),
            )
            continue
        taken.append(f"{group}={value}")
    if not taken:
        return cfg
    log.info("%s taken from %s (its metadata); choose others on the command line", " ".join(taken), source)
    return compose(config_name=HydraConfig.get().job.config_name, overrides=[*taken, *overrides])


def quote_plain_values(argv: list[str], keys: tuple[str, ...]) -> list[str]:
    """`box=1,2,3,4` and `points=1,2;3,4,0` as people type them reach Hydra as quoted strings.

    Hydra reads an unquoted comma list as a sweep ("Ambiguous value") and refuses `;`; for prompt keys
    neither is meant, so a plain value is quoted. Lists (`[..]`), quoted values and `null` pass as they are.
    """
    quoted = []
    for arg in argv:
        key, sep, value = arg.partition("=")
        if (
            sep
            and key.lstrip("+") in keys
            and value
            and value[0] not in "[('\""
            and value != "null"
            and "'" not in value
        ):
            arg = f"{key}='{value}'"
        quoted.append(arg)
    return quoted


def user_message(err: SamtuneError) -> str:
    """The error's own message; one raised in a DataLoader worker comes back wrapped in the worker's
    traceback ("Caught DataError in DataLoader worker process 0. Original Traceback ..."): its last line."""
    text = str(err)
    if "Original Traceback" not in text:
        return text
    last = [line for line in text.splitlines() if line.strip()][-1]
    prefix = f"{type(err).__module__}.{type(err).__name__}: "
    return last.removeprefix(prefix).removeprefix(f"{type(err).__name__}: ")


def runs_in_launcher_process() -> bool:
    """Whether this is a sweep's job in a process that submitit started for it (which sets SUBMITIT_FOLDER)."""
    in_sweep = HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN
    return in_sweep and "SUBMITIT_FOLDER" in os.environ


def one_line_errors(task: Callable[[DictConfig], Any]) -> Callable[[DictConfig], Any]:
    """`task` with its `cpu_threads` applied and a `SamtuneError` logged as one line.

    The command then exits with status 1, without a stack trace; so does a sweep (`-m`) run in this
    process, at its first failed job. A job that submitit runs (launcher=slurm|local) raises the error
    again after its line instead, so that the launcher records the job as failed with the reason (and
    the sweep's run says why) while the sweep's other jobs go on: a job that exited would leave
    submitit waiting for a result that never comes. An interruption (`TrainingInterrupted`: a job
    preempted or at its time limit, checkpointed to be requeued) still exits: it is no result.
    """

    @functools.wraps(task)
    def guarded(cfg: DictConfig) -> Any:
        try:
            if "cpu_threads" in cfg:  # inference entries; training reads trainer.cpu_threads
                set_cpu_threads(cfg.cpu_threads, "cpu_threads")
            return task(cfg)
        except SamtuneError as err:
            logging.getLogger(task.__module__).error("%s: %s", type(err).__name__, user_message(err))
            if runs_in_launcher_process() and not isinstance(err, TrainingInterrupted):
                raise
            sys.exit(1)

    return guarded


def hydra_entry(
    config_name: str, plain_values: tuple[str, ...] = ()
) -> Callable[[Callable[[DictConfig], Any]], Callable[[], Any]]:
    """`@hydra.main` on conf/<config_name>.yaml; the keys in `plain_values` take values as typed
    (`quote_plain_values`).

    `import sam2` initialises Hydra's global state with sam2's own configs, after which
    `@hydra.main` refuses to start; SAM2 is built here without global Hydra (src.models.sam2.build),
    so that state is cleared first. The task runs under `one_line_errors`: a `SamtuneError` (bad
    config, data or checkpoint) is one line, without a stack trace.
    """

    def decorate(task: Callable[[DictConfig], Any]) -> Callable[[], Any]:
        app = hydra.main(version_base="1.3", config_path=CONFIG_DIR, config_name=config_name)(one_line_errors(task))

        @functools.wraps(task)
        def entry() -> Any:
            GlobalHydra.instance().clear()
            sys.argv[1:] = quote_plain_values(sys.argv[1:], plain_values)
            return app()

        return entry

    return decorate
