"""Every combination of config groups composes; presets resolve; impossible combinations are refused."""

import itertools
from pathlib import Path

import pytest
import torch
from hydra.errors import MissingConfigException
from hydra.utils import instantiate
from omegaconf import OmegaConf

from src.cli import CONFIG_DIR
from src.config import PROJECT_ROOT, check_combination
from src.errors import ConfigError

GROUPS = {
    group: sorted(p.stem for p in (Path(CONFIG_DIR) / group).glob("*.yaml"))
    for group in ("model", "dataset", "loss", "optimizer", "trainer", "task", "prompts", "augmentation")
}
SAM2_SIZES = ["base_plus", "large", "small", "tiny"]
LANDMARK_DATASETS = {"animal", "synthetic_faces"}  # annotated landmarks (animal also has masks)
INPAINTING_MODELS, INPAINTING_DATASETS = ["light_inpaint"], {"inpaint"}  # tests/test_inpainting.py covers them


def test_the_groups_the_user_asked_for_exist():
    assert GROUPS["model"] == sorted([*SAM2_SIZES, "hrnetv2_w18", *INPAINTING_MODELS])
    assert {"kvasir", "manga", "animal", "synthetic", "synthetic_faces"} <= set(GROUPS["dataset"])
    assert GROUPS["task"] == ["inpainting", "landmarks", "segmentation"]
    assert GROUPS["loss"] == ["bce_iou", "dice_focal"]
    assert GROUPS["optimizer"] == ["adamw", "schedulefree"]
    assert {"default", "cyclic"} <= set(GROUPS["trainer"])


SEGMENTATION_GROUPS = ("model", "dataset", "loss", "optimizer", "trainer", "prompts", "augmentation")
LANDMARK_GROUPS = ("model", "dataset", "landmark_loss", "optimizer", "trainer")
SEGMENTATION_ONLY = {"prompts", "augmentation", "loss", "evaluation"}


def instantiate_parts(cfg) -> None:
    """Build what a run builds from each `_target_` of `cfg` except the model: loss, optimizer, schedule, ..."""
    from hydra.utils import instantiate
    from torch import nn

    from src.engine.optimizers import build_optimizer

    optimizer = build_optimizer(instantiate(cfg.optimizer, _convert_="all"), nn.Linear(2, 2).parameters())
    assert isinstance(optimizer, torch.optim.Optimizer)
    schedule = instantiate(cfg.trainer.scheduler)(total_steps=100, steps_per_epoch=10)
    assert 0 < schedule(1) <= 1
    if cfg.task.name == "segmentation":
        assert isinstance(instantiate(cfg.loss), nn.Module)
        instantiate(cfg.augmentation)
        instantiate(cfg.evaluation.prompts)
    else:
        assert isinstance(instantiate(cfg.landmark_loss), nn.Module)
        instantiate(cfg.task.heatmap, stride=4)
        instantiate(cfg.task.augmentation)


@pytest.mark.parametrize("task", ["segmentation", "landmarks"])
def test_every_combination_composes_and_builds_its_parts(compose_cfg, task):
    """Every group of the task crossed; each combination's loss, optimizer and schedule are built (not only
    composed), so a broken `_target_` fails here; the task's groups alone are composed and logged."""
    names = SEGMENTATION_GROUPS if task == "segmentation" else LANDMARK_GROUPS
    choices = {**GROUPS, "landmark_loss": sorted(p.stem for p in (Path(CONFIG_DIR) / "landmark_loss").glob("*.yaml"))}
    if task == "segmentation":
        choices["model"] = SAM2_SIZES
        choices["dataset"] = [d for d in GROUPS["dataset"] if d not in LANDMARK_DATASETS | INPAINTING_DATASETS]
        choices["dataset"] += ["animal"]
    else:
        choices["dataset"] = sorted(LANDMARK_DATASETS)
        choices["model"] = [m for m in GROUPS["model"] if m not in INPAINTING_MODELS]
    combos = list(itertools.product(*(choices[n] for n in names)))
    assert len(combos) >= (4 * 4 * 2 * 2 * 2 if task == "segmentation" else 5 * 2 * 2 * 2)
    for combo in combos:
        choice = dict(zip(names, combo, strict=True))
        cfg = compose_cfg([f"task={task}", *(f"{n}={c}" for n, c in choice.items())])
        resolved = OmegaConf.to_container(cfg, resolve=True, throw_on_missing=True)
        assert resolved["model"]["name"] == choice["model"] and resolved["task"]["name"] == task
        other = {"landmark_loss"} if task == "segmentation" else SEGMENTATION_ONLY
        assert not other & set(resolved), f"{task} composes another task's groups: {other & set(resolved)}"
        if choice["optimizer"] == "schedulefree" and choice["trainer"] == "cyclic":
            with pytest.raises(ConfigError, match="Schedule-Free"):
                check_combination(cfg)
            continue
        check_combination(cfg)
        instantiate_parts(cfg)


