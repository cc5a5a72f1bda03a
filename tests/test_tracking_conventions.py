"""What a training run shows in MLflow 3: comparable params, its dataset, system metrics, model-training mode."""

import json
import os
import re
from pathlib import Path

import mlflow
import mlflow.pyfunc
import mlflow.pytorch
import numpy as np
import pandas as pd
import pytest
import torch
from mlflow.models import Model
from mlflow.tracking import MlflowClient
from PIL import Image

from src.tasks.segmentation.user_prompts import format_prompt
from src.tracking.params import comparable_params
from tests.helpers import FAST_RUN, isolated_paths, run_module


@pytest.fixture(scope="module")
def tracked_run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("tracked")
    os.environ["MLFLOW_SYSTEM_METRICS_SAMPLING_INTERVAL"] = "1"  # inherited by the run: a sample every second
    try:
        result = run_module(
            "src.train",
            [
                *FAST_RUN,
                *isolated_paths(tmp),
                "trainer.max_steps=4",
                "logger.log_checkpoint=false",
                "logger.register_as=shapes",
            ],
        )
    finally:
        del os.environ["MLFLOW_SYSTEM_METRICS_SAMPLING_INTERVAL"]
    assert result.returncode == 0, (result.stdout + result.stderr)[-4000:]
    client = MlflowClient(f"sqlite:///{tmp / 'outputs' / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("synthetic")
    (run,) = client.search_runs([experiment.experiment_id])
    return tmp, client, experiment, run, result.stdout + result.stderr


def test_params_are_what_a_person_compares_and_provenance_stays_in_the_config_artifact(tracked_run):
    _, client, _, run, _ = tracked_run
    params = run.data.params
    assert params["choice.model"] == "tiny" and params["choice.loss"] == "dice_focal"
    assert params["optimizer.lr"] and params["trainer.batch_size"] == "2"
    leaked = [key for key in params if key.startswith(("paths.", "hydra.", "logger.")) or "checkpoint_url" in key]
    assert not leaked and "model.checkpoint_sha256" not in params and "dataset.root" not in params
    config = client.download_artifacts(run.info.run_id, "config/config_resolved.yaml")
    assert "checkpoint_sha256" in Path(config).read_text()  # provenance is kept, where it is complete


def test_the_dataset_is_an_mlflow_input_with_its_split_sizes(tracked_run):
    run = tracked_run[3]
    (logged,) = run.inputs.dataset_inputs
    assert logged.dataset.name == "synthetic" and len(logged.dataset.digest) == 12
    assert json.loads(logged.dataset.profile) == {"train": 8, "val": 4}
    assert json.loads(logged.dataset.source)["uri"].endswith("data/synthetic")
    assert [tag.value for tag in logged.tags if tag.key == "mlflow.data.context"] == ["training"]


def test_system_metrics_and_the_model_training_view_are_on_by_default(tracked_run):
    _, _, experiment, run, _ = tracked_run
    assert experiment.tags["mlflow.experimentKind"] == "custom_model_development"
    system = [key for key in run.data.metrics if key.startswith("system/")]
    assert "system/cpu_utilization_percentage" in system and "system/system_memory_usage_megabytes" in system


def test_provenance_keys_are_left_out():
    config = {
        "model": {"name": "tiny", "checkpoint_url": "https://x", "checkpoint_bytes": 1},
        "paths": {"a": "b"},
        "optimizer": {"_target_": "torch.optim.AdamW", "lr": 1e-4},
        "dataset": {"root": "/d", "name": "k"},
    }
    assert comparable_params(config, {"choice.model": "tiny"}) == {
        "choice.model": "tiny",
        "model.name": "tiny",
        "optimizer.lr": "0.0001",
        "dataset.name": "k",
    }


def test_the_checkpoint_upload_is_a_choice_and_the_disk_use_is_printed(tracked_run):
    tmp, client, _, run, output = tracked_run
    assert (tmp / "run" / "checkpoints" / "best.pt").is_file()
    assert "checkpoints" not in [artifact.path for artifact in client.list_artifacts(run.info.run_id)]
    assert re.search(r"the run folder .* holds \d+\.\d MB", output)


def test_the_best_model_is_registered_and_loads_with_mlflow_pytorch(tracked_run):
    tmp, client, _, run, _ = tracked_run
    (version,) = client.search_model_versions("name='shapes'")
    assert version.run_id == run.info.run_id and run.data.tags["registered_model"] == "shapes/1"
    mlflow.set_tracking_uri(client.tracking_uri)
    model = mlflow.pytorch.load_model("models:/shapes/1")
    best = torch.load(tmp / "run" / "checkpoints" / "best.pt", weights_only=True)["model"]
    assert all(torch.equal(value, best[key]) for key, value in model.state_dict().items())


def test_the_registered_model_predicts_masks_through_pyfunc_from_plain_tensors(tracked_run, tmp_path):
    client = tracked_run[1]
    mlflow.set_tracking_uri(client.tracking_uri)
    flavour = Model.load("models:/shapes/1").flavors["python_function"]
    assert flavour["loader_module"] == "src.tasks.segmentation.pyfunc" and flavour["data"].endswith("best.pt")
    model = mlflow.pyfunc.load_model("models:/shapes/1")
    file = tmp_path / "shapes.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (90, 120, 3), dtype=np.uint8)).save(file)
    array = np.random.default_rng(1).integers(0, 255, (48, 64, 3), dtype=np.uint8)
    printed = format_prompt(torch.tensor([[10.0, 20.0], [60.0, 70.0], [50.0, 40.0]]), torch.tensor([2, 3, 1]))
    frame = pd.DataFrame(
        {
            "image": [str(file), str(file), array],
            "prompt": [printed, "box=10,20,60,70 points=50,40", "points=[[30,20,1],[5,5,0]]"],
        }
    )
    out = model.predict(frame)
    assert [mask.shape for mask in out["mask"]] == [(90, 120), (90, 120), (48, 64)]
    assert all(mask.dtype == bool for mask in out["mask"]) and out["score"].between(-1, 2).all()
    assert np.array_equal(out["mask"][0], out["mask"][1])  # the printed and the typed form: the same prompt
