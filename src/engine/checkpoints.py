"""Checkpoints of a run: `best.pt` and `last.pt` (weights) plus `last_state.pt` (how to resume).

Weights files hold `{"model": state_dict, "meta": {...}}` of the full model, the format stock
loaders read (`sam2.build_sam.build_sam2(cfg, "best.pt")` takes the "model" entry). Training state
(optimizer, scheduler, step, data position, RNG, config, MLflow run id) sits beside them, since
users share weights, not optimizer moments. Every write is atomic.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

from src.errors import CheckpointError
from src.utils.atomic import atomic_path
from src.utils.checkpoint_io import BEST, LAST, STATE, read_checkpoint, torch_save_atomic

log = logging.getLogger(__name__)



class CheckpointDir:
    def __init__(self, directory: str | Path):
        self.directory = Path(directory)

    @property
    def best(self) -> Path:
        return self.directory / BEST

    @property
    def last(self) -> Path:
        return self.directory / LAST

    @property
    def state(self) -> Path:
        return self.directory / STATE

    def has_state(self) -> bool:
        return self.state.is_file() and self.last.is_file()

    def save(self, weights: dict[str, Any], state: dict[str, Any], is_best: bool) -> None:
        """Write `last` (and `best` when it improved); `best` is a hard link, so no second copy is written."""
        torch_save_atomic(weights, self.last)
        torch_save_atomic(state, self.state)
        if is_best:
            with atomic_path(self.best) as tmp:
                tmp.unlink()
                try:
                    os.link(self.last, tmp)
                except OSError:  # filesystems without hard links
                    tmp.write_bytes(self.last.read_bytes())

    def load(self) -> tuple[dict[str, Any], dict[str, Any]]:
        """The last weights and the training state, checked to belong together."""
        weights, state = read_checkpoint(self.last), read_checkpoint(self.state)
        weights_step = weights.get("meta", {}).get("step")
        if weights_step != state.get("step"):
            raise CheckpointError(
                f"{self.last} (step {weights_step}) and {self.state} (step {state.get('step')}) disagree: the run "
                f"was interrupted while saving. Start a new run with trainer.init_from={self.best} to keep the weights"
            )
        return weights, state


def find_checkpoint_dir(path: str | Path) -> CheckpointDir:
    """A run folder or its `checkpoints/` folder, as given to `trainer.resume=PATH`."""
    path = Path(path).expanduser()
    for candidate in (path / "checkpoints", path):
        if CheckpointDir(candidate).has_state():
            return CheckpointDir(candidate)
    raise CheckpointError(
        f"trainer.resume={path}: no {LAST} with {STATE} there or in {path / 'checkpoints'}; expected the run "
        "folder of an earlier training run"
    )
