"""What every preparation shares: seeded stable splits, atomic dataset writes, the prepare config."""

import json

import numpy as np
import pytest
from omegaconf import OmegaConf
from PIL import Image

from src.data.preparation.builder import RECORD, DatasetBuilder, current_report
from src.data.preparation.splits import assign_splits, read_split_lists, split_counts, write_split_lists
from src.errors import ConfigError, DataError


def test_splits_have_exact_seeded_sizes():
    names = [f"img{i:04d}" for i in range(1000)]
    first = assign_splits(names, {"train": 0.8, "val": 0.2}, seed=0)
    assert sum(s == "train" for s in first.values()) == 800 and sum(s == "val" for s in first.values()) == 200
    assert assign_splits(reversed(names), {"train": 0.8, "val": 0.2}, seed=0) == first  # order does not matter
    assert assign_splits(names, {"train": 0.8, "val": 0.2}, seed=1) != first
    assert split_counts(10, {"train": 0.7, "val": 0.2, "test": 0.1}) == {"train": 7, "val": 2, "test": 1}
    assert split_counts(7, {"train": 0.7, "val": 0.2, "test": 0.1}) == {"train": 5, "val": 1, "test": 1}
    with pytest.raises(ConfigError, match=r"prepare\.splits"):
        assign_splits(names, {"train": -1, "val": 2}, seed=0)


def test_an_image_keeps_its_split_when_more_are_added(tmp_path):
    ratios = {"train": 0.7, "val": 0.2, "test": 0.1}
    old = assign_splits([f"a{i}" for i in range(20)], ratios, seed=0)
    write_split_lists(tmp_path, old, ratios)
    assert read_split_lists(tmp_path, ratios) == old
    grown = assign_splits([f"a{i}" for i in range(20)] + [f"b{i}" for i in range(20)], ratios, 0, old)
    assert all(grown[name] == split for name, split in old.items())
    counts = {s: sum(v == s for v in grown.values()) for s in ratios}
    assert counts == {"train": 28, "val": 8, "test": 4}
    assert (tmp_path / "test.txt").read_text().splitlines() == sorted(n for n, s in old.items() if s == "test")


def sample(value: int) -> tuple[np.ndarray, np.ndarray]:
    image = np.full((32, 40, 3), value, np.uint8)
    ids = np.zeros((32, 40), np.int32)
    ids[4:20, 5:30] = 1
    return image, ids


def build(root, splits, spec, names=("a", "b"), visualize=1, fail=False):
    with DatasetBuilder(root, "test", spec, splits, visualize) as builder:
        for split in splits:
            for i, name in enumerate(names):
                builder.add(split, name, *sample(40 * i))
        if fail:
            raise RuntimeError("interrupted")
    return builder.report


def test_a_run_interrupted_while_writing_leaves_the_last_dataset_untouched(tmp_path):
    root = tmp_path / "ds"
    build(root, ["train", "val"], {"v": 1})
    before = {p.relative_to(root): p.read_bytes() for p in root.rglob("*") if p.is_file()}
    with pytest.raises(RuntimeError, match="interrupted"):
        build(root, ["train", "val"], {"v": 2}, names=("c",), fail=True)
    after = {p.relative_to(root): p.read_bytes() for p in root.rglob("*") if p.is_file()}
    assert after == before  # no hidden temporary folder left either
    assert current_report(root, "test", {"v": 1}, ["train", "val"]) is not None
    assert current_report(root, "test", {"v": 2}, ["train", "val"]) is None


def test_other_splits_are_carried_over_and_masks_are_viewable(tmp_path):
    root = tmp_path / "ds"
    build(root, ["test"], {"held": "out"}, names=("t",))
    test_image = root / "images" / "test" / "t.png"
    before = (test_image.read_bytes(), test_image.stat().st_mtime_ns)
    report = build(root, ["train", "val"], {"v": 1})
    assert report.kept == ["test"] and report.images == {"test": 1, "train": 2, "val": 2}
    assert (test_image.read_bytes(), test_image.stat().st_mtime_ns) == before  # carried over, not rewritten
    record = json.loads((root / RECORD).read_text())
    assert record["splits"]["test"]["spec"] == {"held": "out"} and record["splits"]["train"]["spec"] == {"v": 1}
    mask = np.asarray(Image.open(root / "masks" / "train" / "a.png"))
    assert set(np.unique(mask)) == {0, 255}  # one object: 0/255, so any viewer shows it
    assert sorted(p.name for p in (root / "overlays" / "train").iterdir()) == ["a.png"]  # visualize=1


def test_a_folder_not_written_by_prepare_is_never_replaced(tmp_path):
    root = tmp_path / "mine"
    (root / "images" / "train").mkdir(parents=True)
    (root / "images" / "train" / "precious.jpg").write_bytes(b"x")
    with pytest.raises(DataError, match="did not write"):
        build(root, ["train"], {"v": 1})
    assert (root / "images" / "train" / "precious.jpg").read_bytes() == b"x"


def test_an_empty_split_is_refused_and_nothing_is_written(tmp_path):
    with (
        pytest.raises(DataError, match="nothing to write for split"),
        DatasetBuilder(tmp_path / "ds", "test", {}, ["train", "val"]) as builder,
    ):
        builder.add("train", "a", *sample(0))
        builder.skip("b.png", "unreadable")
    assert not (tmp_path / "ds" / "images").exists()


@pytest.mark.parametrize("dataset", ["kvasir", "manga", "animal"])
def test_each_dataset_has_a_preparation_that_composes(compose_prepare, tmp_path, dataset):
    cfg = compose_prepare(f"dataset={dataset}")
    resolved = OmegaConf.to_container(cfg.prepare, resolve=True)
    assert resolved["root"] == str(tmp_path / "data" / dataset)
    assert resolved["_target_"].startswith(f"src.data.preparation.{dataset}.")
