"""Helpers for the dataset-preparation tests: running `src.prepare`, drawn manga pages, a short training."""

from __future__ import annotations

import subprocess
from pathlib import Path

import cv2
import numpy as np

from tests.helpers import FAST_TRAIN, run_module

Box = tuple[int, int, int, int]  # x0, y0, x1, y1


def run_prepare(tmp: Path, *overrides: str) -> subprocess.CompletedProcess:
    """`python -m src.prepare` with data, caches and its run folder inside `tmp`."""
    paths = [
        f"paths.data_dir={tmp / 'data'}",
        f"paths.cache_dir={tmp / 'cache'}",
        f"paths.output_dir={tmp / 'outputs'}",
        f"hydra.run.dir={tmp / 'prepare_run'}",
    ]
    return run_module("src.prepare", [*paths, *overrides], timeout=300)


def output(result: subprocess.CompletedProcess) -> str:
    return result.stdout + result.stderr


def train_briefly(train_run, tmp: Path, dataset: str, root: Path) -> subprocess.CompletedProcess:
    """Two optimizer steps of SAM2 segmentation on a prepared folder (`dataset=animal` alone would
    choose the landmark task); checks it finished."""
    result = train_run(
        f"dataset={dataset}", "task=segmentation", f"dataset.root={root}", *FAST_TRAIN,
        "trainer.max_steps=2", "trainer.eval_at_start=false", "task.validation.num_sample_images=1", fast=False,
    )  # fmt: skip
    assert result.returncode == 0, output(result)[-4000:]
    assert (tmp / "run" / "checkpoints" / "last.pt").is_file()
    assert "val/miou" in output(result)
    return result


def draw_page(
    size: tuple[int, int],
    bordered: list[Box],
    frameless: list[Box] = (),
    balloons: list[tuple[int, int, int, int]] = (),
    polygons: list[list[tuple[int, int]]] = (),
    seed: int = 0,
) -> np.ndarray:
    """A white RGB page (w, h) with textured panels: bordered boxes and polygons (3 px black frame),
    frameless boxes (art up to their edge), then white speech balloons (cx, cy, rx, ry) outlined in black."""
    rng = np.random.default_rng(seed)
    w, h = size
    page = np.full((h, w), 255, np.uint8)
    outlines = [np.array(p, np.int32) for p in polygons]
    outlines += [
        np.array([(x0, y0), (x1 - 1, y0), (x1 - 1, y1 - 1), (x0, y1 - 1)], np.int32) for x0, y0, x1, y1 in bordered
    ]
    for shape in [
        *(np.array([(x0, y0), (x1 - 1, y0), (x1 - 1, y1 - 1), (x0, y1 - 1)]) for x0, y0, x1, y1 in frameless),
        *outlines,
    ]:
        region = np.zeros((h, w), np.uint8)
        cv2.fillPoly(region, [shape.astype(np.int32)], 1)
        texture = cv2.GaussianBlur(rng.integers(60, 200, (h, w), dtype=np.uint8), (0, 0), 3)
        page[region > 0] = texture[region > 0]
    cv2.polylines(page, outlines, True, 0, 3)
    for cx, cy, rx, ry in balloons:
        cv2.ellipse(page, (cx, cy), (rx, ry), 0, 0, 360, 255, -1)
        cv2.ellipse(page, (cx, cy), (rx, ry), 0, 0, 360, 0, 2)
    return np.repeat(page[..., None], 3, axis=2)


# Pages the panel tests and the manga tests draw: (page, true panel boxes).
W, H = 400, 560
GRID = [(20, 20, 190, 180), (205, 20, 380, 180), (20, 195, 380, 360), (20, 375, 190, 540), (205, 375, 380, 540)]
TOUCHING = [(20, 20, 380, 250), (20, 265, 195, 540), (205, 265, 380, 540)]
BALLOON = (200, 400, 40, 70)  # crosses the gutter between the two lower panels
TOP = [(20, 20, 195, 250), (205, 20, 380, 250)]
BLEED = (0, 250, 400, 560)  # frameless, to the page's edges, touching the upper panels' frames
SLANTED = [[(20, 20), (380, 20), (380, 230), (20, 270)], [(20, 285), (380, 245), (380, 540), (20, 540)]]


def manga_pages() -> dict[str, tuple[np.ndarray, list[Box]]]:
    slanted_boxes = [(20, 20, 381, 271), (20, 245, 381, 541)]
    return {
        "grid": (draw_page((W, H), GRID, seed=1), GRID),
        "balloon": (draw_page((W, H), TOUCHING, balloons=[BALLOON], seed=2), TOUCHING),
        "bleed": (draw_page((W, H), TOP, frameless=[BLEED], seed=3), [*TOP, BLEED]),
        "slanted": (draw_page((W, H), [], polygons=SLANTED, seed=4), slanted_boxes),
    }


def write_pages(folder: Path, pages: dict[str, np.ndarray]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for name, page in pages.items():
        cv2.imwrite(str(folder / f"{name}.png"), page[..., ::-1])
    return folder
