"""Panel extraction on pages the tests draw: bordered grids, a balloon across a gutter, a frameless
panel touching bordered ones, slanted gutters, a frameless panel bounded by its art, a full-page
illustration; the box matching that scores it, and the benchmark that reports it."""

import json

import cv2
import numpy as np
import pytest
import torch
from torchvision.ops import box_iou

from src.data.preparation.inputs import Unlabelled
from src.data.preparation.panels import PanelExtractor, panel_boxes
from src.tasks.segmentation.metrics import match_boxes
from tests.helpers import from_conf, run_module
from tests.prepare_helpers import GRID, Box, H, W, draw_page, manga_pages, write_pages


def slanted_gutter_page() -> tuple[np.ndarray, list[Box]]:
    """Two framed panels side by side, the gutter between them leaning by 30 px over the page."""
    left = [(20, 20), (215, 20), (185, 540), (20, 540)]
    right = [(230, 20), (380, 20), (380, 540), (200, 540)]
    return draw_page((W, H), [], polygons=[left, right], seed=5), [(20, 20, 216, 541), (200, 20, 381, 541)]


def art_bounded_page() -> tuple[np.ndarray, list[Box]]:
    """A framed panel over a frameless one: a figure with a ragged outline on the white page, with
    a deep white bay (between its arms) that opens onto the gutter."""
    page = draw_page((W, H), [(20, 20, 380, 250)], seed=6)
    figure = np.array([(60, 290), (120, 275), (200, 300), (260, 270), (350, 300), (340, 420), (300, 530),
                       (230, 520), (200, 380), (170, 520), (90, 535), (50, 420)], np.int32)  # fmt: skip
    region = np.zeros((H, W), np.uint8)
    cv2.fillPoly(region, [figure], 1)
    texture = cv2.GaussianBlur(np.random.default_rng(7).integers(40, 180, (H, W), dtype=np.uint8), (0, 0), 3)
    page[region > 0] = texture[region > 0, None]
    return page, [(20, 20, 380, 250), (50, 270, 351, 536)]


def full_page_illustration() -> tuple[np.ndarray, list[Box]]:
    """Art to every edge of the page, under a white sky that reaches the top edge and a white balloon:
    one panel, the page."""
    page = draw_page((W, H), [], frameless=[(0, 0, W, H)], balloons=[(300, 330, 60, 80)], seed=8)
    hills = np.array([(40, 0), (360, 0), (350, 150), (300, 190), (200, 140), (90, 200), (50, 160)], np.int32)
    cv2.fillPoly(page, [hills], (255, 255, 255))
    for x in (60, 150, 250, 330):  # birds in the sky, strokes touching nothing
        cv2.line(page, (x, 60), (x + 12, 70), (0, 0, 0), 2)
        cv2.line(page, (x + 12, 70), (x + 24, 60), (0, 0, 0), 2)
    return page, [(0, 0, W, H)]


@pytest.mark.parametrize("name", ["grid", "balloon", "bleed", "slanted"])
def test_each_drawn_panel_is_found_once_and_tightly(name):
    page, truth = manga_pages()[name]
    found = panel_boxes(from_conf(PanelExtractor, "prepare/manga", "panel").extract(page))
    assert len(found) == len(truth), found
    ious = box_iou(torch.tensor(found).float(), torch.tensor(truth).float())
    assert (ious.max(dim=0).values > 0.9).all(), ious  # every true panel has its own tight match
    assert match_boxes(torch.tensor(found), torch.tensor(truth), 0.9) == len(truth)


@pytest.mark.parametrize("drawn", [slanted_gutter_page, art_bounded_page, full_page_illustration])
def test_slanted_gutters_frameless_art_and_full_page_illustrations_are_found(drawn):
    page, truth = drawn()
    found = panel_boxes(from_conf(PanelExtractor, "prepare/manga", "panel").extract(page))
    assert len(found) == len(truth), found
    assert match_boxes(torch.tensor(found), torch.tensor(truth), 0.9) == len(truth), (found, truth)


