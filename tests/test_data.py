"""The on-disk layout, mask reading, augmentation, sampling and batching."""

from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from PIL import Image

from src.data.augment import JointAugment
from src.data.layout import find_pairs, image_tree, list_images
from src.data.mask_io import read_instance_mask
from src.data.synthetic import ensure_synthetic_dataset
from src.engine.sampler import EpochSampler
from src.errors import ConfigError, DataError
from src.tasks.segmentation.dataset import SegmentationDataset, collate_segmentation
from tests.helpers import from_conf, write_pair


def test_pairs_are_matched_by_name(tmp_path, shapes_image):
    image, ids = shapes_image
    for name in ("b", "a"):
        write_pair(tmp_path, "train", name, image, ids)
    pairs = find_pairs(tmp_path, "train")
    assert [p.name for p in pairs] == ["a", "b"]
    assert pairs[0].mask == tmp_path / "masks" / "train" / "a.png"


def test_missing_and_orphan_files_are_all_named(tmp_path, shapes_image):
    image, ids = shapes_image
    write_pair(tmp_path, "train", "ok", image, ids)
    write_pair(tmp_path, "train", "no_mask", image, ids)
    write_pair(tmp_path, "train", "no_image", image, ids)
    (tmp_path / "masks" / "train" / "no_mask.png").unlink()
    (tmp_path / "images" / "train" / "no_image.png").unlink()
    with pytest.raises(DataError) as err:
        find_pairs(tmp_path, "train")
    message = str(err.value)
    assert "no_mask" in message and "have no mask" in message
    assert "no_image" in message and "have no image" in message


def test_a_mask_of_another_size_is_named_with_both_sizes(tmp_path, shapes_image):
    image, ids = shapes_image
    write_pair(tmp_path, "val", "odd", image, ids[:, :100])
    with pytest.raises(DataError, match=r"odd\.png is 100x96 but odd\.png is 128x96"):
        find_pairs(tmp_path, "val")


def test_empty_split_and_missing_folder_explain_the_layout(tmp_path):
    (tmp_path / "images" / "train").mkdir(parents=True)
    (tmp_path / "masks" / "train").mkdir(parents=True)
    with pytest.raises(DataError, match=r"split 'train' is empty.*images/SPLIT"):
        find_pairs(tmp_path, "train")
    with pytest.raises(DataError, match=r"images/val does not exist"):
        find_pairs(tmp_path, "val")


def test_an_unreadable_file_is_named(tmp_path, shapes_image):
    image, ids = shapes_image
    write_pair(tmp_path, "train", "broken", image, ids)
    (tmp_path / "images" / "train" / "broken.png").write_bytes(b"not an image")
    with pytest.raises(DataError, match=r"cannot read .*broken\.png"):
        find_pairs(tmp_path, "train")


def test_image_folders_are_searched_recursively_the_same_way_for_every_tool(tmp_path, shapes_image):
    image, _ = shapes_image
    for relative in ("top.png", "vol1/001.png", "vol2/001.jpg", "vol2/deep/002.PNG", ".hidden/x.png", "vol1/.y.png"):
        (tmp_path / relative).parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(image).save(tmp_path / relative, format="PNG")
    (tmp_path / "vol1" / "notes.txt").write_text("not an image")
    tree = image_tree(tmp_path, "image")  # automask: outputs mirror the folder
    assert tree == {
        "top": tmp_path / "top.png",
        "vol1/001": tmp_path / "vol1" / "001.png",
        "vol2/001": tmp_path / "vol2" / "001.jpg",
        "vol2/deep/002": tmp_path / "vol2" / "deep" / "002.PNG",
    }
    assert list_images(tmp_path, "prepare.input_dir") == {  # prepare: the same files, names joined
        "top": tree["top"],
        "vol1_001": tree["vol1/001"],
        "vol2_001": tree["vol2/001"],
        "vol2_deep_002": tree["vol2/deep/002"],
    }
    Image.fromarray(image).save(tmp_path / "vol2.png")  # its outputs would be the folder vol2/'s parent
    with pytest.raises(DataError, match=r"vol2.png and .*vol2/001.jpg: the outputs of vol2.png would be a folder vol2"):
        image_tree(tmp_path, "image")
    (tmp_path / "vol2.png").unlink()
    Image.fromarray(image).save(tmp_path / "top.jpg")
    with pytest.raises(DataError, match=r"top.jpg and .*top.png both give the name 'top'"):
        image_tree(tmp_path, "image")
    with pytest.raises(ConfigError, match=r"image=.*nowhere: no such folder"):
        image_tree(tmp_path / "nowhere", "image")
    (tmp_path / "empty" / ".hidden").mkdir(parents=True)
    Image.fromarray(image).save(tmp_path / "empty" / ".hidden" / "x.png")
    with pytest.raises(DataError, match=r"image=.*empty holds no images \(.jpg, .jpeg, .png"):
        image_tree(tmp_path / "empty", "image")


