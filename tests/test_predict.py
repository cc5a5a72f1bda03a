"""`python -m src.predict`: points and boxes on one image, bad input, and the click page in headless Chromium."""

import shlex
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from src.data.user_input import read_user_image
from src.errors import DataError
from src.models.registry import SAM2_CONFIGS
from src.models.sam2.build import build_sam2_model
from src.tasks.segmentation.interactive import ClickSession
from src.tasks.segmentation.predictor import load_predictor
from src.tasks.segmentation.user_prompts import user_prompts
from tests.browser import browser_page, click_image, download, free_port, require_chromium, served, wait_for_image
from tests.helpers import compose_config, run_module


def output(result) -> str:
    return result.stdout + result.stderr


@pytest.fixture(scope="module")
def photo(tmp_path_factory) -> Path:
    """A 96 x 128 picture of two rectangles on noise."""
    rng = np.random.default_rng(0)
    image = rng.integers(0, 60, (96, 128, 3), dtype=np.uint8)
    image[10:40, 15:60] = (220, 40, 40)
    image[50:90, 70:120] = (40, 220, 40)
    path = tmp_path_factory.mktemp("photo") / "shapes.png"
    Image.fromarray(image).save(path)
    return path


def predict_args(run: dict, photo: Path, out: Path, *prompt: str) -> list[str]:
    return [
        f"image={photo}",
        f"checkpoint={run['run_dir']}",
        f"output_dir={out}",
        f"paths.output_dir={out}",
        f"hydra.run.dir={out / 'run'}",
        *prompt,
    ]


@pytest.fixture(scope="module")
def predictor(fine_tuned_run):
    return load_predictor(compose_config("predict", [f"checkpoint={fine_tuned_run['best']}", "device=cpu"]))[0]


def read_mask(path: Path) -> np.ndarray:
    mask = np.asarray(Image.open(path))
    assert mask.dtype == np.uint8 and set(np.unique(mask)) <= {0, 255}
    return mask > 0


def test_predict_with_a_click_writes_the_result_and_the_chosen_mask(fine_tuned_run, photo, predictor, tmp_path):
    result = run_module("src.predict", predict_args(fine_tuned_run, photo, tmp_path, "points=[[30,25]]"))
    assert result.returncode == 0, output(result)[-3000:]
    scores = [line for line in result.stdout.splitlines() if line.startswith("mask ")]
    assert len(scores) == 3 and sum("(chosen)" in line for line in scores) == 1  # one click: three candidates
    values = [float(line.split("predicted IoU ")[1].split()[0]) for line in scores]
    assert "(chosen)" in scores[int(np.argmax(values))]
    mask = read_mask(tmp_path / "shapes_mask.png")
    assert mask.shape == (96, 128)
    image = np.asarray(Image.open(photo))
    expected = predictor.predict(predictor.encode(image), user_prompts([(30, 25, 1)], None)).best_masks()[0]
    assert (mask == expected.numpy()).mean() > 0.999  # the CLI's mask is the component's mask
    picture = np.asarray(Image.open(tmp_path / "shapes_result.png"))
    assert picture.shape[1] > 4 * 384  # the prompts, then the three candidates


def test_predict_with_a_box_and_a_background_point(fine_tuned_run, photo, predictor, tmp_path):
    prompt = ['box="60,45,125,95"', 'points="20,20,0"']
    result = run_module("src.predict", predict_args(fine_tuned_run, photo, tmp_path, *prompt))
    assert result.returncode == 0, output(result)[-3000:]
    assert len([line for line in result.stdout.splitlines() if line.startswith("mask ")]) == 1
    image = np.asarray(Image.open(photo))
    prompts = user_prompts([(20, 20, 0)], (60, 45, 125, 95))
    expected = predictor.predict(predictor.encode(image), prompts).best_masks()[0].numpy()
    assert (read_mask(tmp_path / "shapes_mask.png") == expected).mean() > 0.999


