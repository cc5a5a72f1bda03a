"""Checkpoints of a run: `best.pt` and `last.pt` (weights) plus `last_state.pt` (how to resume).

Weights files hold `{"model": state_dict, "meta": {...}}` of the full model, the format stock
loaders read (`sam2.build_sam.build_sam2(cfg, "best.pt")` takes the "model" entry). Training state
(optimizer, scheduler, step, data position, RNG, config, MLflow run id) sits beside them, since
users share weights, not optimizer moments.

Weights and state commit as one unit: both are written into a hidden folder that becomes
`step_NNNNNNNNN/` in one rename, and the previous step folder is removed only after that. A kill at
any moment leaves a complete step folder to resume from. `last.pt`, `last_state.pt` and `best.pt`
at the top are hard links into the newest step folder (no second copy on disk), refreshed after
each commit and on the next start, so tools keep reading the same paths.

Frozen weights are stored once: each step folder holds the run's `best.pt` (written at a new best,
else a hard link to the current one), and a `last.pt` that is not the best holds only the tensors
that differ from it, plus a reference with their digest (`src.utils.checkpoint_io.read_checkpoint`
makes it whole). At a new best `last.pt` is a hard link to `best.pt`. `epoch_NNN.pt` (weights after
each epoch, `trainer.save_every_epoch`) stay beside them.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
from pathlib import Path
from typing import Any

import torch

from src.errors import CheckpointError
from src.utils.atomic import atomic_dir, atomic_path, remove_stray_temporaries
from src.utils.checkpoint_io import BASE, BEST, LAST, STATE, read_checkpoint, tensors_digest, torch_save_atomic

log = logging.getLogger(__name__)

STEP_FOLDER = re.compile(r"step_(\d{9})(?:\.(\d+))?")


def _link(source: Path, dest: Path) -> None:
    """Point `dest` at `source`'s content in one rename: a hard link, or a copy where links are missing."""
    with atomic_path(dest) as tmp:
        tmp.unlink()
        try:
            os.link(source, tmp)
        except OSError:  # filesystems without hard links
            shutil.copyfile(source, tmp)


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

    def step_folders(self) -> list[Path]:
        """Committed step folders, oldest first (a re-save of one step gets a `.N` suffix)."""
        if not self.directory.is_dir():
            return []
        found = []
        for path in self.directory.iterdir():
            match = STEP_FOLDER.fullmatch(path.name)
            if match and path.is_dir() and (path / LAST).is_file() and (path / STATE).is_file():
                found.append(((int(match[1]), int(match[2] or 0)), path))
        return [path for _, path in sorted(found)]

    def newest(self) -> Path | None:
        """The folder to resume from: the newest committed step, or (runs from before step folders) this one."""
        folders = self.step_folders()
        if folders:
            return folders[-1]
        return self.directory if self.state.is_file() and self.last.is_file() else None

    def has_state(self) -> bool:
        return self.newest() is not None

    def tidy(self) -> None:
        """On start: remove what a killed write left (temporary files, superseded step folders), relink the top."""
        remove_stray_temporaries(self.directory)
        folders = self.step_folders()
        for old in folders[:-1]:
            shutil.rmtree(old, ignore_errors=True)
        if folders:
            self._link_top(folders[-1])

    def _link_top(self, folder: Path) -> None:
        for name in (BEST, STATE, LAST):
            if not (folder / name).exists():  # step folders from before best.pt lived in them
                continue
            if not (self.directory / name).exists() or not os.path.samefile(folder / name, self.directory / name):
                _link(folder / name, self.directory / name)

    def _write_weights(self, weights: dict[str, Any], is_best: bool, folder: Path) -> None:
        """`best.pt` (new, or the current one linked) and `last.pt` into `folder`: a link to the best, or
        the tensors that differ from it with a reference to the rest."""
        if is_best or not self.best.is_file():
            torch_save_atomic(weights, folder / (BEST if is_best else LAST))
            if is_best:
                _link(folder / BEST, folder / LAST)
            return
        _link(self.best, folder / BEST)
        base = torch.load(folder / BEST, map_location="cpu", weights_only=True, mmap=True).get("model", {})
        model = weights["model"]
        same = [key for key, value in model.items() if key in base and _identical(base[key], value)]
        reference = {"file": BEST, "keys": same, "sha256": tensors_digest(model, same)}
        changed = {key: value for key, value in model.items() if key not in set(same)}
        torch_save_atomic({**weights, "model": changed, "meta": {**weights["meta"], BASE: reference}}, folder / LAST)

    def save(self, weights: dict[str, Any], state: dict[str, Any], is_best: bool) -> None:
        """Commit weights and state as one step folder, then relink `last` (and `best` when it improved)."""
        name = f"step_{int(state['step']):09d}"
        previous = self.step_folders()
        taken = {path.name for path in previous}
        suffix = 1
        while name in taken:
            name = f"step_{int(state['step']):09d}.{suffix}"
            suffix += 1
        folder = self.directory / name
        with atomic_dir(folder) as tmp:
            self._write_weights(weights, is_best, tmp)
            torch_save_atomic(state, tmp / STATE)
        self._link_top(folder)
        for old in previous:
            shutil.rmtree(old, ignore_errors=True)

    def save_epoch(self, weights: dict[str, Any], epoch: int) -> Path:
        """`epoch_NNN.pt`: weights kept after an epoch (`trainer.save_every_epoch`), in the format of `best.pt`."""
        path = self.directory / f"epoch_{epoch:03d}.pt"
        self.directory.mkdir(parents=True, exist_ok=True)
        torch_save_atomic(weights, path)
        return path

    def load(self) -> tuple[dict[str, Any], dict[str, Any]]:
        """The newest committed weights and training state, checked to belong together."""
        folder = self.newest()
        if folder is None:
            raise CheckpointError(f"{self.directory} holds no checkpoint ({LAST} with {STATE}) to resume from")
        last, state_file = folder / LAST, folder / STATE
        weights, state = read_checkpoint(last), read_checkpoint(state_file)
        weights_step = weights.get("meta", {}).get("step") if isinstance(weights.get("meta"), dict) else None
        if weights_step != state.get("step"):
            raise CheckpointError(
                f"{last} (step {weights_step}) and {state_file} (step {state.get('step')}) disagree: the run "
                f"was interrupted while saving. Start a new run with trainer.init_from={self.best} to keep the weights"
            )
        return weights, state


def _identical(a: torch.Tensor, b: torch.Tensor) -> bool:
    """Bit for bit (torch.equal takes -0.0 for 0.0 and never NaN for NaN)."""
    if a.dtype != b.dtype or a.shape != b.shape:
        return False
    as_bytes = [t.detach().cpu().contiguous().reshape(-1).view(torch.uint8) for t in (a, b)]
    return torch.equal(*as_bytes)


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