def test_panels_are_instances_in_reading_order_and_small_marks_are_dropped():
    page = draw_page((W, H), GRID, seed=1)
    page[548:556, 195:205] = 0  # a page number in the bottom margin
    ids = from_conf(PanelExtractor, "prepare/manga", "panel").extract(page)
    assert sorted(np.unique(ids)) == [0, 1, 2, 3, 4, 5]
    assert ids[100, 300] == 1 and ids[100, 100] == 2  # top row, right to left
    assert ids[250, 200] == 3 and ids[450, 300] == 4 and ids[450, 100] == 5
    assert ids[552, 200] == 0 and ids[10, 10] == 0  # the page number and the margin are not panels


def test_a_scan_at_another_resolution_gives_the_same_panels():
    page, truth = manga_pages()["balloon"]
    small = cv2.resize(page, (W // 2, H // 2), interpolation=cv2.INTER_AREA)
    ids = from_conf(PanelExtractor, "prepare/manga", "panel").extract(small)
    assert ids.shape == small.shape[:2]
    found = torch.tensor(panel_boxes(ids)) * 2
    assert match_boxes(found, torch.tensor(truth), 0.9) == len(truth) == len(found)


def test_a_blank_page_has_no_panel():
    with pytest.raises(Unlabelled, match="no panel"):
        from_conf(PanelExtractor, "prepare/manga", "panel")("blank", np.full((H, W, 3), 255, np.uint8))


def test_box_matching_is_one_to_one_at_the_threshold():
    truth = torch.tensor([[0, 0, 10, 10], [20, 0, 30, 10]])
    assert match_boxes(truth.clone(), truth, 0.5) == 2
    # both near-copies of the first box overlap it (IoU 1 and 0.9); only one of them may count
    pred = torch.tensor([[0, 0, 10, 10], [0, 0, 10, 9], [5, 0, 15, 10]])
    assert match_boxes(pred, truth, 0.5) == 1
    assert match_boxes(pred[2:], truth, 0.3) == 1 and match_boxes(pred[2:], truth, 0.34) == 0  # IoU 50/150
    assert match_boxes(torch.tensor([[0, 0, 10, 10]]), torch.zeros((0, 4)), 0.5) == 0


def test_the_benchmark_reads_openmantra_annotations_and_prints_precision_and_recall(tmp_path):
    folder = tmp_path / "sample"
    books = []
    for name, (page, truth) in manga_pages().items():
        write_pages(folder / "images" / name / "ja", {"001": page})
        frames = [{"x": x0, "y": y0, "w": x1 - x0, "h": y1 - y0} for x0, y0, x1, y1 in truth]
        books.append(
            {"book_title": name, "pages": [{"image_paths": {"ja": f"images/{name}/ja/001.png"}, "frame": frames}]}
        )
    (folder / "annotation.json").write_text(json.dumps(books))
    result = run_module("benchmarks.manga_panels", [str(folder), "--out", str(tmp_path / "out")])
    assert result.returncode == 0, result.stderr[-3000:]
    assert "precision 1.000  recall 1.000" in result.stdout and "images/balloon/ja/001.png" in result.stdout
    assert any(line.split()[:2] == ["slanted", "1"] for line in result.stdout.splitlines())  # a row per title
    assert (tmp_path / "out" / "pages.png").is_file() and "0 pages with misses" in result.stdout

    # a page whose true boxes nothing finds is drawn among the misses; held-out pages are left out
    books[0]["pages"][0]["frame"] = [{"x": 0, "y": 0, "w": 50, "h": 50}]
    (folder / "annotation.json").write_text(json.dumps(books))
    held_out = ["--held-out-titles", books[1]["book_title"], "--held-out-every", "0"]
    result = run_module(
        "benchmarks.manga_panels", [str(folder), "--out", str(tmp_path / "out"), "--subset", "tuning", *held_out]
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert f"all {len(books) - 1} pages" in result.stdout and "1 pages with misses" in result.stdout
    assert (
        cv2.imread(str(tmp_path / "out" / "misses.png")).shape[1]
        < cv2.imread(str(tmp_path / "out" / "pages.png")).shape[1]
    )
