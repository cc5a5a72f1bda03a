"""`python -m src.evaluate`: every prompt mode on fixed prompts, comparison mode, the report and its MLflow run."""

import csv
import shlex
from collections import defaultdict
from pathlib import Path

import numpy as np
import pytest
import torch
from mlflow.tracking import MlflowClient
from PIL import Image

from src.data.mask_io import read_image, read_instance_mask
from src.data.user_input import parse_box
from src.errors import ConfigError
from src.evaluate import evaluate
from src.tasks.segmentation.losses import mask_iou
from src.tasks.segmentation.predictor import load_predictor
from src.tasks.segmentation.user_prompts import parse_points, user_prompts
from tests.helpers import compose_config, run_module

MODES = ["point", "points", "box", "clicks"]
TUNED_FIXED_PROMPTS = {("fine-tuned", "box"), ("fine-tuned", "points")}


def common_args(run: dict, report: Path) -> list[str]:
    """The fine-tuned run's stores and synthetic data; the report goes to `report`."""
    root = run["root"]
    return [
        f"paths.output_dir={root / 'outputs'}",
        f"paths.data_dir={run['data_dir']}",
        f"paths.cache_dir={root / 'cache'}",
        "dataset.generate.num_train=8",
        "dataset.generate.num_val=4",
        "dataset.generate.image_size=128",
        "evaluation.prompts.max_clicks=3",
        "evaluation.num_pictures=2",
        f"paths.run_dir={report}",
    ]


def rows_of(path: Path) -> list[dict]:
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


@pytest.fixture(scope="module")
def compared(fine_tuned_run, tmp_path_factory):
    """The original model against the fine-tuned one, given as the MLflow run id a user copies from the UI."""
    report = tmp_path_factory.mktemp("compare")
    args = [
        *common_args(fine_tuned_run, report),
        f"hydra.run.dir={report}",
        "model.checkpoint=null",  # the original model: a random initialisation, since nothing downloads here
        f"checkpoint={fine_tuned_run['run_id']}",
        "compare=true",
    ]
    result = run_module("src.evaluate", args)
    assert result.returncode == 0, (result.stdout + result.stderr)[-4000:]
    return report, result.stdout


def test_comparison_prints_seed_001s_table_and_writes_the_report(compared):
    report, stdout = compared
    assert "| prompt | metric | original | fine-tuned | change" in stdout.replace("  ", " ").replace("  ", " ")
    summary = {(r["model"], r["mode"]): r for r in rows_of(report / "summary.csv")}
    for mode in MODES:
        before, after = float(summary[("original", mode)]["miou"]), float(summary[("fine-tuned", mode)]["miou"])
        line = next(line for line in stdout.splitlines() if line.startswith(f"| {mode} ") and "mIoU" in line)
        assert f"{100 * before:.2f}%" in line and f"{100 * after:.2f}%" in line
        assert f"{100 * (after - before):+.2f} pp" in line
    noc = summary[("fine-tuned", "clicks")]
    assert 1 <= float(noc["noc85"]) <= float(noc["noc90"]) <= 3
    assert {p.name for p in (report / "pictures").iterdir()} == {"val_0000.png", "val_0001.png"}
    picture = np.asarray(Image.open(report / "pictures" / "val_0000.png"))
    assert picture.shape[1] >= 4 * 512  # image | ground truth | original | fine-tuned
    assert (report / "clicks.png").is_file() and "NoC@90" in (report / "summary.md").read_text()


def replayed_points(prompt: str) -> list:
    """The clicks of a per_image.csv prompt, as `src.predict` reads them."""
    return parse_points(compose_config("predict", shlex.split(prompt)).points)


def test_every_object_gets_the_same_prompts_under_both_models(compared):
    report, _ = compared
    rows = rows_of(report / "per_image.csv")
    by_key = defaultdict(dict)
    for row in rows:
        assert 0 <= float(row["iou"]) <= 1 and 0 <= float(row["dice"]) <= 1
        by_key[(row["mode"], row["image"], row["object"])][row["model"]] = row
    assert {mode for mode, _, _ in by_key} == set(MODES)
    objects = {(image, obj) for _, image, obj in by_key}
    assert len(objects) >= 4 and len(rows) == 2 * len(MODES) * len(objects)
    for (mode, _, _), pair in by_key.items():
        original, tuned = pair["original"]["prompt"], pair["fine-tuned"]["prompt"]
        if mode == "clicks":  # later clicks answer each model's own mistakes; the first is the object's centre
            original_clicks, tuned_clicks = replayed_points(original), replayed_points(tuned)
            assert original_clicks[0] == tuned_clicks[0] and len(tuned_clicks) == 3
            ious = [float(v) for v in pair["fine-tuned"]["ious_per_click"].split(";")]
            assert ious[-1] == pytest.approx(float(pair["fine-tuned"]["iou"]), abs=1e-4)
        else:
            assert original == tuned
    summary = {(r["model"], r["mode"]): r for r in rows_of(report / "summary.csv")}
    tuned_points = [float(r["iou"]) for r in rows if r["model"] == "fine-tuned" and r["mode"] == "points"]
    assert float(summary[("fine-tuned", "points")]["miou"]) == pytest.approx(np.mean(tuned_points), abs=1e-5)


