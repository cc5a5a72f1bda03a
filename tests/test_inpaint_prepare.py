"""Inpainting samples: hole geometry, the depth model, file names, preparation runs and bad input."""

from __future__ import annotations

import json
import re
from pathlib import Path

import cv2
import numpy as np
import pytest
from hydra.utils import instantiate

from src.data.inpaint_pairs import SampleName, find_inpaint_pairs, read_hole_mask
from src.data.preparation.holes import SOURCES, SourceImage
from src.data.preparation.holes.depth import DepthHoles, occluded_in_other_view, read_depth_map
from src.data.preparation.holes.depth_model import DepthAnything
from src.errors import DataError
from tests.helpers import compose_config, write_pair
from tests.prepare_helpers import output, run_prepare


def source_images(folder: Path, sizes: dict[str, list[tuple[int, int]]]) -> Path:
    rng = np.random.default_rng(0)
    for split, shapes in sizes.items():
        (folder / split).mkdir(parents=True, exist_ok=True)
        for index, (height, width) in enumerate(shapes):
            image = cv2.GaussianBlur((rng.random((height, width, 3)) * 255).astype(np.uint8), (0, 0), 3)
            cv2.imwrite(str(folder / split / f"img{index}.png"), image)
    return folder


def mask_conf(name: str, *overrides: str):
    cfg = compose_config("prepare", ["dataset=inpaint", f"holes={name}", *overrides])
    return instantiate(cfg.holes)


def test_depth_holes_lie_on_the_background_side_and_are_as_wide_as_the_disparity_step():
    width, near = 200, slice(80, 120)
    depth = np.zeros((8, width), np.float32)
    depth[:, near] = 1.0  # a near stripe in front of a flat background
    for direction in (1, -1):
        shift = (5.0 / 100 * width) * (depth - 0.3)  # divergence 5 %: 10 px per unit of depth
        holes = occluded_in_other_view(shift, direction, min_step=1.0)
        columns = np.flatnonzero(holes[0])
        expected = np.arange(120, 130) if direction > 0 else np.arange(70, 80)  # beside the stripe, 10 px
        np.testing.assert_array_equal(columns, expected)
        assert (holes == holes[0]).all()


def test_depth_source_reads_a_depth_map_and_draws_the_band_beside_the_near_object(tmp_path):
    depth = np.zeros((40, 200), np.uint16)
    depth[:, 80:120] = 60000
    np.save(tmp_path / "scene.npy", depth.astype(np.float32))
    source = mask_conf(
        "depth",
        f"holes.depth_dir={tmp_path}",
        "holes.divergence=[5.0,5.0]",
        "holes.convergence=[0.5,0.5]",
        "holes.dilate=0",
    )
    item = SourceImage("scene", tmp_path / "scene.png", "train", tmp_path)
    holes = source.holes(np.zeros((40, 200, 3), np.uint8), item, np.random.default_rng(1))
    columns = set(np.flatnonzero(holes[0]).tolist())
    assert columns in ({*range(120, 130)}, {*range(70, 80)})


def test_depth_map_of_the_wrong_size_names_the_file(tmp_path):
    np.save(tmp_path / "scene.npy", np.zeros((30, 20), np.float32))
    item = SourceImage("scene", tmp_path / "scene.png", "train", tmp_path)
    with pytest.raises(DataError, match=r"scene\.npy is 20x30 but .*scene\.png is 50x40"):
        read_depth_map(str(tmp_path), item, (40, 50))


def tiny_depth_anything(folder: Path) -> Path:
    """A random-weight Depth Anything V2 of a few thousand parameters, saved as transformers saves one."""
    from transformers import DepthAnythingConfig, DepthAnythingForDepthEstimation, Dinov2Config

    backbone = Dinov2Config(
        hidden_size=32, num_hidden_layers=4, num_attention_heads=2, intermediate_size=64, image_size=56,
        patch_size=14, out_features=["stage1", "stage2", "stage3", "stage4"], reshape_hidden_states=False,
    )  # fmt: skip
    config = DepthAnythingConfig(
        backbone_config=backbone, fusion_hidden_size=16, neck_hidden_sizes=[8, 16, 16, 32], head_hidden_size=8,
        reassemble_hidden_size=32,
    )  # fmt: skip
    DepthAnythingForDepthEstimation(config).save_pretrained(folder)
    return folder


def test_depth_anything_from_a_local_tiny_model_gives_depth_at_the_image_size(tmp_path):
    import torch

    model = DepthAnything(str(tiny_depth_anything(tmp_path / "model")), 56, None, torch.device("cpu"))
    assert model._model is None  # nothing is loaded before the first image
    depth = model(np.full((45, 70, 3), 128, np.uint8))
    assert depth.shape == (45, 70) and np.isfinite(depth).all()


