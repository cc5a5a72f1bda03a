"""Manga: the four modes on pages the tests draw, overlays, held-out test pages, reruns, training."""

import cv2
import numpy as np
import pytest

from src.errors import ConfigError
from src.prepare import prepare
from tests.prepare_helpers import draw_page, manga_pages, output, run_prepare, train_briefly, write_pages


@pytest.fixture
def pages(tmp_path):
    """The four drawn pages (grid, balloon, bleed, slanted) in a folder, one in a sub-folder."""
    drawn = {name: page for name, (page, _) in manga_pages().items()}
    folder = write_pages(tmp_path / "pages", {k: v for k, v in drawn.items() if k != "slanted"})
    write_pages(folder / "book2", {"slanted": drawn["slanted"]})
    return folder


def read_ids(path):
    return cv2.imread(str(path), cv2.IMREAD_UNCHANGED)


def test_panel_mode_writes_one_instance_per_panel_then_trains(tmp_path, pages, train_run):
    result = run_prepare(tmp_path, "dataset=manga", "prepare.mode=panel", f"prepare.input_dir={pages}",
                         "prepare.splits={train: 0.75, val: 0.25}")  # fmt: skip
    assert result.returncode == 0, output(result)[-3000:]
    root = tmp_path / "data" / "manga"
    truth = {name: len(boxes) for name, (_, boxes) in manga_pages().items()}
    masks = {p.stem: read_ids(p) for p in (root / "masks").rglob("*.png")}
    assert sorted(masks) == ["balloon", "bleed", "book2_slanted", "grid"]
    for name, ids in masks.items():
        assert sorted(np.unique(ids)) == list(range(truth[name.removeprefix("book2_")] + 1)), name
    assert {p.parent.name for p in (root / "images").rglob("*.png")} == {"train", "val"}
    assert len(list((root / "overlays").rglob("*.png"))) == 4
    assert "manga (panel)" in result.stdout and "objects" in result.stdout
    train_briefly(train_run, tmp_path, "manga", root)


def test_synthetic_mode_paints_the_counted_shapes_and_only_there(compose_prepare, pages):
    synthetic = ("dataset=manga", "prepare.mode=synthetic", f"prepare.input_dir={pages}")
    report = prepare(
        compose_prepare(*synthetic, "prepare.synthetic.num_shapes=[1,2]", "prepare.synthetic.kinds=[rectangle]")
    )
    original = cv2.imread(str(pages / "grid.png"))
    split = next(s for s in ("train", "val") if (report.root / "images" / s / "grid.png").exists())
    painted = cv2.imread(str(report.root / "images" / split / "grid.png"))
    ids = read_ids(report.root / "masks" / split / "grid.png")
    objects = np.unique(ids[ids > 0])
    assert 1 <= len(objects) <= 2
    changed = (painted != original).any(axis=2)
    assert changed.any() and not changed[ids == 0].any()  # painted exactly where the mask says
    assert sum(report.objects.values()) <= 2 * 4 and sum(report.images.values()) == 4
    with pytest.raises(ConfigError, match="shape kinds"):
        prepare(compose_prepare(*synthetic, "prepare.synthetic.kinds=[star]"))


def test_character_mode_pairs_user_masks_by_name_and_reports_mismatches(compose_prepare, tmp_path, pages):
    masks = tmp_path / "masks"
    (masks / "book2").mkdir(parents=True)
    binary = np.zeros((560, 400), np.uint8)
    binary[100:300, 50:200] = 255
    instances = np.zeros((560, 400), np.uint8)
    instances[10:100, 10:100], instances[200:400, 200:390] = 1, 2
    cv2.imwrite(str(masks / "grid.png"), binary)
    cv2.imwrite(str(masks / "balloon.png"), instances)
    cv2.imwrite(str(masks / "book2" / "slanted.png"), binary)
    cv2.imwrite(str(masks / "typo.png"), binary)
    cv2.imwrite(str(masks / "bleed.png"), binary[:100])  # another size than its page
    cfg = compose_prepare("dataset=manga", "prepare.mode=character", f"prepare.input_dir={pages}",
                          f"prepare.mask_dir={masks}", "prepare.splits={train: 0.5, val: 0.5}")  # fmt: skip
    report = prepare(cfg)
    assert report.images == {"train": 2, "val": 1} or report.images == {"train": 1, "val": 2}
    assert sum(report.objects.values()) == 1 + 2 + 1
    reasons = {p.rsplit("/", 1)[-1]: r for p, r in ((s.path, s.reason) for s in report.skipped)}
    assert "is 400x100, the image 400x560" in reasons["bleed.png"]
    assert "no page of that name" in reasons["typo.png"]
    written = {p.stem: read_ids(p) for p in (report.root / "masks").rglob("*.png")}
    assert set(np.unique(written["balloon"])) == {0, 1, 2} and set(np.unique(written["grid"])) == {0, 255}
    copy = next((report.root / "images").rglob("grid.png"))
    assert copy.read_bytes() == (pages / "grid.png").read_bytes() and not copy.samefile(pages / "grid.png")


def test_test_mode_draws_held_out_pages_and_other_modes_keep_them(compose_prepare, tmp_path, pages):
    panel = ("dataset=manga", "prepare.mode=panel", f"prepare.input_dir={pages}")
    prepare(compose_prepare(*panel))
    root = tmp_path / "data" / "manga"
    train_val = {p.name: p.stat().st_mtime_ns for p in (root / "images").rglob("*.png")}
    more = write_pages(
        tmp_path / "more", {f"extra{i}": draw_page((400, 560), [(20, 20, 380, 540)], seed=i) for i in range(4)}
    )
    cv2.imwrite(str(more / "grid.png"), cv2.imread(str(pages / "grid.png")))  # already a training page
    test = ("dataset=manga", "prepare.mode=test", f"prepare.input_dir={more}", "prepare.test.num_samples=3")
    report = prepare(compose_prepare(*test))
    drawn = sorted(p.stem for p in (root / "images" / "test").iterdir())
    assert len(drawn) == 3 and "grid" not in drawn and report.kept == ["train", "val"]
    assert any("already in the" in s.reason for s in report.skipped)
    assert all(set(np.unique(read_ids(root / "masks" / "test" / f"{n}.png"))) == {0, 255} for n in drawn)  # 1 panel
    assert {
        p.name: p.stat().st_mtime_ns for p in (root / "images").rglob("*.png") if p.parent.name != "test"
    } == train_val
    assert prepare(compose_prepare(*test)).up_to_date
    assert sorted(p.stem for p in (root / "images" / "test").iterdir()) == drawn
    again = prepare(compose_prepare(*panel, "prepare.seed=1"))  # a new train/val split keeps the test pages
    assert again.kept == ["test"] and sorted(p.stem for p in (root / "images" / "test").iterdir()) == drawn