def test_jpeg_masks_with_compression_noise_are_thresholded_at_127(tmp_path):
    mask = np.zeros((64, 64), np.uint8)
    mask[16:48, 20:40] = 255
    path = tmp_path / "m.jpg"
    cv2.imwrite(str(path), mask, [cv2.IMWRITE_JPEG_QUALITY, 40])
    raw = np.asarray(Image.open(path))
    assert len(np.unique(raw)) > 2  # the noise a raw read would keep
    ids = read_instance_mask(path)
    assert set(np.unique(ids)) == {0, 1}
    assert (ids == (mask > 127)).mean() > 0.99


def test_instance_ids_binary_masks_and_palette_pngs(tmp_path, shapes_image):
    _, ids = shapes_image
    Image.fromarray(ids).save(tmp_path / "ids.png")
    assert np.array_equal(read_instance_mask(tmp_path / "ids.png"), ids)
    Image.fromarray((ids > 0).astype(np.uint8) * 255).save(tmp_path / "binary.png")
    assert set(np.unique(read_instance_mask(tmp_path / "binary.png"))) == {0, 1}
    palette = Image.fromarray(ids, mode="P")
    palette.putpalette([0, 0, 0, 255, 0, 0, 0, 255, 0] + [0] * 759)
    palette.save(tmp_path / "palette.png")
    assert np.array_equal(read_instance_mask(tmp_path / "palette.png"), ids)


def test_masks_that_cannot_be_instance_ids_are_refused(tmp_path):
    ramp = np.tile(np.arange(256, dtype=np.uint8), (8, 1))
    Image.fromarray(ramp).save(tmp_path / "soft.png")
    with pytest.raises(DataError, match="mask_type=binary"):
        read_instance_mask(tmp_path / "soft.png")
    assert read_instance_mask(tmp_path / "soft.png", "binary").sum() == 8 * 128
    colour = np.zeros((8, 8, 3), np.uint8)
    colour[..., 0] = 200
    Image.fromarray(colour).save(tmp_path / "colour.png")
    with pytest.raises(DataError, match="colour image"):
        read_instance_mask(tmp_path / "colour.png")
    cv2.imwrite(str(tmp_path / "lossy.jpg"), np.zeros((8, 8), np.uint8))
    with pytest.raises(DataError, match="JPEG"):
        read_instance_mask(tmp_path / "lossy.jpg", "instance")


def test_augmentation_moves_image_and_mask_together(shapes_image):
    image, ids = shapes_image
    image = cv2.resize(image, (128, 128), interpolation=cv2.INTER_NEAREST)
    ids = cv2.resize(ids, (128, 128), interpolation=cv2.INTER_NEAREST).astype(np.int32)
    augment = from_conf(
        JointAugment,
        "augmentation/default",
        hflip=1.0,
        vflip=0.5,
        rotation=30,
        scale=(0.7, 1.3),
        brightness=0,
        contrast=0,
        saturation=0,
        hue=0,
    )
    for seed in range(10):
        out_image, out_ids = augment(image, ids, np.random.default_rng(seed))
        assert out_ids.dtype == ids.dtype and set(np.unique(out_ids)) <= {0, 1, 2}
        # away from the edges (where interpolation blends), object 1 is red and object 2 green
        inner = cv2.erode((out_ids == 1).astype(np.uint8), np.ones((5, 5))).astype(bool)
        assert inner.any() and (out_image[inner][:, 0] > 150).mean() > 0.95
    assert not from_conf(JointAugment, "augmentation/default", hflip=0, rotation=0, scale=(1, 1)).geometric


