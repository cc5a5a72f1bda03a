"""`python -m src.annotate`: the session (order, clears, save, resume, masks) and the page in headless Chromium."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import gradio as gr
import numpy as np
import pytest
import torch
from PIL import Image

from src.apps.annotate_page import (
    FOREGROUND,
    LANDMARKS,
    MASK,
    AnnotatePage,
    display_size,
    draw_reference,
    to_image_pixels,
    to_shown_pixels,
)
from src.apps.annotation import AnnotationSession, LazyPredictor, annotations_folder, images_to_annotate
from src.config import PROJECT_ROOT
from src.data.layout import find_pairs
from src.errors import DataError, PromptError
from src.tasks.landmarks.annotations import LandmarkAnnotation, load_annotation, save_annotation
from src.tasks.landmarks.dataset import find_annotated
from src.tasks.landmarks.scheme import LandmarkScheme, load_scheme
from src.tasks.segmentation.predictor import load_predictor
from tests.browser import browser_page, click_image, free_port, require_chromium, served, wait_for_image
from tests.helpers import compose_config

SCHEME = load_scheme("anime_face_28")
# name -> (width, height): a finished one, a small one, a wide one and one shown scaled (max side 800)
SIZES = {"1_done": (40, 30), "2_small": (64, 48), "3_wide": (300, 200), "4_large": (1600, 900)}
SAM2_SMALL = ["model.checkpoint=null", "model.image_size=128", "device=cpu"]


def make_dataset(root: Path) -> list[str]:
    """raw/site/NAME.png of SIZES, listed in train.txt (the last in val.txt); 1_done fully annotated."""
    rng = np.random.default_rng(0)
    entries = []
    for name, (width, height) in SIZES.items():
        path = root / "raw" / "site" / f"{name}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.integers(0, 255, (height, width, 3), dtype=np.uint8)).save(path)
        entries.append(path.relative_to(root).as_posix())
    (root / "train.txt").write_text("".join(f"{e}\n" for e in entries[:-1]))
    (root / "val.txt").write_text(f"{entries[-1]}\n")
    done = LandmarkAnnotation(entries[0], 40, 30, SCHEME.name, [(i, i % 30) for i in range(28)], True)
    save_annotation(done, root / "annotated")
    return entries


def session(root: Path, predictor=None) -> AnnotationSession:
    images = images_to_annotate(root, None, ["train", "val", "test"])
    return AnnotationSession(root, images, root / "annotated", SCHEME, "tester", predictor=predictor)


@pytest.fixture
def root(tmp_path: Path) -> Path:
    make_dataset(tmp_path / "animal")
    return tmp_path / "animal"


def test_points_are_placed_in_the_scheme_order_and_cleared(root):
    s = session(root)
    assert s.entry == "raw/site/2_small.png"  # 1_done is complete: the session starts after it
    assert s.next_point().index == 0 and s.next_point().group == "contour" and s.next_point().color == (0, 0, 255)
    for i in range(6):
        s.add_point(i, 2 * i)
    assert (s.next_point().index, s.next_point().group) == (6, "eyebrows")
    s.clear_last()
    assert s.points[-1] == (4.0, 8.0) and s.next_point().index == 5
    with pytest.raises(PromptError, match=r"\(64, 1\) is outside 2_small.png \(64x48 pixels\)"):
        s.add_point(64, 1)  # the last pixel centre is 63
    s.clear_all()
    assert s.points == [] and s.next_point().index == 0
    for i in range(28):
        s.add_point(i + 0.25, 47)
    assert s.next_point() is None and s.complete
    with pytest.raises(PromptError, match="all 28 landmarks are placed"):
        s.add_point(1, 1)


def test_save_writes_exact_coordinates_and_a_new_session_resumes(root):
    s = session(root)
    s.add_point(5, 7)
    s.add_point(62.75, 0.5)
    path = s.save()
    record = json.loads(path.read_text())
    assert path == root / "annotated" / "2_small.json"
    assert record["image"] == "../raw/site/2_small.png" and record["image_relative_to"] == "annotation file"
    assert (record["width"], record["height"]) == (64, 48)
    assert record["points"] == [[5.0, 7.0], [62.75, 0.5]] and record["complete"] is False
    assert record["annotator"] == "tester" and record["updated_at"]

    again = session(root)  # a restart: the partial image, with its points
    assert again.entry == "raw/site/2_small.png" and again.points == [(5.0, 7.0), (62.75, 0.5)]
    for i in range(26):
        again.add_point(i, i)
    again.save()
    assert load_annotation(path, SCHEME).complete
    assert session(root).entry == "raw/site/3_wide.png"  # complete now: the next restart skips it


def test_next_and_previous_keep_unsaved_points_and_stop_at_the_ends(root):
    s = session(root)
    s.add_point(1, 2)
    s.next()  # leaving an image saves what was clicked on it
    assert s.entry == "raw/site/3_wide.png" and s.points == []
    assert load_annotation(root / "annotated" / "2_small.json").points == [(1.0, 2.0)]
    s.next()
    s.next()  # past the end: stays on the last image
    assert s.entry == "raw/site/4_large.png" and s.image.shape == (900, 1600, 3)
    for _ in range(5):
        s.previous()
    assert s.entry == "raw/site/1_done.png" and len(s.points) == 28 and s.complete
    s.next()
    assert s.points == [(1.0, 2.0)] and not s.dirty


def test_which_images_and_clear_errors(root, tmp_path):
    assert images_to_annotate(root, None, ["train", "val"])[-1] == "raw/site/4_large.png"
    for split in ("train", "val"):
        (root / f"{split}.txt").unlink()
    assert len(images_to_annotate(root, None, ["train", "val"])) == 4  # no lists yet: everything under raw/
    with pytest.raises(DataError, match=r"dataset.root: .*empty/raw does not exist; expected split lists"):
        images_to_annotate(tmp_path / "empty", None, ["train"])
    outside = tmp_path / "elsewhere"
    shutil.copytree(root / "raw" / "site", outside)
    assert images_to_annotate(root, outside, ["train"])[0] == str(outside / "1_done.png")  # absolute: not below root
    with pytest.raises(DataError, match=r"image_dir: .*nope does not exist; expected a folder of images$"):
        images_to_annotate(root, tmp_path / "nope", ["train"])
    (outside / "sub").mkdir()
    shutil.copy(outside / "3_wide.png", outside / "sub" / "3_wide.png")
    with pytest.raises(DataError, match=r"3_wide.png and .*sub/3_wide.png .* share the name '3_wide'"):
        images_to_annotate(root, outside, ["train"])
    save_annotation(LandmarkAnnotation("raw/site/2_small.png", 10, 10, SCHEME.name, [], False), root / "annotated")
    with pytest.raises(DataError, match=r"2_small.json: made for a 10x10 image, but .*2_small.png is 64x48"):
        session(root)


def test_every_click_is_kept_in_a_draft_that_a_new_session_restores(root):
    s = session(root)
    s.go(2)  # 3_wide: after the first incomplete image, so a restart must find it by its draft
    s.add_point(10, 20)
    s.add_point(30, 40)
    s.clear_last()
    draft = root / "annotated" / ".drafts" / "3_wide.json"
    assert json.loads(draft.read_text())["points"] == [[10.0, 20.0]]
    assert not (root / "annotated" / "3_wide.json").exists()  # Save has not been pressed

    again = session(root)  # the tab closed, the server restarted: nothing is lost
    assert again.entry == "raw/site/3_wide.png" and again.points == [(10.0, 20.0)]
    assert again.dirty and again.restored
    again.save()
    assert not draft.exists() and points_in(root, "3_wide") == [[10.0, 20.0]] and not again.restored

    done = session(root)
    done.go(0)  # a finished annotation, edited: the file stays complete until Save
    done.clear_last()
    assert load_annotation(root / "annotated" / "1_done.json", SCHEME).complete
    assert len(json.loads((root / "annotated" / ".drafts" / "1_done.json").read_text())["points"]) == 27
    assert session(root).entry == "raw/site/1_done.png"  # resumed at the draft, not at the first incomplete
    done.next()  # leaving saves, as before
    assert not load_annotation(root / "annotated" / "1_done.json", SCHEME).complete
    assert not (root / "annotated" / ".drafts" / "1_done.json").exists()


def test_a_folder_outside_the_dataset_keeps_its_annotations_with_relative_paths(root, tmp_path):
    outside = tmp_path / "my faces"
    shutil.copytree(root / "raw" / "site", outside / "batch1")
    assert annotations_folder(root, None, None) == root / "annotated"
    assert annotations_folder(root, root / "raw" / "site", None) == root / "annotated"  # training reads them there
    assert annotations_folder(root, outside, None) == outside / "annotated"
    assert annotations_folder(root, outside, tmp_path / "chosen") == tmp_path / "chosen"

    images = images_to_annotate(root, outside, ["train"])
    assert images[0] == str(outside / "batch1" / "1_done.png")  # found in the subfolder
    s = AnnotationSession(root, images, annotations_folder(root, outside, None), SCHEME, "tester")
    s.add_point(3, 4)
    path = s.save()
    record = json.loads(path.read_text())
    assert path == outside / "annotated" / "1_done.json"
    assert record["image"] == "../batch1/1_done.png" and record["image_relative_to"] == "annotation file"

    moved = tmp_path / "moved"
    shutil.move(outside, moved)  # the folder and its annotations move together and stay valid
    s = AnnotationSession(root, images_to_annotate(root, moved, ["train"]), moved / "annotated", SCHEME, "tester")
    assert s.entry == str(moved / "batch1" / "1_done.png") and s.points == [(3.0, 4.0)]


def test_training_reads_relative_and_older_root_relative_or_absolute_image_paths(root):
    """Files the tool writes now name the image relative to themselves; older ones, relative to the root or
    absolute, are still read."""
    entries = [line for split in ("train", "val") for line in (root / f"{split}.txt").read_text().split()]
    (root / "train.txt").write_text("".join(f"{e}\n" for e in entries))
    points = [(float(i), float(i % 30)) for i in range(28)]
    s = session(root)
    s.go(1)
    s.points = list(points)
    s.save()  # 2_small: the current format
    old = {
        "3_wide": ("raw/site/3_wide.png", 300, 200),  # relative to the dataset root, no image_relative_to
        "4_large": (str(root / "raw" / "site" / "4_large.png"), 1600, 900),  # absolute
    }
    for name, (image, width, height) in old.items():
        record = {"image": image, "width": width, "height": height, "scheme": SCHEME.name}
        record |= {"points": [list(p) for p in points], "complete": True}
        (root / "annotated" / f"{name}.json").write_text(json.dumps(record))
    found, skipped = find_annotated(root, "train", SCHEME)
    assert [e.annotation.image for e in found] == entries and skipped == {"not annotated": 0, "incomplete": 0}
    assert [e.image for e in found] == [root / e for e in entries]
    record = json.loads((root / "annotated" / "3_wide.json").read_text())
    record["image"] = "raw/site/2_small.png"  # another image under the same stem
    (root / "annotated" / "3_wide.json").write_text(json.dumps(record))
    with pytest.raises(DataError, match=r"3_wide.json: annotates 'raw/site/2_small.png' but .* lists"):
        find_annotated(root, "train", SCHEME)


def test_the_reference_diagram_rings_the_next_point_where_the_scheme_puts_it():
    side = 300

    def ring_is_drawn(picture: np.ndarray, index: int) -> bool:
        """Dark on the ring's circle left of, below and down-left of the point (its label is up-right)."""
        u, v = SCHEME.reference[index]
        x, y = u * (side - 1), v * (side - 1)
        ring = 3 * max(3, side // 70)  # the next dot is twice the radius, the ring one radius beyond it
        on_ring = [(x - ring, y), (x, y + ring), (x - ring * 0.707, y + ring * 0.707)]
        return all((picture[round(b), round(a)] < 60).all() for a, b in on_ring)

    start, later = draw_reference(SCHEME, 0, side), draw_reference(SCHEME, 14, side)
    assert start.shape == (side, side, 3)
    assert ring_is_drawn(start, 0) and not ring_is_drawn(start, 14)
    assert ring_is_drawn(later, 14) and not ring_is_drawn(later, 0)
    nose = SCHEME.reference[15]
    assert tuple(later[round(nose[1] * (side - 1)), round(nose[0] * (side - 1))]) == (255, 0, 255)  # group color
    plain = LandmarkScheme.from_config({k: v for k, v in SCHEME.to_dict().items() if k != "reference"})
    assert draw_reference(plain, 0, side) is None  # a scheme without a reference: no diagram
    with pytest.raises(ValueError, match=r"landmarks.reference: expected 28 \[x, y\] pairs in 0..1"):
        LandmarkScheme.from_config({**SCHEME.to_dict(), "reference": [[0.5, 0.5]] * 27})


def test_zoom_enlarges_the_picture_and_clicks_land_between_image_pixels(root):
    assert display_size(64, 48, 800, 4, 4096) == (256, 192)
    assert display_size(1600, 900, 800, 8, 4096) == (4096, 2304)  # capped at zoom_max_side
    assert display_size(1600, 900, 800, 1, 4096) == (800, 450) == display_size(1600, 900, 800, 0.5, 4096)
    page = AnnotatePage(lambda: session(root), max_side=800, zoom_max_side=4096, reference_side=100)
    s, picture, _, _ = page.zoom(None, LANDMARKS, 4)  # first event of a tab: opens the session
    s, picture, _, _ = page.zoom(s, LANDMARKS, 4)
    assert picture.shape == (192, 256, 3)
    assert np.array_equal(picture[::4, ::4], s.image)  # enlarged as sharp pixels
    for index, expected in [([130, 98], (32.125, 24.125)), ([0, 0], (0.0, 0.0)), ([255, 191], (63.0, 47.0))]:
        s.clear_all()
        page.click(s, LANDMARKS, FOREGROUND, gr.SelectData(None, {"index": index, "value": None}), 4)
        assert s.points == [expected]  # a quarter pixel; edge clicks stay on the outermost pixel centres


def test_shown_pixels_map_back_to_image_pixels_exactly():
    assert display_size(1600, 900, 800) == (800, 450) and display_size(300, 200, 800) == (300, 200)
    assert to_image_pixels(0, 0, (1600, 900), (800, 450)) == (0.5, 0.5)  # shown pixel 0 covers image pixels 0, 1
    assert to_image_pixels(617, 283, (1600, 900), (800, 450)) == (1234.5, 566.5)
    assert to_image_pixels(12, 34, (300, 200), (300, 200)) == (12, 34)  # unscaled: the click is the pixel
    rng = np.random.default_rng(0)
    for x, y in rng.uniform(0, 1000, (20, 2)):
        back = to_image_pixels(*to_shown_pixels(x, y, (1001, 777), (640, 497)), (1001, 777), (640, 497))
        assert np.allclose(back, (x, y))


def test_page_handlers_clamp_edge_clicks_and_show_mistakes_in_the_status(root):
    page = AnnotatePage(lambda: session(root), max_side=800, zoom_max_side=4096, reference_side=200)
    s, _, reference, text = page.open()
    assert reference.shape == (200, 200, 3)
    s.go(3)  # 4_large, shown at 800x450
    s, picture, _, text = page.click(
        s, LANDMARKS, FOREGROUND, gr.SelectData(None, {"index": [800, 450], "value": None})
    )
    assert s.points == [(1598.5, 898.5)] and picture.shape == (450, 800, 3)  # one past the edge: the last pixel
    assert "next: point 1 (contour)" in text
    s.points = [(1.0, 1.0)] * 28
    _, _, _, text = page.click(s, LANDMARKS, FOREGROUND, gr.SelectData(None, {"index": [5, 5], "value": None}))
    assert "PromptError" in text and "all 28 landmarks are placed" in text and len(s.points) == 28
    _, _, _, text = page.save(s, MASK)
    assert "no mask to save" in text


def test_mask_mode_loads_sam2_on_first_use_and_writes_the_dataset_layout(root):
    cfg = compose_config("annotate", SAM2_SMALL)
    torch.manual_seed(0)  # random weights: a seed whose first mask is not empty
    predictor = LazyPredictor(lambda: load_predictor(cfg)[0])
    s = session(root, predictor)
    assert not predictor.loaded and s.saved_mask() is None
    with pytest.raises(PromptError, match="no mask to save"):
        s.save_mask()
    s.mask_click(32, 24)
    assert predictor.loaded
    s.mask_click(2, 2, positive=False)
    s.mask_undo()
    mask = s.mask()
    assert mask.shape == (48, 64) and mask.any()
    written = s.save_mask()
    assert written == root / "masks" / "train" / "2_small.png" == s.saved_mask()
    saved = np.asarray(Image.open(written))
    assert saved.dtype == np.uint8 and np.array_equal(saved > 0, mask) and set(np.unique(saved)) <= {0, 255}
    copied = root / "images" / "train" / "2_small.png"
    assert copied.read_bytes() == (root / "raw" / "site" / "2_small.png").read_bytes()
    assert [pair.name for pair in find_pairs(root, "train")] == ["2_small"]  # what segmentation training reads
    s.go(3)  # 4_large is listed in val.txt
    assert s.mask_files()[1] == root / "masks" / "val" / "4_large.png"
    (root / "val.txt").write_text("")
    with pytest.raises(DataError, match=r"raw/site/4_large.png is in none of the split lists"):
        s.mask_files()


def test_annotate_composes_with_the_animal_dataset_and_binds_localhost():
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(PROJECT_ROOT / "conf"), version_base="1.3"):
        cfg = compose("annotate")
        assert cfg.dataset.name == "animal" and cfg.landmarks.num_points == 28
        assert cfg.ui.host == "127.0.0.1" and cfg.annotated_dir is None
    GlobalHydra.instance().clear()


