"""Crashes at any moment, tracking outages and bad input: training keeps going, loses nothing, says why."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from src.config import PROJECT_ROOT
from src.engine.checkpoints import CheckpointDir
from tests.helpers import FAST_RUN, isolated_paths

# runs src.train with one function patched to die (os._exit, as kill -9: no cleanup) at a chosen call
DYING_RUN = """
import os, re, runpy, sys
import src.engine.checkpoints as checkpoints
name, pattern = sys.argv[1], re.compile(sys.argv[2])
real = getattr(checkpoints, name)
def dying(source, dest):
    if pattern.search(f"{source}->{dest}"):
        os._exit(137)
    return real(source, dest)
setattr(checkpoints, name, dying)
sys.argv = ["src.train", *sys.argv[3:]]
runpy.run_module("src.train", run_name="__main__")
"""


def output(result: subprocess.CompletedProcess) -> str:
    return result.stdout + result.stderr


def run_dying(tmp: Path, function: str, pattern: str, *overrides: str) -> subprocess.CompletedProcess:
    args = [*FAST_RUN, *isolated_paths(tmp), *overrides]
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "PYTHONPATH": str(PROJECT_ROOT)}
    command = [sys.executable, "-c", DYING_RUN, function, pattern, *args]
    return subprocess.run(command, cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=600, env=env)


@pytest.fixture(scope="module")
def straight_run(tmp_path_factory) -> Path:
    """Four steps without interruption: the weights every interrupted run must end with."""
    from tests.helpers import run_module

    tmp = tmp_path_factory.mktemp("straight")
    result = run_module("src.train", [*FAST_RUN, *isolated_paths(tmp), "trainer.max_steps=4", "trainer.cpu_threads=1"])
    assert result.returncode == 0, output(result)[-3000:]
    return tmp / "run" / "checkpoints"


@pytest.mark.parametrize(
    ("function", "pattern", "resumed_at"),
    [
        # the step-4 weights are written, its training state is not: step 2 stays the newest whole checkpoint
        ("torch_save_atomic", r"\.step_000000004\.[^/]*\.tmp/last_state\.pt$", 2),
        # the step-4 folder is committed, the top-level last.pt still points at step 2
        ("_link", r"step_000000004/last\.pt->.*checkpoints/last\.pt$", 4),
    ],
)
def test_a_kill_inside_the_checkpoint_commit_resumes_to_identical_weights(
    train_run, tmp_path, straight_run, function, pattern, resumed_at
):
    killed = run_dying(tmp_path, function, pattern, "trainer.max_steps=4", "trainer.cpu_threads=1")
    assert killed.returncode == 137, output(killed)[-3000:]
    ckpt = CheckpointDir(tmp_path / "run" / "checkpoints")
    if resumed_at == 2:
        assert [p.name for p in ckpt.directory.iterdir() if p.name.endswith(".tmp")]  # the killed write's leftovers
    else:  # the old code refused these two as "interrupted while saving"
        assert torch.load(ckpt.last, weights_only=True)["meta"]["step"] == 2
        assert torch.load(ckpt.state, weights_only=True)["step"] == 4

    resumed = train_run("trainer.max_steps=4", "trainer.cpu_threads=1")
    assert resumed.returncode == 0, output(resumed)[-3000:]
    assert f"at step {resumed_at}" in output(resumed)
    assert not [p.name for p in ckpt.directory.iterdir() if p.name.startswith(".")]  # leftovers removed
    assert [p.name for p in ckpt.step_folders()] == ["step_000000004"]
    assert os.path.samefile(ckpt.last, ckpt.step_folders()[-1] / "last.pt")
    weights, state = ckpt.load()
    assert state["step"] == 4 and torch.load(ckpt.state, weights_only=True)["step"] == 4
    straight = torch.load(straight_run / "last.pt", weights_only=True)["model"]
    for key, value in straight.items():
        assert torch.equal(weights["model"][key], value), key
