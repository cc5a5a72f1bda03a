"""Landmarks end to end: train on synthetic faces, evaluate NME, export, reload, predict on an image."""

import json
from pathlib import Path

import numpy as np
import pytest
from mlflow.tracking import MlflowClient

from tests.helpers import LANDMARK_RUN, isolated_paths, run_module

DATA = [o for o in LANDMARK_RUN if o.startswith("dataset")]  # the same generated faces for every command
DATA_ONLY = DATA  # the same generated faces for every command


def output(result) -> str:
    return result.stdout + result.stderr


@pytest.fixture(scope="module")
def landmark_run(tmp_path_factory) -> Path:
    """A short HRNetV2-W18 run: 10 steps, validated before training and every 5 steps."""
    tmp = tmp_path_factory.mktemp("landmarks")
    args = [*LANDMARK_RUN, *isolated_paths(tmp), "trainer.max_steps=10", "trainer.eval_every_steps=5"]
    result = run_module("src.train", [*args, "optimizer.lr=1e-3", "trainer.scheduler.warmup_steps=2"])
    assert result.returncode == 0, output(result)[-4000:]
    return tmp


def test_training_lowers_nme_on_the_val_split(landmark_run):
    client = MlflowClient(f"sqlite:///{landmark_run / 'outputs' / 'mlflow.db'}")
    (run,) = client.search_runs([client.get_experiment_by_name("synthetic_faces").experiment_id])
    assert run.info.status == "FINISHED" and run.data.tags["task"] == "landmarks"
    nme = sorted((m.step, m.value) for m in client.get_metric_history(run.info.run_id, "val/nme"))
    assert [step for step, _ in nme] == [0, 5, 10]
    assert nme[-1][1] < 0.6 * nme[0][1], nme  # the untrained model's points are far off
    for key in ("val/nme_eyes", "val/nme_mouth", "val/failure_rate", "val/loss", "train/loss", "best/val/nme"):
        assert client.get_metric_history(run.info.run_id, key), key
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id, "samples")}
    assert "samples/step_000010.png" in artifacts
    assert (landmark_run / "run" / "checkpoints" / "best.pt").is_file()


def test_evaluate_on_a_landmark_checkpoint_writes_nme_metrics_and_pictures(landmark_run):
    """`src.evaluate` learns the task from the checkpoint: no task= on the command line."""
    run_dir = landmark_run / "evaluate"
    paths = [*isolated_paths(landmark_run)[:3], f"hydra.run.dir={run_dir}"]
    args = [f"checkpoint={landmark_run / 'run'}", "split=test", "evaluation.num_pictures=3", *DATA, *paths]
    result = run_module("src.evaluate", args)
    assert result.returncode == 0, output(result)[-4000:]
    assert "NME (bbox) on 4 images" in result.stdout and "failure rate" in result.stdout
    report = json.loads((run_dir / "metrics.json").read_text())
    metrics = report["metrics"]
    assert report["split"] == "test" and metrics["images"] == 4
    assert 0 < metrics["nme"] < 1 and {"nme_contour", "nme_eyes", "nme_mouth", "failure_rate"} <= set(metrics)
    assert len((run_dir / "per_image.csv").read_text().splitlines()) == 5
    assert [p.name for p in (run_dir / "visualizations").iterdir()] == ["samples_000.png"]
    client = MlflowClient(f"sqlite:///{landmark_run / 'outputs' / 'mlflow.db'}")
    runs = client.search_runs(
        [client.get_experiment_by_name("synthetic_faces").experiment_id], "tags.job = 'evaluate'"
    )
    assert len(runs) == 1 and runs[0].data.metrics["test/nme"] == pytest.approx(metrics["nme"])


def test_export_reloads_without_the_trainer_and_predicts_the_same(landmark_run):
    import torch

    from src.data.mask_io import read_image
    from src.tasks.landmarks.export import load_exported
    from src.tasks.landmarks.predictor import LandmarkPredictor
    from src.utils.checkpoint_io import read_checkpoint

    output_file = landmark_run / "export" / "animal_character_hrnetv2.pth"
    paths = [*isolated_paths(landmark_run)[:3], f"hydra.run.dir={landmark_run / 'export_run'}"]
    result = run_module("src.export", [f"checkpoint={landmark_run / 'run'}", f"output={output_file}", *paths])
    assert result.returncode == 0, output(result)[-4000:]
    state = torch.load(output_file, weights_only=True)
    assert all(isinstance(v, torch.Tensor) for v in state.values()) and "head.final_layer.3.weight" in state
    assert "model_config" in output_file.with_suffix(".yaml").read_text()

    exported = load_exported(output_file)
    trained = LandmarkPredictor.from_checkpoint(
        read_checkpoint(landmark_run / "run" / "checkpoints" / "best.pt"), "best"
    )
    faces = landmark_run / "data" / "synthetic_faces"
    for name in (faces / "test.txt").read_text().split()[:2]:
        image = read_image(faces / name)
        a, b = exported.predict(image), trained.predict(image, (10, 10, 80, 80))
        assert np.array_equal(a.points, trained.predict(image).points)
        assert a.points.shape == (28, 2) and not np.array_equal(a.points, b.points)  # the box matters

    predicted = landmark_run / "predicted"
    image = faces / (faces / "test.txt").read_text().split()[0]
    args = [f"image={image}", f"checkpoint={output_file}", f"output_dir={predicted}", "box=[20,20,90,90]", *paths]
    result = run_module("src.predict", args)
    assert result.returncode == 0, output(result)[-4000:]
    record = json.loads((predicted / f"{image.stem}_landmarks.json").read_text())
    expected = exported.predict(read_image(image), (20, 20, 90, 90)).points
    assert np.allclose(record["points"], expected, atol=0.01) and record["scheme"] == "anime_face_28"
    picture = read_image(predicted / f"{image.stem}_landmarks.png")
    assert max(picture.shape[:2]) >= 512 and (picture == [255, 0, 0]).all(-1).any()  # mouth points, in red
