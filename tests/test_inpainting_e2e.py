"""Inpainting end to end, as a user runs it: prepare -> train -> evaluate -> inpaint -> export."""

from __future__ import annotations

import re

import cv2
import numpy as np
import torch

from src.data.inpaint_pairs import find_inpaint_pairs
from src.tasks.inpainting.inference import load_generator
from src.tracking.checkpoints import read_trained_checkpoint
from tests.helpers import isolated_paths, run_module
from tests.inpaint_helpers import INPAINT_RUN, logged_metric, output, prepared_samples


def table_row(text: str, name: str) -> list[float]:
    line = next(line for line in text.splitlines() if line.startswith(name))
    return [float(v) for v in re.findall(r"-?\d+\.\d{4}", line)]


def test_prepare_train_evaluate_inpaint_export(tmp_path, train_run):
    root = prepared_samples(tmp_path)
    trained = train_run(
        *INPAINT_RUN, f"dataset.root={root}", "trainer.max_epochs=12", "trainer.eval_every_steps=12", fast=False
    )
    assert trained.returncode == 0, output(trained)[-4000:]
    psnr = logged_metric(trained, "hole_psnr")
    run = tmp_path / "run"

    evaluated = run_module(
        "src.evaluate",
        [*isolated_paths(tmp_path / "eval"), f"checkpoint={run}", "dataset=inpaint", f"dataset.root={root}",
         "compare=true", "device=cpu"],
    )  # fmt: skip
    assert evaluated.returncode == 0, output(evaluated)[-4000:]
    trained_row, untrained_row = table_row(evaluated.stdout, "best.pt"), table_row(evaluated.stdout, "untrained")
    assert trained_row[0] > untrained_row[0] + 1.0  # hole PSNR
    assert abs(trained_row[0] - max(psnr)) < 0.5  # the same figure training logged (whole samples both times)
    assert list((tmp_path / "eval" / "run").glob("inpainting_*.png"))

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


def test_inpaint_refuses_a_mask_of_another_size_naming_it(tmp_path, train_run):
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
    assert result.returncode == 1
    assert f"{small} is 10x10 but {pair.image} is 80x80" in output(result)
