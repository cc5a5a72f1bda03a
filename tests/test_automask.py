"""`python -m src.automask`: SAM2's generator settings from config, masks as PNG and COCO RLE, resume, memory."""

import json
import resource
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from pycocotools import mask as coco_mask

from src.config import PROJECT_ROOT
from tests.helpers import run_module


def output(result) -> str:
    return result.stdout + result.stderr


def automask_args(run: dict, image, out, *extra: str) -> list[str]:
    return [f"image={image}", f"checkpoint={run['run_dir']}", f"output_dir={out}", f"hydra.run.dir={out}/run", *extra]


@pytest.fixture
def folder(tmp_path, shapes_image):
    """Two small images with shapes, one of them a JPEG."""
    image, _ = shapes_image
    path = tmp_path / "pictures"
    path.mkdir()
    Image.fromarray(image).save(path / "a.png")
    Image.fromarray(np.ascontiguousarray(image[:, ::-1])).save(path / "b.jpg", quality=95)
    return {"a": path / "a.png", "b": path / "b.jpg"}


def test_masks_are_written_as_pngs_and_coco_rle_that_decode_back(fine_tuned_run, folder, tmp_path):
    settings = [
        "automask.points_per_side=4",  # a 4 x 4 grid of clicks
        "automask.points_per_batch=8",
        "automask.pred_iou_thresh=0",  # lightly trained weights: keep everything they find
        "automask.stability_score_thresh=0",
        "automask.box_nms_thresh=0.95",
    ]
    out = tmp_path / "masks"
    args = automask_args(fine_tuned_run, folder["a"].parent, out, *settings)
    result = run_module("src.automask", args)
    assert result.returncode == 0, output(result)[-3000:]
    assert "automask: 100%" in result.stderr and "2/2" in result.stderr  # progress over the folder
    grid = {(i + 0.5) * 128 / 4 for i in range(4)} | {(i + 0.5) * 96 / 4 for i in range(4)}
    for name, source in folder.items():
        document = json.loads((out / name / "masks.json").read_text())
        assert document["image"] == {"file_name": source.name, "height": 96, "width": 128}
        annotations = document["annotations"]
        assert 1 <= len(annotations) <= 3 * 16
        assert [a["area"] for a in annotations] == sorted((a["area"] for a in annotations), reverse=True)
        masks = []
        for annotation in annotations:
            decoded = coco_mask.decode(annotation["segmentation"]).astype(bool)
            png = np.asarray(Image.open(out / name / annotation["mask_file"])) > 0
            assert decoded.shape == (96, 128) and np.array_equal(decoded, png)
            assert annotation["area"] == decoded.sum() == coco_mask.area(annotation["segmentation"])
            ys, xs = np.nonzero(decoded)
            assert annotation["bbox"] == [xs.min(), ys.min(), xs.max() - xs.min(), ys.max() - ys.min()]
            assert 0 <= annotation["stability_score"] <= 1 and np.isfinite(annotation["predicted_iou"])
            assert {annotation["point_coords"][0][0], annotation["point_coords"][0][1]} <= grid
            masks.append(decoded)
        overlay = np.asarray(Image.open(out / name / "overlay.png"))
        covered = np.any(masks, axis=0)
        original = np.asarray(Image.open(source).convert("RGB"))
        assert overlay.shape == (96, 128, 3) and (overlay[covered] != original[covered]).any()  # masks are tinted

    again = run_module("src.automask", args)
    assert again.returncode == 0 and "2 of 2 images already have masks" in output(again), output(again)[-3000:]


def test_running_out_of_memory_names_the_settings_to_lower(fine_tuned_run, tmp_path):
    """A real allocation failure: 256 clicks' masks of a 2048 px image at once need 13 GB; the process may use 8."""
    y, x = np.mgrid[0:2048, 0:2048]
    Image.fromarray(np.stack([x % 256, y % 256, (x + y) % 256], -1).astype(np.uint8)).save(tmp_path / "big.png")

    def limit_memory() -> None:
        resource.setrlimit(resource.RLIMIT_AS, (8 << 30, 8 << 30))

    settings = ["automask.points_per_side=16", "automask.points_per_batch=256"]
    args = automask_args(fine_tuned_run, tmp_path / "big.png", tmp_path / "out", *settings)
    result = subprocess.run(
        [sys.executable, "-m", "src.automask", *args],
        cwd=PROJECT_ROOT,
        capture_output=True,
        text=True,
        timeout=600,
        preexec_fn=limit_memory,
    )
    text = output(result)
    assert result.returncode == 1 and "Traceback" not in text, text[-3000:]
    assert "OutOfMemory: out of memory generating masks for big.png (2048x2048 px)" in text
    assert "lower automask.points_per_batch (now 256, try 128)" in text
    assert not (tmp_path / "out" / "big").exists()  # nothing half-written


def test_a_folder_is_searched_recursively_and_no_masks_names_the_thresholds(tmp_path, shapes_image):
    """Random-weight SAM2 at 128 px predicts low IoUs: every candidate falls under SAM2's thresholds."""
    image, _ = shapes_image
    pages = tmp_path / "pages"
    for relative in ("cover.png", "vol1/001.png", "vol2/001.png"):  # two 001s: subfolders keep them apart
        (pages / relative).parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(image).save(pages / relative)
    out = tmp_path / "masks"
    args = [
        f"image={pages}",
        "model.checkpoint=null",
        "model.image_size=128",
        "device=cpu",
        "automask.points_per_side=4",
        f"output_dir={out}",
        f"hydra.run.dir={out}/run",
    ]
    result = run_module("src.automask", args)
    text = output(result)
    assert result.returncode == 0, text[-3000:]
    for name in ("cover", "vol1/001", "vol2/001"):
        document = json.loads((out / name / "masks.json").read_text())
        assert document["annotations"] == [] and document["image"]["file_name"] == f"{Path(name).name}.png"
        assert f"{name}: 0 masks -> {out / name}" in text
    assert "3 of 3 images gave 0 masks (cover, vol1/001, vol2/001)" in text
    assert "automask.pred_iou_thresh (now 0.8;" in text and "automask.stability_score_thresh (now 0.95;" in text
    assert "automask.points_per_side (now 4)" in text and "min_mask_region_area" not in text  # 0: not a filter now
