"""Inpainting end to end, as a user runs it: prepare -> train -> evaluate -> inpaint -> export."""

from __future__ import annotations

import re

import cv2
import numpy as np
import pytest
import torch
from mlflow.tracking import MlflowClient

from src.data.inpaint_pairs import find_inpaint_pairs
from src.data.mask_io import read_image
from src.errors import SamtuneError
from src.inpaint import inpaint
from src.tasks.inpainting.inference import grown, load_generator
from src.tasks.segmentation.object_masks import checkpoint_predictor, object_mask
from src.tracking.checkpoints import read_trained_checkpoint
from tests.helpers import compose_config, isolated_paths, run_module
from tests.inpaint_helpers import INPAINT_RUN, alexnet_weights, logged_metric, output, prepared_samples, tiny_segmenter


def table_row(text: str, name: str) -> list[float]:
    line = next(line for line in text.splitlines() if line.startswith(name))
    return [float(v) for v in re.findall(r"-?\d+\.\d{4}", line)]


def test_prepare_train_evaluate_inpaint_export(tmp_path, train_run):
    root = prepared_samples(tmp_path)
    lpips = alexnet_weights(tmp_path / "alexnet.pth")
    trained = train_run(
        *INPAINT_RUN, f"dataset.root={root}", "trainer.max_epochs=12", "trainer.eval_every_steps=12",
        "inpaint_loss=l1", f"inpaint_loss.lpips_weights={lpips}", fast=False,
    )  # fmt: skip
    assert trained.returncode == 0, output(trained)[-4000:]
    psnr, hole_lpips = logged_metric(trained, "hole_psnr"), logged_metric(trained, "hole_lpips")
    assert len(hole_lpips) == len(psnr) and "hole_lpips is skipped" not in output(trained)
    run = tmp_path / "run"

    evaluated = run_module(
        "src.evaluate",
        [*isolated_paths(tmp_path / "eval"), f"checkpoint={run}", "dataset=inpaint", f"dataset.root={root}",
         "compare=true", "device=cpu", f"lpips_weights={lpips}", "evaluation.num_pictures=2"],
    )  # fmt: skip
    assert evaluated.returncode == 0, output(evaluated)[-4000:]
    assert "hole_lpips" in next(line for line in evaluated.stdout.splitlines() if line.startswith("model"))
    trained_row, untrained_row = table_row(evaluated.stdout, "best.pt"), table_row(evaluated.stdout, "untrained")
    assert trained_row[0] > untrained_row[0] + 1.0  # hole PSNR
    assert abs(trained_row[0] - max(psnr)) < 0.5  # the same figure training logged (whole samples both times)
    assert abs(trained_row[2] - hole_lpips[psnr.index(max(psnr))]) < 1e-3  # hole LPIPS of the best weights
    client = MlflowClient(f"sqlite:///{tmp_path / 'eval' / 'outputs' / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("inpaint").experiment_id
    (evaluation,) = client.search_runs([experiment], "tags.job = 'evaluate'")
    metrics = evaluation.data.metrics
    assert metrics["checkpoint/hole_psnr"] == pytest.approx(trained_row[0], abs=1e-4)
    change = metrics["checkpoint/hole_lpips"] - metrics["untrained/hole_lpips"]
    assert metrics["change/hole_lpips"] == pytest.approx(change)
    artifacts = {a.path for a in client.list_artifacts(evaluation.info.run_id)}
    assert {"summary.md", "metrics.json", "pictures"} <= artifacts
    pictures = {a.path for a in client.list_artifacts(evaluation.info.run_id, "pictures")}
    assert pictures == {"pictures/inpainting_checkpoint.png", "pictures/inpainting_untrained.png"}

    pair = find_inpaint_pairs(root, "eval")[0]
    filled = tmp_path / "filled.png"
    single = run_module(
        "src.inpaint",
        [*isolated_paths(tmp_path / "inp"), f"image={pair.image}", f"mask={pair.mask}", f"checkpoint={run}",
         f"output={filled}"],
    )  # fmt: skip
    assert single.returncode == 0, output(single)[-4000:]
    original, result = cv2.imread(str(pair.image)), cv2.imread(str(filled))
    hole = cv2.imread(str(pair.mask), cv2.IMREAD_GRAYSCALE) > 127
    assert np.array_equal(result[~hole], original[~hole]) and not np.array_equal(result[hole], original[hole])

    segmenter = tiny_segmenter(tmp_path / "sam2_tiny.pt")  # random SAM2.1-tiny: a blob around the box
    box, dilate = "20,20,60,60", 2
    removal = [f"image={pair.image}", f"checkpoint={run}", f"segmenter={segmenter}", f"box='{box}'",
               f"dilate={dilate}", f"output={tmp_path / 'removed.png'}", "device=cpu"]  # fmt: skip
    inpaint(compose_config("inpaint", [*isolated_paths(tmp_path / "obj")[:3], *removal]))  # in-process: no start-up
    predictor = checkpoint_predictor(read_trained_checkpoint(str(segmenter), ""), "segmenter", "cpu", "fp32", "")
    expected = grown(object_mask(predictor, read_image(pair.image), None, box, pair.image.name), dilate)
    assert 0.05 < expected.mean() < 0.95  # the test's premise: an object, and pixels to fill it from
    used = cv2.imread(str(tmp_path / "removed_mask.png"), cv2.IMREAD_GRAYSCALE)
    assert np.array_equal(used > 127, expected)  # the mask written is the one filled: SAM2's, grown by dilate
    result = cv2.imread(str(tmp_path / "removed.png"))
    assert np.array_equal(result[~expected], original[~expected]) and not np.array_equal(
        result[expected], original[expected]
    )

    folder_args = [*isolated_paths(tmp_path / "inp"), f"image={root / 'eval'}", f"mask={root / 'eval'}",
                   f"checkpoint={run}", f"output={tmp_path / 'out'}"]  # fmt: skip
    images = sorted(p for p in (root / "eval").glob("*_C.png"))
    first = run_module("src.inpaint", folder_args)
    assert first.returncode == 0, output(first)[-4000:]
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == [p.name for p in images]
    again = run_module("src.inpaint", folder_args)
    assert f"inpainted 0 images into {tmp_path / 'out'} ({len(images)} were already there)" in again.stdout

    exported = run_module(
        "src.export", [*isolated_paths(tmp_path / "exp"), f"checkpoint={run}", f"output={tmp_path / 'gen.pth'}"]
    )
    assert exported.returncode == 0, output(exported)[-4000:]
    spec = (tmp_path / "gen.yaml").read_text()
    assert "generator: light_inpaint" in spec and "_target_" not in spec
    assert set(torch.load(tmp_path / "gen.pth", weights_only=True)) == set(
        load_generator(read_trained_checkpoint(str(run), ""), torch.device("cpu")).state_dict()
    )
    rebuilt = load_generator(read_trained_checkpoint(str(tmp_path / "gen.pth"), ""), torch.device("cpu"))
    image, mask = torch.rand(1, 3, 32, 32), torch.zeros(1, 1, 32, 32)
    mask[..., 8:20, 8:20] = 1
    reference = load_generator(read_trained_checkpoint(str(run), ""), torch.device("cpu"))
    assert torch.allclose(rebuilt(image, mask), reference(image, mask))


def test_bad_input_to_inpaint_is_one_line_naming_the_file(tmp_path, train_run):
    root = prepared_samples(tmp_path, train=2, val=1)
    trained = train_run(
        *INPAINT_RUN, f"dataset.root={root}", "trainer.max_steps=1", "trainer.eval_at_start=false", fast=False
    )
    assert trained.returncode == 0, output(trained)[-4000:]
    pair = find_inpaint_pairs(root, "eval")[0]
    small = tmp_path / "small_mask.png"
    cv2.imwrite(str(small), np.full((10, 10), 255, np.uint8))
    result = run_module(
        "src.inpaint",
        [*isolated_paths(tmp_path / "inp"), f"image={pair.image}", f"mask={small}", f"checkpoint={tmp_path / 'run'}"],
    )
    assert result.returncode == 1 and "Traceback" not in output(result)
    assert f"{small} is 10x10 but {pair.image} is 80x80" in output(result)

    def refused(*overrides: str) -> str:
        common = [*isolated_paths(tmp_path / "inp")[:3], f"checkpoint={tmp_path / 'run'}", "device=cpu"]
        with pytest.raises(SamtuneError) as caught:
            inpaint(compose_config("inpaint", [*common, *overrides]))
        assert "\n" not in str(caught.value)
        return str(caught.value)

    masks = {"empty": np.zeros((80, 80), np.uint8), "full": np.full((80, 80), 255, np.uint8)}
    for name, pixels in masks.items():
        cv2.imwrite(str(tmp_path / f"{name}.png"), pixels)
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"not an image")
    assert f"{tmp_path / 'empty.png'} has no hole" in refused(f"image={pair.image}", f"mask={tmp_path / 'empty.png'}")
    assert f"{tmp_path / 'full.png'} is all hole" in refused(f"image={pair.image}", f"mask={tmp_path / 'full.png'}")
    assert f"cannot read {broken}" in refused(f"image={broken}", f"mask={pair.mask}")
    assert f"cannot read {broken}" in refused(f"image={pair.image}", f"mask={broken}")

    segmenter = f"segmenter={tiny_segmenter(tmp_path / 'sam2_tiny.pt')}"
    image = f"image={pair.image}"
    assert "point (300, 20) is outside" in refused(image, segmenter, "points=[[300,20]]")
    assert "is not a list of numbers" in refused(image, segmenter, "points='a,b'")
    assert "both mask= and points=/box=" in refused(image, segmenter, "box=[1,1,20,20]", f"mask={pair.mask}")
    assert "points=/box= need segmenter=" in refused(image, "box=[1,1,20,20]")
    assert "expected the weights or run folder of python -m src.train task=segmentation" in refused(
        image, f"segmenter={tmp_path / 'run'}", "box=[1,1,20,20]"
    )