def test_photometric_jitter_keeps_geometry(shapes_image):
    image, ids = shapes_image
    augment = from_conf(
        JointAugment,
        "augmentation/default",
        hflip=0,
        rotation=0,
        scale=(1, 1),
        brightness=0.5,
        contrast=0.5,
        saturation=0.5,
        hue=0.1,
    )
    out_image, out_ids = augment(image, ids.astype(np.int32), np.random.default_rng(0))
    assert np.array_equal(out_ids, ids) and not np.array_equal(out_image, image) and out_image.dtype == np.uint8


def test_epoch_sampler_is_seeded_resumable_and_sharded():
    sampler = EpochSampler(10, seed=3)
    sampler.set_epoch(0)
    full = list(sampler)
    assert sorted(i for i, _ in full) == list(range(10))
    sampler.set_epoch(0, start=4)
    assert list(sampler) == full[4:] and len(sampler) == 6
    sampler.set_epoch(1)
    assert [i for i, _ in sampler] != [i for i, _ in full]
    shards = [EpochSampler(10, seed=3, rank=r, world_size=2) for r in (0, 1)]
    for shard in shards:
        shard.set_epoch(0)
    assert sorted(i for shard in shards for i, _ in shard) == list(range(10))


def test_dataset_items_and_batches(tmp_path, shapes_image):
    image, ids = shapes_image
    write_pair(tmp_path, "val", "a", image, ids)
    write_pair(tmp_path, "val", "b", image, (ids == 2).astype(np.uint8) * 255)
    data = SegmentationDataset(tmp_path, "val", image_size=64)
    first = data[0]
    assert first["image"].shape == (3, 64, 64) and first["image"].dtype == torch.uint8
    assert first["masks"].shape == (2, 64, 64) and first["masks"].dtype == torch.bool
    assert torch.equal(data[0]["masks"], first["masks"])  # the same draws for the same key
    batch = collate_segmentation([data[0], data[1]])
    assert batch["images"].shape == (2, 3, 64, 64)
    assert batch["image_index"].tolist() == [0, 0, 1]


def test_objects_are_capped_and_tiny_ones_dropped(tmp_path, shapes_image):
    image, ids = shapes_image
    ids = ids.copy()
    ids[0, 0] = 3  # a one-pixel object
    write_pair(tmp_path, "train", "a", image, ids)
    assert len(SegmentationDataset(tmp_path, "train", image_size=64, min_object_area=4)[0]["masks"]) == 2
    assert len(SegmentationDataset(tmp_path, "train", image_size=64, max_objects=1)[(0, 5)]["masks"]) == 1


def test_synthetic_dataset_is_deterministic_and_refuses_foreign_folders(tmp_path):
    first = ensure_synthetic_dataset(tmp_path / "a", num_train=3, num_val=2, image_size=64, seed=1)
    second = ensure_synthetic_dataset(tmp_path / "b", num_train=3, num_val=2, image_size=64, seed=1)
    files = sorted(p.relative_to(first) for p in first.rglob("*.png"))
    assert len(files) == 5
    for rel in files:
        assert np.array_equal(np.asarray(Image.open(first / rel)), np.asarray(Image.open(second / rel)))
    assert len(find_pairs(first, "train")) == 3 and len(find_pairs(first, "val")) == 2
    mtime = (first / "synthetic.json").stat().st_mtime_ns
    ensure_synthetic_dataset(first, num_train=3, num_val=2, image_size=64, seed=1)
    assert (first / "synthetic.json").stat().st_mtime_ns == mtime  # already there: not rewritten
    foreign = tmp_path / "mine"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("my data")
    with pytest.raises(DataError, match="not a synthetic dataset"):
        ensure_synthetic_dataset(foreign)
    assert (foreign / "notes.txt").read_text() == "my data"


def test_an_interrupted_generation_leaves_no_dataset(tmp_path, monkeypatch):
    import src.data.synthetic as synthetic

    calls = {"n": 0}
    real = synthetic.make_sample

    def failing(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(synthetic, "make_sample", failing)
    with pytest.raises(KeyboardInterrupt):
        ensure_synthetic_dataset(tmp_path / "syn", num_train=4, num_val=1, image_size=32)
    assert not (tmp_path / "syn").exists()
    assert not list(Path(tmp_path).glob(".syn*"))