@pytest.mark.parametrize("task", ["segmentation", "landmarks"])
def test_each_task_builds_with_each_of_its_models(compose_cfg, task):
    from hydra.utils import get_class

    models = SAM2_SIZES if task == "segmentation" else [m for m in GROUPS["model"] if m not in INPAINTING_MODELS]
    dataset = "synthetic" if task == "segmentation" else "synthetic_faces"
    for model in models:
        cfg = compose_cfg([f"task={task}", f"model={model}", f"dataset={dataset}", "model.image_size=64"])
        built = get_class(cfg.task._target_)(cfg, torch.device("cpu"))  # as src.train builds it
        assert built.trainable_parameters(), (task, model)


def test_refused_combinations_name_the_task_to_use(compose_cfg):
    with pytest.raises(ConfigError, match="landmark model"):
        check_combination(compose_cfg(["task=segmentation", "model=hrnetv2_w18"]))
    with pytest.raises(ConfigError, match="landmark annotations"):
        check_combination(compose_cfg(["task=segmentation", "dataset=synthetic_faces"]))


def test_presets_choose_the_task_and_entry_points_compose_with_every_dataset(compose_cfg):
    from tests.helpers import compose_config

    assert compose_cfg(["dataset=animal"]).task.name == "segmentation"  # a dataset no longer forces a task
    landmarks = compose_cfg(["experiment=landmarks_demo"])
    assert (landmarks.task.name, landmarks.trainer.early_stopping.monitor) == ("landmarks", "val/nme")
    assert compose_cfg(["experiment=demo"]).trainer.early_stopping.monitor == "val/miou"
    for config in ("evaluate", "prepare", "predict"):
        datasets = {"evaluate": GROUPS["dataset"], "prepare": ["animal", "kvasir", "manga"], "predict": [None]}
        for dataset in datasets[config]:
            cfg = compose_config(config, [f"dataset={dataset}"] if dataset else [])
            if "dataset" in cfg:
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
    assert (trainer.max_epochs, trainer.scheduler.cycles) == (200, 5)
    assert trainer.batch_size == compose_cfg().trainer.batch_size  # inherits the default trainer's keys


def learning_rates(trainer, steps_per_epoch: int = 10) -> list[float]:
    total = int(trainer.max_epochs) * steps_per_epoch
    schedule = instantiate(trainer.scheduler)(total_steps=total, steps_per_epoch=steps_per_epoch)
    return [schedule(step) for step in range(total)]


@pytest.mark.parametrize("preset", sorted(path.stem for path in (PROJECT_ROOT / "experiments").glob("*.yaml")))
def test_trainer_cyclic_after_any_preset_restarts_the_lr(compose_cfg, preset):
    """A preset chooses its schedule through the trainer group, so trainer=cyclic replaces it whole."""
    trainer = compose_cfg([f"experiment={preset}", "trainer=cyclic"]).trainer
    assert trainer.scheduler == compose_cfg(["trainer=cyclic"]).trainer.scheduler
    lrs = learning_rates(trainer)
    restarts = [step for step in range(1, len(lrs)) if lrs[step] > lrs[step - 1] + 0.5]
    assert len(restarts) == 4, restarts  # five cycles over the preset's run


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