def status(page) -> str:
    return page.locator("#status").inner_text()


def wait_status(page, text: str) -> str:
    page.wait_for_function("t => document.querySelector('#status').innerText.includes(t)", arg=text)
    return status(page)


def go_to(page, button: str, name: str) -> None:
    """Press Next or Previous and wait for the other image to be shown."""
    before = wait_for_image(page, "canvas")
    page.locator(f"#{button}").click()
    wait_status(page, name)
    wait_for_image(page, "canvas", before)


def shown_unscaled(page) -> tuple[int, int]:
    """The shown picture's size, after checking the browser draws it 1:1 (so a click hits one shown pixel)."""
    natural, box = page.evaluate(
        "() => { const i = document.querySelector('#canvas img'); const b = i.getBoundingClientRect();"
        " return [[i.naturalWidth, i.naturalHeight], [b.width, b.height]]; }"
    )
    assert box[0] >= natural[0] and box[1] >= natural[1], f"the browser scales the picture: {natural} in {box}"
    return natural[0], natural[1]


def points_in(root: Path, name: str) -> list[list[float]]:
    return json.loads((root / "annotated" / f"{name}.json").read_text())["points"]


def test_the_annotation_page_in_chromium(tmp_path):
    """Clicks land on the exact image pixels for any size; Clear Last, Save, resume, and a mask."""
    require_chromium()
    root = tmp_path / "animal"
    make_dataset(root)
    port = free_port()
    args = [
        f"dataset.root={root}",
        "display.max_side=800",
        f"ui.port={port}",
        f"paths.output_dir={tmp_path / 'outputs'}",
        f"hydra.run.dir={tmp_path / 'run'}",
        *SAM2_SMALL,
    ]
    with served("src.annotate", args, port) as url, browser_page(url) as page:
        page.set_viewport_size({"width": 1600, "height": 1100})
        wait_for_image(page, "canvas")
        text = wait_status(page, "next: point 0 (contour)")
        assert "image 2/4" in text and "1/4 complete" in text  # resumed after the finished image

        # 64x48 and 300x200 are shown as they are: a click is the pixel itself
        assert shown_unscaled(page) == (64, 48)
        for x, y in [(5, 7), (60, 40), (31, 20)]:
            click_image(page, "canvas", x, y)
        wait_status(page, "next: point 3 (contour)")
        page.locator("#clear-last").click()
        wait_status(page, "next: point 2 (contour)")
        page.locator("#save").click()
        wait_status(page, "saved 2 of 28 points")
        assert points_in(root, "2_small") == [[5, 7], [60, 40]]

        go_to(page, "next", "3_wide.png")
        assert shown_unscaled(page) == (300, 200)
        for x, y in [(10, 190), (250, 30)]:
            click_image(page, "canvas", x, y)
        page.locator("#save").click()
        wait_status(page, "saved 2 of 28 points")
        assert points_in(root, "3_wide") == [[10, 190], [250, 30]]

        # 1600x900 is shown at 800x450 (scale 0.5): a shown pixel covers 2x2 image pixels, so a click
        # lands within 0.5 / 0.5 = 1 image pixel of its target, at exactly (shown + 0.5) / 0.5 - 0.5
        go_to(page, "next", "4_large.png")
        assert shown_unscaled(page) == (800, 450)
        targets = [(1234, 567), (3, 897)]
        for x, y in targets:
            click_image(page, "canvas", int((x + 0.5) * 0.5), int((y + 0.5) * 0.5))
        page.locator("#save").click()
        wait_status(page, "saved 2 of 28 points")
        saved = points_in(root, "4_large")
        assert saved == [[1234.5, 566.5], [2.5, 896.5]]
        assert np.abs(np.array(saved) - np.array(targets)).max() <= 1.0

        page.reload(wait_until="domcontentloaded")  # a new visit starts where the files leave off
        wait_for_image(page, "canvas")
        text = wait_status(page, "next: point 2 (contour)")
        assert "image 2/4" in text and "2_small.png" in text

        page.get_by_label("mask").check()
        wait_status(page, "mask mode")
        click_image(page, "canvas", 32, 24)  # SAM2 loads now; the mask is drawn before this returns
        wait_status(page, "1 click(s)")
        page.locator("#save").click()
        wait_status(page, "saved the mask")
    mask = np.asarray(Image.open(root / "masks" / "train" / "2_small.png"))
    assert mask.shape == (48, 64) and set(np.unique(mask)) <= {0, 255} and mask.any()
    assert (root / "images" / "train" / "2_small.png").is_file()
    assert points_in(root, "2_small") == [[5, 7], [60, 40]]  # mask mode left the landmarks alone


