"""Every combination of config groups composes; presets resolve; impossible combinations are refused."""

import itertools
from pathlib import Path

import pytest
from hydra.errors import MissingConfigException
from omegaconf import OmegaConf

from src.cli import CONFIG_DIR
from src.config import check_combination
from src.errors import ConfigError

GROUPS = {
    group: sorted(p.stem for p in (Path(CONFIG_DIR) / group).glob("*.yaml"))
    for group in ("model", "dataset", "loss", "optimizer", "trainer", "task", "prompts", "augmentation")
}
SAM2_SIZES = ["base_plus", "large", "small", "tiny"]
LANDMARK_DATASETS = {"animal", "synthetic_faces"}  # they choose task=landmarks


def test_the_groups_the_user_asked_for_exist():
    assert GROUPS["model"] == sorted([*SAM2_SIZES, "hrnetv2_w18"])
    assert {"kvasir", "manga", "animal", "synthetic", "synthetic_faces"} <= set(GROUPS["dataset"])
    assert GROUPS["task"] == ["landmarks", "segmentation"]
    assert GROUPS["loss"] == ["bce_iou", "dice_focal"]
    assert GROUPS["optimizer"] == ["adamw", "schedulefree"]
    assert {"default", "cyclic"} <= set(GROUPS["trainer"])


def test_every_combination_composes_and_resolves(compose_cfg):
    """Every training group crossed, with the task the dataset chooses (crossed with the task below)."""
    names = [n for n in GROUPS if n != "task"]
    choices = {**GROUPS, "model": SAM2_SIZES}
    combos = list(itertools.product(*(choices[n] for n in names)))
    assert len(combos) >= 4 * 4 * 2 * 2 * 2
    for combo in combos:
        overrides = [f"{n}={c}" for n, c in zip(names, combo, strict=True)]
        cfg = compose_cfg(overrides)
        resolved = OmegaConf.to_container(cfg, resolve=True, throw_on_missing=True)
        choice = dict(zip(names, combo, strict=True))
        assert resolved["model"]["name"] == choice["model"]
        assert resolved["task"]["name"] == ("landmarks" if choice["dataset"] in LANDMARK_DATASETS else "segmentation")
        if choice["optimizer"] == "schedulefree" and choice["trainer"] == "cyclic":
            with pytest.raises(ConfigError, match="Schedule-Free"):
                check_combination(cfg)
        else:
            check_combination(cfg)


def test_every_task_model_and_dataset_composes_or_is_refused(compose_cfg):
    for task, model, dataset in itertools.product(GROUPS["task"], GROUPS["model"], GROUPS["dataset"]):
        cfg = compose_cfg([f"task={task}", f"model={model}", f"dataset={dataset}"])
        OmegaConf.to_container(cfg, resolve=True, throw_on_missing=True)
        assert cfg.task.name == task  # a task on the command line wins over the dataset's
        if task == "segmentation" and model == "hrnetv2_w18":
            with pytest.raises(ConfigError, match="landmark model"):
                check_combination(cfg)
        elif task == "segmentation" and dataset == "synthetic_faces":
            with pytest.raises(ConfigError, match="landmark annotations"):
                check_combination(cfg)
        else:
            check_combination(cfg)


def test_the_task_follows_the_dataset_and_can_be_overridden(compose_cfg):
    from tests.helpers import compose_config

    for dataset in sorted(GROUPS["dataset"]):
        cfg = compose_cfg([f"dataset={dataset}"])
        expected = "landmarks" if dataset in LANDMARK_DATASETS else "segmentation"
        assert cfg.task.name == expected, dataset
        assert (cfg.trainer.early_stopping.monitor, cfg.trainer.early_stopping.mode) == (
            ("val/nme", "min") if expected == "landmarks" else ("val/miou", "max")
        )
    assert compose_cfg(["dataset=animal", "task=segmentation"]).task.name == "segmentation"
    assert compose_cfg(["dataset=kvasir", "task=landmarks"]).task.name == "landmarks"
    for loss in ("mse", "adaptive_wing"):
        cfg = compose_cfg(["dataset=animal", "model=hrnetv2_w18", f"landmark_loss={loss}"])
        check_combination(cfg)
        assert cfg.landmark_loss._target_.startswith("src.landmarks.losses.")
    # entry points that read a dataset but train nothing still compose with the landmark datasets
    for config in ("evaluate", "prepare", "evaluate_landmarks"):
        for dataset in ("animal", "synthetic_faces") if config == "evaluate_landmarks" else ("animal",):
            cfg = compose_config(config, [f"dataset={dataset}"])
            OmegaConf.to_container(cfg.dataset, resolve=True)


def test_model_configs_name_sam2_configs_and_official_weights(compose_cfg):
    expected = {"tiny": "t", "small": "s", "base_plus": "b+", "large": "l"}
    assert sorted(expected) == SAM2_SIZES
    for name, short in expected.items():
        model = compose_cfg([f"model={name}"]).model
        assert model.sam2_config == f"configs/sam2.1/sam2.1_hiera_{short}.yaml"
        assert (
            model.checkpoint_url == f"https://dl.fbaipublicfiles.com/segment_anything_2/092824/sam2.1_hiera_{name}.pt"
        )
        assert len(model.checkpoint_sha256) == 64 and model.checkpoint_bytes > 10_000_000
        assert model.image_size == 1024
        assert list(model.trainable) == ["sam_mask_decoder", "sam_prompt_encoder"]


def test_experiment_presets_are_reachable_from_the_command_line(compose_cfg):
    presets = sorted(p.stem for p in (Path(CONFIG_DIR) / "experiment").glob("*.yaml"))
    assert {"demo", "kvasir_small"} <= set(presets)
    for preset in presets:
        cfg = compose_cfg([f"experiment={preset}"])
        OmegaConf.to_container(cfg, resolve=True)
    kvasir = compose_cfg(["experiment=kvasir_small"])
    assert (kvasir.model.name, kvasir.dataset.name, kvasir.loss.iou_weight) == ("small", "kvasir", 0.05)
    assert compose_cfg(["experiment=kvasir_small", "optimizer.lr=1e-4"]).optimizer.lr == 1e-4


def test_cyclic_trainer_restarts_every_40_of_200_epochs(compose_cfg):
    trainer = compose_cfg(["trainer=cyclic"]).trainer
    assert (trainer.max_epochs, trainer.scheduler.cycle_epochs) == (200, 40)
    assert trainer.batch_size == compose_cfg().trainer.batch_size  # inherits the default trainer's keys


def test_an_unknown_choice_names_the_available_options(compose_cfg):
    with pytest.raises(MissingConfigException) as err:
        compose_cfg(["model=huge"])
    message = str(err.value)
    assert "model/huge" in message and "tiny" in message and "base_plus" in message


def test_run_folders_and_mlflow_store_live_under_outputs(compose_cfg):
    cfg = compose_cfg([], hydra_config=True)
    root = Path(cfg.paths.root_dir)
    assert (root / "src" / "train.py").is_file()
    assert cfg.paths.output_dir == str(root / "outputs")
    assert cfg.logger.tracking_uri == f"sqlite:///{root / 'outputs' / 'mlflow.db'}"
    assert cfg.hydra.run.dir.startswith(str(root / "outputs" / "runs"))
