"""Files from someone else (checkpoints, exports, MLflow artifacts) are data: they never run code.

Each payload below is what an attacker would write into checkpoint metadata or an exported YAML;
each is fed through each way a file reaches the loaders, and the test checks both the refusal and
that the file or folder the payload would create does not exist.
"""

from __future__ import annotations

import copy
import os
from pathlib import Path

import mlflow
import numpy as np
import pytest
import torch
import yaml

from src.errors import CheckpointError, ConfigError
from src.models.sam2.build import build_sam2_model
from src.tasks.landmarks.export import load_exported
from src.tasks.landmarks.predictor import LandmarkPredictor
from src.tracking.checkpoints import read_trained_checkpoint, write_export
from src.utils.checkpoint_io import read_checkpoint
from tests.helpers import compose_config, isolated_paths, run_module


class MakesFolder:
    """A pickle that creates a folder when unpickled without `weights_only`."""

    def __init__(self, path: Path):
        self.path = str(path)

    def __reduce__(self):
        return os.makedirs, (self.path,)


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> dict:
    """A landmark checkpoint as src.train writes it (HRNetV2-W18 at 64 px, random weights)."""
    from src.tasks.landmarks.task import LandmarkTask

    tmp = tmp_path_factory.mktemp("security")
    overrides = ["task=landmarks", "dataset=synthetic_faces", "model=hrnetv2_w18", "model.image_size=64"]
    cfg = compose_config("train", [*overrides, *isolated_paths(tmp)])
    torch.manual_seed(0)
    return LandmarkTask(cfg, torch.device("cpu")).export_weights()


def payloads(target: Path, tmp: Path) -> dict[str, tuple[str, object]]:
    """name -> (metadata key path, value) of each attack; every one would create `target`."""
    pickled = tmp / "remote.pt"
    torch.save(MakesFolder(target), pickled)
    foreign = tmp / "evil.yaml"
    foreign.write_text(yaml.safe_dump({"model": {"_target_": "os.makedirs", "name": str(target)}}))
    return {
        "nested makedirs": (
            "backbone",
            {"_target_": "builtins.dict", "x": {"_target_": "os.makedirs", "_args_": [str(target)]}},
        ),
        "file write": ("backbone", {"_target_": "src.utils.atomic.write_text_atomic", "_args_": ["x", str(target)]}),
        "torch.load": ("backbone", {"_target_": "torch.load", "f": str(pickled), "weights_only": False}),
        "torch.hub": ("backbone", {"_target_": "torch.hub.load_state_dict_from_url", "url": pickled.as_uri()}),
        "foreign sam2_config": ("sam2_config", str(foreign)),
        "heatmap target": ("heatmap", {"_target_": "os.makedirs", "name": str(target)}),
    }


def poisoned(checkpoint: dict, key: str, value: object) -> dict:
    bad = copy.deepcopy(checkpoint)
    if key == "heatmap":
        bad["meta"]["heatmap"] = value
    else:
        bad["meta"]["model_config"].pop("backbone")
        bad["meta"]["model_config"][key] = value
    return bad


ATTACKS = ["nested makedirs", "file write", "torch.load", "torch.hub", "foreign sam2_config", "heatmap target"]


@pytest.mark.parametrize("attack", ATTACKS)
def test_payloads_in_exports_checkpoints_and_mlflow_runs_are_refused(checkpoint, tmp_path, attack):
    target = tmp_path / "created_by_payload"
    key, value = payloads(target, tmp_path)[attack]
    bad = poisoned(checkpoint, key, value)
    where = "heatmap" if key == "heatmap" else f"model_config.{key}"

    export, _ = write_export(bad, tmp_path / "export" / "m.pth")  # an exported .pth + .yaml
    with pytest.raises(CheckpointError, match=rf"m\.pth meta\.{where}"):
        load_exported(export)

    best = tmp_path / "best.pt"  # a re-saved best.pt
    torch.save(bad, best)
    with pytest.raises(CheckpointError, match=rf"best\.pt meta\.{where}"):
        weights = read_trained_checkpoint(str(best), "sqlite:///unused.db")
        LandmarkPredictor.from_checkpoint(weights.checkpoint, weights.source)

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"  # the same file as an MLflow artifact, by run id
    mlflow.set_tracking_uri(uri)
    with mlflow.start_run() as run:
        mlflow.log_artifact(str(best), "checkpoints")
    with pytest.raises(CheckpointError, match=rf"meta\.{where}"):
        weights = read_trained_checkpoint(run.info.run_id, uri)
        LandmarkPredictor.from_checkpoint(weights.checkpoint, weights.source)

    assert not target.exists()


