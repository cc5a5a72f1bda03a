"""Panel extraction against ground-truth panel boxes: precision and recall at an IoU threshold.

    python -m benchmarks.manga_panels FOLDER [--iou 0.5] [--scale 1.0] [--out DIR]
        [--subset all|tuning|held-out] [--held-out-titles T ...] [--held-out-every 4]
        [prepare.panel.KEY=VALUE ...]

FOLDER holds `annotation.json` in OpenMantra's format (a list of books, each with `book_title` and
`pages`; a page has `image_paths` {lang: path relative to FOLDER} and `frame`: panel boxes
{x, y, w, h}) and the images. The extractor is the one `python -m src.prepare dataset=manga
prepare.mode=panel` uses, with conf/prepare/manga.yaml's settings plus any overrides given;
`--scale` resizes every page (and its true boxes) first, as a scan at another resolution would be.

`--subset` keeps the pages settings are tuned on apart from those that check they generalise: the
held-out pages are every page of `--held-out-titles` and every `--held-out-every`-th page (by the
number in its file name) of the other titles. Prints a table per page, per title and the totals;
writes to --out `pages.png` (every page, true boxes red, found green) and `misses.png` (the pages
with a miss: true boxes no found box matches red, found boxes that match none blue, matches thin
green).
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import torch
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.utils import instantiate

from src.cli import CONFIG_DIR
from src.data.mask_io import read_image
from src.data.preparation.panels import panel_boxes
from src.tasks.segmentation.metrics import matched_pairs
from src.utils.pictures import grid, save_png

Box = tuple[int, int, int, int]
TILE_WIDTH = 415


@dataclass
class Page:
    title: str
    image: Path
    truth: list[Box]  # x0, y0, x1, y1


@dataclass
class Result:
    name: str
    title: str
    truth: int
    found: int
    matched: int


def pages(folder: Path) -> list[Page]:
    """Every annotated page of FOLDER, with its title (the book's, else the image's folder)."""
    books = json.loads((folder / "annotation.json").read_text())
    found = []
    for book in books:
        for page in book["pages"]:
            for image in page["image_paths"].values():
                boxes = [(f["x"], f["y"], f["x"] + f["w"], f["y"] + f["h"]) for f in page["frame"]]
                found.append(Page(book.get("book_title") or Path(image).parent.name, folder / image, boxes))
                break
    return found


def is_held_out(page: Page, titles: list[str], every: int) -> bool:
    """Whether a page is kept aside from tuning: its title is held out, or its number is."""
    number = "".join(c for c in page.image.stem if c.isdigit())
    return page.title in titles or (every > 0 and number != "" and int(number) % every == every - 1)


def draw(
    image: np.ndarray, found: list[Box], truth: list[Box], pairs: list[tuple[int, int]], misses: bool
) -> np.ndarray:
    """A tile of the page with its boxes: all of them, or (`misses`) what did not match in colour."""
    picture = image.copy()
    hit_found, hit_truth = {i for i, _ in pairs}, {j for _, j in pairs}
    for j, box in enumerate(truth):
        if not misses or j not in hit_truth:
            cv2.rectangle(picture, box[:2], box[2:], (230, 25, 75), 8)
    for i, box in enumerate(found):
        inner = ((box[0] + 6, box[1] + 6), (box[2] - 6, box[3] - 6))
        if not misses:
            cv2.rectangle(picture, *inner, (60, 180, 75), 5)
        elif i in hit_found:
            cv2.rectangle(picture, *inner, (60, 180, 75), 2)
        else:
            cv2.rectangle(picture, *inner, (0, 90, 230), 6)
    return cv2.resize(picture, (TILE_WIDTH, round(TILE_WIDTH * image.shape[0] / image.shape[1])))


def sheet(tiles: list[np.ndarray]) -> np.ndarray:
    if not tiles:
        return np.full((8, TILE_WIDTH, 3), 255, np.uint8)
    return grid([tiles[i : i + 5] for i in range(0, len(tiles), 5)])


def print_table(rows: list[Result], key: str) -> None:
    print(f"{key:<40}{'pages':>6}{'true':>6}{'found':>7}{'matched':>9}{'precision':>11}{'recall':>8}")
    groups: dict[str, list[Result]] = {}
    for row in rows:
        groups.setdefault(row.name if key == "page" else row.title, []).append(row)
    groups[f"all {len(rows)} pages"] = rows
    for name, group in groups.items():
        true, found, hits = (sum(getattr(r, f) for r in group) for f in ("truth", "found", "matched"))
        scores = f"{hits / max(found, 1):>11.3f}{hits / max(true, 1):>8.3f}"
        print(f"{name:<40}{len(group):>6}{true:>6}{found:>7}{hits:>9}{scores}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("folder", type=Path)
    parser.add_argument("--iou", type=float, default=0.5)
    parser.add_argument("--scale", type=float, default=1.0)
    parser.add_argument("--out", type=Path, default=Path("outputs/benchmarks/manga_panels"))
    parser.add_argument("--subset", choices=["all", "tuning", "held-out"], default="all")
    parser.add_argument("--held-out-titles", nargs="*", default=["boureisougi"])
    parser.add_argument("--held-out-every", type=int, default=4)
    parser.add_argument("overrides", nargs="*", help="Hydra overrides, e.g. prepare.panel.white_level=240")
    args = parser.parse_args()
    GlobalHydra.instance().clear()  # `import sam2` (through src.utils.pictures) initialises it
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        cfg = compose(config_name="prepare", overrides=["dataset=manga", *args.overrides])
    extractor = instantiate(cfg.prepare.panel)

    chosen = pages(args.folder)
    if args.subset != "all":
        held = args.subset == "held-out"
        chosen = [p for p in chosen if is_held_out(p, args.held_out_titles, args.held_out_every) == held]
    rows, tiles, missed = [], [], []
    start = time.perf_counter()
    for page in chosen:
        image, truth = read_image(page.image), page.truth
        if args.scale != 1.0:
            image = cv2.resize(image, None, fx=args.scale, fy=args.scale, interpolation=cv2.INTER_AREA)
            truth = [tuple(round(v * args.scale) for v in box) for box in truth]
        found = panel_boxes(extractor.extract(image))
        pairs = matched_pairs(torch.tensor(found).reshape(-1, 4), torch.tensor(truth).reshape(-1, 4), args.iou)
        rows.append(Result(str(page.image.relative_to(args.folder)), page.title, len(truth), len(found), len(pairs)))
        tiles.append(draw(image, found, truth, pairs, misses=False))
        if len(pairs) < max(len(found), len(truth)):
            missed.append(draw(image, found, truth, pairs, misses=True))
    seconds = time.perf_counter() - start

    print_table(rows, "page")
    print()
    print_table(rows, "title")
    true, found, hits = (sum(getattr(r, f) for r in rows) for f in ("truth", "found", "matched"))
    print(
        f"precision {hits / max(found, 1):.3f}  recall {hits / max(true, 1):.3f}  at IoU >= {args.iou}  "
        f"({seconds / max(len(rows), 1):.2f} s per page)"
    )
    args.out.mkdir(parents=True, exist_ok=True)
    print(f"pages with true (red) and found (green) boxes: {save_png(sheet(tiles), args.out / 'pages.png')}")
    print(
        f"{len(missed)} pages with misses, missed true boxes red, unmatched found boxes blue: "
        f"{save_png(sheet(missed), args.out / 'misses.png')}"
    )


if __name__ == "__main__":
    main()