def test_the_page_zooms_shows_where_points_go_and_restores_clicks_of_a_closed_tab(tmp_path):
    """Zoomed 4x, the picture is drawn 1:1 (it scrolls) and a click lands on a quarter pixel; the diagram's
    ring moves with each point; a tab closed without Save loses nothing."""
    require_chromium()
    root = tmp_path / "animal"
    make_dataset(root)
    port = free_port()
    args = [f"dataset.root={root}", f"ui.port={port}", f"hydra.run.dir={tmp_path / 'run'}", *SAM2_SMALL]
    with served("src.annotate", args, port) as url, browser_page(url) as page:
        page.set_viewport_size({"width": 1600, "height": 1100})
        wait_for_image(page, "canvas")
        wait_status(page, "next: point 0 (contour)")
        diagram = wait_for_image(page, "reference")
        assert page.evaluate("() => document.querySelector('#reference img').naturalWidth") == 320

        before = wait_for_image(page, "canvas")
        page.locator("#zoom input[type=number]").fill("4")
        page.locator("#zoom input[type=number]").press("Enter")
        wait_for_image(page, "canvas", before)
        assert shown_unscaled(page) == (256, 192)  # 64x48 at 4x, drawn as sent
        click_image(page, "canvas", 130, 98)  # shown pixel 130 covers image x 32.0 ... 32.25
        wait_status(page, "next: point 1 (contour)")
        assert wait_for_image(page, "reference", diagram) != diagram  # the ring moved to point 1
        draft = root / "annotated" / ".drafts" / "2_small.json"
        assert json.loads(draft.read_text())["points"] == [[32.125, 24.125]]
        assert not (root / "annotated" / "2_small.json").exists()  # not saved: only the draft

        page.close()  # the tab closes without Save
        again = page.context.browser.new_page()
        again.set_default_timeout(60_000)
        again.goto(url, wait_until="domcontentloaded")
        wait_for_image(again, "canvas")
        text = wait_status(again, "restored from the draft")
        assert "2_small.png" in text and "next: point 1 (contour)" in text
        again.locator("#save").click()
        wait_status(again, "saved 1 of 28 points")
    assert points_in(root, "2_small") == [[32.125, 24.125]] and not draft.exists()