def test_a_row_replayed_with_the_predictor_gives_its_iou(compared, fine_tuned_run):
    report, _ = compared
    predictor, _ = load_predictor(compose_config("predict", [f"checkpoint={fine_tuned_run['best']}", "device=cpu"]))
    data = fine_tuned_run["data_dir"] / "synthetic"
    rows = [r for r in rows_of(report / "per_image.csv") if (r["model"], r["mode"]) in TUNED_FIXED_PROMPTS]
    for row in rows[:6]:
        image = read_image(data / "images" / "val" / f"{row['image']}.jpg")
        gt = torch.from_numpy(read_instance_mask(data / "masks" / "val" / f"{row['image']}.png") == int(row["object"]))
        replay = compose_config("predict", shlex.split(row["prompt"]))  # the row's prompt as src.predict reads it
        prompts = user_prompts(parse_points(replay.points), parse_box(replay.box))
        mask = predictor.predict(predictor.encode(image), prompts).best_masks()
        assert mask_iou(mask, gt[None]).item() == pytest.approx(float(row["iou"]), abs=1e-4), row


def test_the_evaluation_is_its_own_mlflow_run_under_the_training_run(compared, fine_tuned_run):
    client = MlflowClient(fine_tuned_run["tracking_uri"])
    experiment = client.get_experiment_by_name("synthetic")
    (run,) = client.search_runs([experiment.experiment_id], "tags.job = 'evaluate'")
    assert run.info.status == "FINISHED" and run.info.run_id != fine_tuned_run["run_id"]
    assert run.data.tags["training_run_id"] == fine_tuned_run["run_id"]
    assert run.data.tags["mlflow.parentRunId"] == fine_tuned_run["run_id"]  # nested under it in the UI
    metrics = run.data.metrics
    for mode in MODES:
        change = metrics[f"finetuned/{mode}/miou"] - metrics[f"original/{mode}/miou"]
        assert metrics[f"change/{mode}/miou"] == pytest.approx(change)
    history = client.get_metric_history(run.info.run_id, "finetuned/clicks/miou_by_click")
    assert [m.step for m in sorted(history, key=lambda m: m.step)] == [1, 2, 3]
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert {"per_image.csv", "summary.csv", "summary.md", "clicks.png", "pictures"} <= artifacts
    assert len(client.list_artifacts(run.info.run_id, "pictures")) == 2


def test_identical_weights_compare_as_identical(fine_tuned_run, tmp_path):
    """Same weights on both sides: every number and prompt agrees, so any difference is the weights'."""
    best = fine_tuned_run["best"]
    cfg = compose_config(
        "evaluate",
        [
            *common_args(fine_tuned_run, tmp_path),
            f"logger.tracking_uri=sqlite:///{tmp_path / 'mlflow.db'}",
            f"model.checkpoint={best}",
            f"checkpoint={best}",
            "compare=true",
            "evaluation.prompts.modes=[point,clicks]",
            "evaluation.prompts.max_clicks=2",
        ],
    )
    summary = evaluate(cfg)
    for mode in ("point", "clicks"):
        assert summary[("original", mode)] == summary[("fine-tuned", mode)]
    pairs = defaultdict(dict)
    for row in rows_of(tmp_path / "per_image.csv"):
        pairs[(row["mode"], row["image"], row["object"])][row.pop("model")] = row
    assert {mode for mode, _, _ in pairs} == {"point", "clicks"}
    assert all(pair["original"] == pair["fine-tuned"] for pair in pairs.values())
    with pytest.raises(ConfigError, match="compare=true compares the original model with checkpoint"):
        evaluate(compose_config("evaluate", ["compare=true"]))


def test_training_validation_reports_the_number_evaluate_reports(tmp_path):
    """The metric a sweep optimises (val/miou) is src.evaluate's point-mode mIoU on the same split."""
    from mlflow.tracking import MlflowClient

    from tests.helpers import FAST_RUN, isolated_paths

    train = [*FAST_RUN, *isolated_paths(tmp_path), "trainer.max_steps=2", "optimizer.lr=1e-4"]
    result = run_module("src.train", [*train, "data.cache_embeddings=false"])  # both encode each image alone
    assert result.returncode == 0, (result.stdout + result.stderr)[-4000:]
    client = MlflowClient(f"sqlite:///{tmp_path / 'outputs' / 'mlflow.db'}")
    (run,) = client.search_runs([client.get_experiment_by_name("synthetic").experiment_id])
    final = max(client.get_metric_history(run.info.run_id, "val/miou"), key=lambda m: m.step)
    assert final.step == 2

    report = tmp_path / "report"
    data = [o for o in FAST_RUN if o.startswith("dataset.")]
    args = [f"checkpoint={tmp_path / 'run' / 'checkpoints' / 'last.pt'}", "evaluation.prompts.modes=[point]", *data]
    paths = [*isolated_paths(tmp_path)[:3], f"hydra.run.dir={report}", f"paths.run_dir={report}"]
    result = run_module("src.evaluate", [*args, *paths])
    assert result.returncode == 0, (result.stdout + result.stderr)[-4000:]
    (row,) = rows_of(report / "summary.csv")
    assert row["mode"] == "point" and 0 < final.value < 1
    assert float(row["miou"]) == pytest.approx(final.value, abs=1e-6)
