"""Shared fixtures. Everything runs on the CPU with the real SAM2 at a small image size."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from hydra import compose, initialize_config_dir, initialize_config_module
from hydra.core.global_hydra import GlobalHydra
from omegaconf import DictConfig

from src.cli import CONFIG_DIR
from tests.helpers import FAST_RUN, isolated_paths, run_module


@pytest.fixture
def train_run(tmp_path: Path):
    """Run `python -m src.train` with FAST_RUN settings inside `tmp_path`; extra overrides last."""

    def run(*overrides: str, fast: bool = True) -> subprocess.CompletedProcess:
        args = [*(FAST_RUN if fast else []), *isolated_paths(tmp_path), *overrides]
        return run_module("src.train", args)

    return run


@pytest.fixture
def compose_cfg(tmp_path: Path) -> Iterator:
    """Compose conf/train.yaml in-process (as `python -m src.train` would) without running it.

    `paths.run_dir` normally comes from the Hydra run; here it is a temporary folder.
    """

    def _compose(overrides: list[str] | None = None, hydra_config: bool = False) -> DictConfig:
        overrides = [f"paths.run_dir={tmp_path / 'run'}", *(overrides or [])]
        return compose(config_name="train", overrides=overrides, return_hydra_config=hydra_config)

    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        yield _compose
    GlobalHydra.instance().clear()


@pytest.fixture
def sam2_hydra() -> Iterator[None]:
    """The global Hydra state stock `sam2.build_sam.build_sam2` expects (set by `import sam2`)."""
    GlobalHydra.instance().clear()
    initialize_config_module("sam2", version_base="1.2")
    yield
    GlobalHydra.instance().clear()


@pytest.fixture
def shapes_image() -> tuple[np.ndarray, np.ndarray]:
    """A 96x128 image with two rectangles and its instance-id mask (ids 1 and 2)."""
    rng = np.random.default_rng(0)
    image = rng.integers(0, 60, (96, 128, 3), dtype=np.uint8)
    ids = np.zeros((96, 128), np.uint8)
    ids[10:40, 15:60] = 1
    ids[50:90, 70:120] = 2
    image[ids == 1] = (220, 40, 40)
    image[ids == 2] = (40, 220, 40)
    return image, ids


@pytest.fixture
def compose_prepare(tmp_path: Path) -> Iterator:
    """Compose conf/prepare.yaml in-process (as `python -m src.prepare` would), data and caches in `tmp_path`."""

    def _compose(*overrides: str) -> DictConfig:
        paths = [f"paths.data_dir={tmp_path / 'data'}", f"paths.cache_dir={tmp_path / 'cache'}"]
        return compose(config_name="prepare", overrides=[*paths, *overrides])

    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        yield _compose
    GlobalHydra.instance().clear()


@pytest.fixture(scope="session")
def fine_tuned_run(tmp_path_factory) -> dict:
    """One short `python -m src.train` run whose weights the inference tests load (folder, file, MLflow)."""
    from mlflow.tracking import MlflowClient

    tmp = tmp_path_factory.mktemp("fine_tuned")
    result = run_module("src.train", [*FAST_RUN, *isolated_paths(tmp), "trainer.max_steps=2", "optimizer.lr=1e-4"])
    assert result.returncode == 0, (result.stdout + result.stderr)[-4000:]
    tracking_uri = f"sqlite:///{tmp / 'outputs' / 'mlflow.db'}"
    client = MlflowClient(tracking_uri)
    (run,) = client.search_runs([client.get_experiment_by_name("synthetic").experiment_id])
    return {
        "root": tmp,
        "run_dir": tmp / "run",
        "best": tmp / "run" / "checkpoints" / "best.pt",
        "run_id": run.info.run_id,
        "tracking_uri": tracking_uri,
        "data_dir": tmp / "data",
    }


# the files that take longest start first, so that parallel workers (make test: pytest -n 2 --dist
# loadfile) finish together instead of one running a long file alone at the end
LONGEST_FILES = ("test_reliability.py", "test_sweeps.py", "test_slurm.py", "test_learning.py", "test_evaluate.py")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    order = {name: rank for rank, name in enumerate(LONGEST_FILES)}
    items.sort(key=lambda item: order.get(item.path.name, len(order)))
