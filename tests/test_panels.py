"""Panel extraction on pages the tests draw: bordered grids, a balloon across a gutter, a frameless
panel touching bordered ones, a slanted gutter; and the box matching that scores it."""

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
from tests.prepare_helpers import GRID, H, W, draw_page, manga_pages, write_pages


@pytest.mark.parametrize("name", ["grid", "balloon", "bleed", "slanted"])
def test_each_drawn_panel_is_found_once_and_tightly(name):
    page, truth = manga_pages()[name]
    found = panel_boxes(from_conf(PanelExtractor, "prepare/manga", "panel").extract(page))
    assert len(found) == len(truth), found
    ious = box_iou(torch.tensor(found).float(), torch.tensor(truth).float())
    assert (ious.max(dim=0).values > 0.9).all(), ious  # every true panel has its own tight match
    assert match_boxes(torch.tensor(found), torch.tensor(truth), 0.9) == len(truth)


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
    assert (tmp_path / "out" / "pages.png").is_file()
