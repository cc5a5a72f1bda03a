"""`python -m src.train` end to end: MLflow holds the run, the checkpoint loads in stock SAM2, resume."""

from pathlib import Path

import numpy as np
import pytest
import torch
from mlflow.tracking import MlflowClient
from sam2.build_sam import build_sam2
from sam2.sam2_image_predictor import SAM2ImagePredictor

from src.utils.checkpoint_io import read_checkpoint
from src.utils.folders import folder_size

TINY = "configs/sam2.1/sam2.1_hiera_t.yaml"


def mlflow_runs(tmp_path: Path, experiment: str = "synthetic"):
    client = MlflowClient(f"sqlite:///{tmp_path / 'outputs' / 'mlflow.db'}")
    exp = client.get_experiment_by_name(experiment)
    return client, client.search_runs([exp.experiment_id]) if exp else []


def output(result) -> str:
    return result.stdout + result.stderr


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    """One short training run shared by the checks below."""
    from tests.helpers import FAST_RUN, isolated_paths, run_module

    tmp = tmp_path_factory.mktemp("run")
    result = run_module("src.train", [*FAST_RUN, *isolated_paths(tmp), "trainer.max_steps=4", "optimizer.lr=1e-4"])
    assert result.returncode == 0, output(result)[-4000:]
    return tmp, result


def test_mlflow_holds_params_tags_metrics_and_artifacts(finished_run):
    tmp, _ = finished_run
    client, runs = mlflow_runs(tmp)
    assert len(runs) == 1
    run = runs[0]
    assert run.info.status == "FINISHED"
    params, tags = run.data.params, run.data.tags
    assert params["model.name"] == "tiny" and params["model.image_size"] == "128"
    assert params["optimizer.lr"] == "0.0001" and params["loss.focal_weight"] == "20.0"
    assert "trainer.max_steps=4" in tags["overrides"] and run.info.run_name.startswith("model.checkpoint=null")
    assert tags["init"] == "random" and tags["device"] == "cpu" and tags["precision"] == "float32"
    assert len(tags["git.commit"]) in (40, 7) and tags["git.dirty"] in ("true", "false", "unknown")
    assert tags["version.torch"] == torch.__version__.split("+")[0] or tags["version.torch"] == torch.__version__
    history = {
        key: [m.step for m in client.get_metric_history(run.info.run_id, key)]
        for key in (
            "train/loss",
            "train/focal",
            "train/dice",
            "train/iou",
            "train/lr",
            "train/prompts_per_s",
            "val/miou",
            "val/dice",
        )
    }
    assert history["train/loss"] == [1, 2, 3, 4]
    assert history["val/miou"] == [0, 2, 4] and history["val/dice"] == [0, 2, 4]
    assert all(history[key] for key in history)
    artifacts = {
        a.path
        for folder in ("checkpoints", "config", "samples")
        for a in client.list_artifacts(run.info.run_id, folder)
    }
    assert {
        "checkpoints/best.pt",
        "config/config_resolved.yaml",
        "samples/step_000004.png",
        "samples/curves.png",
    } <= artifacts


def test_the_best_checkpoint_loads_in_stock_sam2_and_predicts(finished_run, sam2_hydra, tmp_path):
    tmp, _ = finished_run
    client, (run,) = mlflow_runs(tmp)
    best = Path(client.download_artifacts(run.info.run_id, "checkpoints/best.pt", str(tmp_path)))
    stock = build_sam2(TINY, str(best), device="cpu", hydra_overrides_extra=["++model.image_size=128"])
    ours = torch.load(tmp / "run" / "checkpoints" / "best.pt", weights_only=True)
    for key, value in stock.state_dict().items():
        assert torch.equal(value, ours["model"][key]), key
    assert ours["meta"]["model"] == "tiny" and ours["meta"]["image_size"] == 128
    predictor = SAM2ImagePredictor(stock)
    predictor._bb_feat_sizes = [(32, 32), (16, 16), (8, 8)]  # stock assumes 1024 px
    image = np.random.default_rng(0).integers(0, 255, (90, 120, 3), dtype=np.uint8)
    predictor.set_image(image)
    masks, scores, _ = predictor.predict(point_coords=np.array([[60, 45]]), point_labels=np.array([1]))
    assert masks.shape == (3, 90, 120) and scores.shape == (3,)


def test_the_run_folder_holds_checkpoints_samples_and_log(finished_run):
    tmp, result = finished_run
    run_dir = tmp / "run"
    names = {p.name for p in (run_dir / "checkpoints").iterdir()}
    assert names == {"best.pt", "last.pt", "last_state.pt", "step_000000004"}  # the top three link into the step
    # the frozen encoder is stored once: best.pt, the training state, and a last.pt of the decoder's changes
    sizes = {name: (run_dir / "checkpoints" / name).stat().st_size for name in names - {"step_000000004"}}
    assert folder_size(run_dir / "checkpoints") < 1.3 * sizes["best.pt"] + sizes["last_state.pt"]
    state = torch.load(run_dir / "checkpoints" / "last_state.pt", weights_only=True)
    assert state["step"] == 4 and state["train_state"]["mlflow_run_id"]
    assert "optimizer" in state and "rng" in state and "model:" in state["config"]
    assert (run_dir / "samples" / "step_000000.png").is_file()
    assert (run_dir / "train.log").read_text().count("val/miou=") == 3
    assert "RANDOM weights" in output(result)


def test_resume_continues_from_the_saved_step_in_the_same_mlflow_run(train_run, tmp_path, finished_run):
    first = train_run("trainer.max_steps=2", "optimizer.lr=1e-4")
    assert first.returncode == 0, output(first)[-3000:]
    second = train_run("trainer.max_steps=4", "optimizer.lr=1e-4")  # same run folder: resumes
    assert second.returncode == 0, output(second)[-3000:]
    assert "resuming from" in output(second) and "at step 2" in output(second)
    client, runs = mlflow_runs(tmp_path)
    assert len(runs) == 1
    run_id = runs[0].info.run_id
    assert [m.step for m in client.get_metric_history(run_id, "train/loss")] == [1, 2, 3, 4]
    assert [m.step for m in client.get_metric_history(run_id, "val/miou")] == [0, 2, 4]
    # an interrupted-and-resumed run ends with exactly the weights of an uninterrupted one
    resumed = read_checkpoint(tmp_path / "run" / "checkpoints" / "last.pt")["model"]
    straight = read_checkpoint(finished_run[0] / "run" / "checkpoints" / "last.pt")["model"]
    assert resumed.keys() == straight.keys()
    for key in straight:
        assert torch.allclose(resumed[key], straight[key], atol=1e-6), key
    again = train_run("trainer.max_steps=4", "optimizer.lr=1e-4", "trainer.resume=false")
    assert again.returncode == 1 and "would overwrite" in output(again)


def test_init_from_starts_a_new_run_from_other_weights(train_run, tmp_path, finished_run):
    source = finished_run[0] / "run"
    result = train_run("trainer.max_steps=2", f"trainer.init_from={source}")
    assert result.returncode == 0, output(result)[-3000:]
    assert f"starting from the weights in {source / 'checkpoints' / 'best.pt'}" in output(result)
    _, runs = mlflow_runs(tmp_path)
    assert len(runs) == 1 and runs[0].data.tags["init"] == str(source)