def test_bad_input_is_one_clear_line(fine_tuned_run, photo, tmp_path):
    checkpoint = fine_tuned_run["run_dir"]
    args = [f"image={photo}", "points=[[300,20]]", f"checkpoint={checkpoint}", f"hydra.run.dir={tmp_path}"]
    result = run_module("src.predict", args)
    assert result.returncode == 1 and "Traceback" not in output(result), output(result)[-3000:]
    assert "PromptError: point (300, 20) is outside shapes.png (128x96 pixels)" in output(result)
    with pytest.raises(DataError, match=r"image=.*nope.jpg: no such file; expected the path of an image"):
        read_user_image(str(tmp_path / "nope.jpg"))
    (tmp_path / "broken.png").write_bytes(b"not an image")
    with pytest.raises(DataError, match=r"cannot read .*broken.png"):
        read_user_image(str(tmp_path / "broken.png"))


def test_the_click_page_in_chromium(fine_tuned_run, photo, predictor, tmp_path):
    """Two clicks change the mask, each redrawn before the next; the download is the mask shown."""
    require_chromium()
    port = free_port()
    args = [*predict_args(fine_tuned_run, photo, tmp_path), "interactive=true", f"ui.port={port}"]
    with served("src.predict", args, port) as url, browser_page(url) as page:
        wait_for_image(page, "canvas")
        click_image(page, "canvas", 30, 25)
        assert "'points=[[30,25,1]]'" in page.locator("#status").inner_text()
        first = read_mask(download(page, "mask", tmp_path / "first.png"))
        page.get_by_label("background").check()
        click_image(page, "canvas", 90, 70)
        status = page.locator("#status").inner_text()
        assert "'points=[[30,25,1],[90,70,0]]'" in status
        second = read_mask(download(page, "mask", tmp_path / "second.png"))
        page.locator("#undo").click()
        page.wait_for_function("() => document.querySelector('#status').innerText.includes('1 point(s)')")
        undone = read_mask(download(page, "mask", tmp_path / "undone.png"))
    session = ClickSession(predictor, np.asarray(Image.open(photo)))
    session.add(30, 25, 1)
    assert first.shape == (96, 128) and (first == session.mask()).mean() > 0.999
    session.add(90, 70, 0)
    assert (second == session.mask()).mean() > 0.999 and (first != second).any()
    assert np.array_equal(undone, first)
    replay = shlex.split(status.split("replay with: ", 1)[1].strip())  # the page's replay line, run as printed
    assert replay[:3] == ["python", "-m", "src.predict"] and f"image={photo}" in replay
    out = tmp_path / "replayed"
    result = run_module("src.predict", [*replay[3:], f"output_dir={out}", f"hydra.run.dir={out / 'run'}"])
    assert result.returncode == 0, output(result)
    # the printed prompt, all clicks at once (the page refines click by click, from the previous mask)
    prompts = user_prompts([(30, 25, 1), (90, 70, 0)], None)
    expected = predictor.predict(predictor.encode(np.asarray(Image.open(photo))), prompts).best_masks()[0].numpy()
    assert (read_mask(out / "shapes_mask.png") == expected).mean() > 0.999


def test_the_model_size_comes_from_the_checkpoint(fine_tuned_run, photo, tmp_path):
    """A checkpoint of SAM2.1-small predicts without model=small; model= on the command line still wins."""
    checkpoint = torch.load(fine_tuned_run["best"], weights_only=True)
    small = build_sam2_model(SAM2_CONFIGS["small"], 128)
    checkpoint["model"], checkpoint["meta"]["model"] = small.state_dict(), "small"
    torch.save(checkpoint, tmp_path / "small.pt")
    args = [f"image={photo}", f"checkpoint={tmp_path / 'small.pt'}", "points=30,25", f"output_dir={tmp_path}"]
    result = run_module("src.predict", [*args, f"hydra.run.dir={tmp_path / 'run'}"])
    assert result.returncode == 0, output(result)
    assert "model=small taken from" in output(result) and (tmp_path / "shapes_mask.png").is_file()
    refused = run_module("src.predict", [*args, "model=tiny", f"hydra.run.dir={tmp_path / 'run2'}"])
    assert refused.returncode == 1 and "small" in output(refused) and "Traceback" not in output(refused)