def test_prepare_with_the_depth_model_writes_depth_samples(tmp_path):
    images = source_images(tmp_path / "images", {"train": [(96, 128)], "eval": [(96, 128)]})
    model = tiny_depth_anything(tmp_path / "model")
    result = run_prepare(
        tmp_path, "dataset=inpaint", f"prepare.input_dir={images}", "prepare.prefix=d", "holes=depth",
        f"holes.depth_model={model}", "holes.resolution=56", "prepare.min_side=96", "prepare.size=64",
        "prepare.min_hole_area=0.0", "prepare.crop_tries=2",
    )  # fmt: skip
    assert result.returncode == 0, output(result)[-3000:]
    pairs = find_inpaint_pairs(tmp_path / "data" / "inpaint", "train")
    assert [pair.key for pair in pairs] == ["d_depth_000000", "d_depth_000001"]


def test_sample_names_round_trip():
    for name in (SampleName("flickr", "depth", 7), SampleName("my_set_2", "free_form", 123456)):
        for tag in ("C", "M"):
            assert SampleName.parse(name.file(tag), SOURCES) == name
    assert SampleName("a", "free_form", 3).file("M") == "a_free_form_000003_M.png"
    with pytest.raises(DataError, match=r"x_y\.png"):
        SampleName.parse("x_y.png", SOURCES)


def test_prepare_writes_crops_upscales_small_images_and_is_idempotent(tmp_path):
    images = source_images(tmp_path / "images", {"train": [(60, 90), (80, 80)], "eval": [(70, 100)]})
    (images / "train" / "broken.png").write_bytes(b"not an image")
    args = [
        "dataset=inpaint",
        f"prepare.input_dir={images}",
        "prepare.prefix=ff",
        "prepare.min_side=96",
        "prepare.size=80",
    ]
    first = run_prepare(tmp_path, *args)
    assert first.returncode == 0, output(first)[-3000:]
    root = tmp_path / "data" / "inpaint"
    train, evaluation = find_inpaint_pairs(root, "train"), find_inpaint_pairs(root, "eval")
    assert len(train) == 4 and len(evaluation) == 2  # 2 crops per readable image
    for pair in train:
        image, mask = cv2.imread(str(pair.image)), read_hole_mask(pair.mask, (80, 80), pair.image)
        assert image.shape == (80, 80, 3)  # 60 px sources were upscaled to 96 before cropping
        assert 0.01 <= mask.mean() <= 0.5
    assert "broken.png: cannot read" in output(first) and re.search(r"train\s+4\n", output(first))
    stamps = {p: p.stat().st_mtime_ns for p in (root / "train").iterdir()}
    again = run_prepare(tmp_path, *args)
    assert "up to date" in output(again)
    assert {p: p.stat().st_mtime_ns for p in (root / "train").iterdir()} == stamps
    other = run_prepare(tmp_path, *args[:2], "prepare.prefix=gg", *args[3:])
    assert other.returncode == 0, output(other)[-3000:]
    assert len(find_inpaint_pairs(root, "train")) == 8  # a second prefix adds to the folder
    assert set(json.loads((root / "prepare.json").read_text())["runs"]) == {"ff_free_form", "gg_free_form"}
    assert not list(root.glob(".prepare-*"))


def test_object_holes_come_from_a_segmentation_datasets_masks(tmp_path):
    image = np.full((64, 64, 3), 90, np.uint8)
    ids = np.zeros((64, 64), np.uint8)
    ids[10:30, 10:30], ids[40:60, 35:60] = 1, 2
    write_pair(tmp_path, "train", "a", image, ids)
    source = mask_conf("objects", "holes.dilate=0", "holes.max_objects=2")
    item = SourceImage("a", tmp_path / "images" / "train" / "a.png", "train", tmp_path)
    holes = source.holes(image, item, np.random.default_rng(0))
    assert holes.any() and not (holes & (ids == 0)).any()
    write_pair(tmp_path, "train", "b", image, np.zeros((32, 64), np.uint8))
    with pytest.raises(DataError, match=r"masks/train/b\.png is 64x32 but .*b\.png is 64x64"):
        source.holes(
            image,
            SourceImage("b", tmp_path / "images" / "train" / "b.png", "train", tmp_path),
            np.random.default_rng(0),
        )


@pytest.mark.parametrize(
    ("mask", "message"),
    [
        (np.zeros((10, 20), np.uint8), "has no hole"),
        (np.full((10, 20), 255, np.uint8), "is all hole"),
        (np.full((12, 20), 255, np.uint8), "is 20x12 but"),
    ],
)
def test_bad_hole_masks_name_the_file(tmp_path, mask, message):
    path = tmp_path / "m.png"
    if mask.shape == (12, 20):
        mask[:6] = 0
    cv2.imwrite(str(path), mask)
    with pytest.raises(DataError, match=f"{path}.*{message}|{path} {message}"):
        read_hole_mask(path, (10, 20))


def test_an_unreadable_mask_names_the_file(tmp_path):
    path = tmp_path / "m.png"
    path.write_bytes(b"garbage")
    with pytest.raises(DataError, match=f"cannot read {path}"):
        read_hole_mask(path, (10, 20))


def test_depth_holes_settings_come_from_conf():
    assert isinstance(mask_conf("depth"), DepthHoles)
