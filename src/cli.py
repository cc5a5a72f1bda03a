"""What every `python -m src.<entry>` shares: Hydra set-up and one-line errors for user mistakes."""

from __future__ import annotations

import functools
import logging
import sys
from collections.abc import Callable
from typing import Any

import hydra
from hydra.core.global_hydra import GlobalHydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

from src.config import PROJECT_ROOT
from src.errors import SamtuneError

CONFIG_DIR = str(PROJECT_ROOT / "conf")


def command_line_overrides() -> list[str]:
    """The key=value overrides of the running command (empty outside a Hydra app)."""
    return list(HydraConfig.get().overrides.task) if HydraConfig.initialized() else []


def user_message(err: SamtuneError) -> str:
    """The error's own message; one raised in a DataLoader worker comes back wrapped in the worker's
    traceback ("Caught DataError in DataLoader worker process 0. Original Traceback ..."): its last line."""
    text = str(err)
    if "Original Traceback" not in text:
        return text
    last = [line for line in text.splitlines() if line.strip()][-1]
    prefix = f"{type(err).__module__}.{type(err).__name__}: "
    return last.removeprefix(prefix).removeprefix(f"{type(err).__name__}: ")


def hydra_entry(config_name: str) -> Callable[[Callable[[DictConfig], Any]], Callable[[], Any]]:
    """`@hydra.main` on conf/<config_name>.yaml.

    `import sam2` initialises Hydra's global state with sam2's own configs, after which
    `@hydra.main` refuses to start; SAM2 is built here without global Hydra (src.models.sam2.build),
    so that state is cleared first. A `SamtuneError` (bad config, data or checkpoint) is printed as
    one line and exits with status 1, without a stack trace.
    """

    def decorate(task: Callable[[DictConfig], Any]) -> Callable[[], Any]:
        @functools.wraps(task)
        def guarded(cfg: DictConfig) -> Any:
            try:
                return task(cfg)
            except SamtuneError as err:
                logging.getLogger(task.__module__).error("%s: %s", type(err).__name__, user_message(err))
                sys.exit(1)

        app = hydra.main(version_base="1.3", config_path=CONFIG_DIR, config_name=config_name)(guarded)

        @functools.wraps(task)
        def entry() -> Any:
            GlobalHydra.instance().clear()
            return app()

        return entry

    return decorate