def test_the_command_line_refuses_a_poisoned_export_in_one_line(checkpoint, tmp_path):
    target = tmp_path / "created_by_payload"
    key, value = payloads(target, tmp_path)["nested makedirs"]
    export, _ = write_export(poisoned(checkpoint, key, value), tmp_path / "m.pth")
    image = tmp_path / "face.png"
    import cv2

    cv2.imwrite(str(image), np.full((64, 64, 3), 127, np.uint8))
    for entry, args in (("src.predict", [f"image={image}"]), ("src.evaluate", ["dataset=synthetic_faces"])):
        result = run_module(entry, [f"checkpoint={export}", *args, *isolated_paths(tmp_path)])
        printed = result.stdout + result.stderr
        assert result.returncode == 1, printed[-2000:]
        assert "meta.model_config.backbone" in printed and "expected a backbone key (hrnet_w18)" in printed
        assert "Traceback" not in printed
    assert not target.exists()


def test_a_checkpoint_written_before_registry_keys_still_loads_and_predicts_the_same(checkpoint):
    legacy = copy.deepcopy(checkpoint)
    legacy["meta"]["model_config"]["backbone"] = {
        "_target_": "src.tasks.landmarks.model.TimmBackbone",
        "name": "hrnet_w18",
        "pretrained": False,
        "feature_location": "",
        "out_indices": [1, 2, 3, 4],
    }
    legacy["meta"]["heatmap"]["_target_"] = "src.tasks.landmarks.heatmaps.HeatmapCodec"
    image = np.random.default_rng(0).integers(0, 255, (80, 96, 3), dtype=np.uint8)
    old = LandmarkPredictor.from_checkpoint(legacy, "old/best.pt").predict(image)
    new = LandmarkPredictor.from_checkpoint(checkpoint, "new/best.pt").predict(image)
    np.testing.assert_array_equal(old.points, new.points)


def test_a_legacy_target_with_other_options_is_refused(checkpoint):
    legacy = copy.deepcopy(checkpoint)
    legacy["meta"]["model_config"]["backbone"] = {
        "_target_": "src.tasks.landmarks.model.TimmBackbone",
        "name": "resnet50",
        "feature_location": "",
        "out_indices": [1, 2, 3, 4],
    }
    with pytest.raises(CheckpointError, match=r"expected a backbone key \(hrnet_w18\)"):
        LandmarkPredictor.from_checkpoint(legacy, "old/best.pt")


@pytest.mark.parametrize("config", ["/tmp/evil.yaml", "../../evil.yaml", "configs/sam2/../../../evil.yaml"])
def test_sam2_configs_outside_the_packaged_four_are_refused_even_from_conf(config):
    with pytest.raises(ConfigError, match=r"model\.sam2_config=.*expected a SAM2\.1 size \(tiny, small, base_plus"):
        build_sam2_model(config, 64)


def test_a_pickle_with_code_is_refused_and_does_not_run(tmp_path):
    target = tmp_path / "created_by_pickle"
    torch.save({"model": {}, "meta": MakesFolder(target)}, tmp_path / "evil.pt")
    with pytest.raises(CheckpointError, match="weights_only=True"):
        read_checkpoint(tmp_path / "evil.pt")
    assert not target.exists()
