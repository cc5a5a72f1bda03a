"""Panel extraction against ground-truth panel boxes: precision and recall at an IoU threshold.

    python -m benchmarks.manga_panels FOLDER [--iou 0.5] [--scale 1.0] [--out DIR] [prepare.panel.KEY=VALUE ...]

FOLDER holds `annotation.json` in OpenMantra's format (a list of books, each with `pages`; a page
has `image_paths` {lang: path relative to FOLDER} and `frame`: panel boxes {x, y, w, h}) and the
images. The extractor is the one `python -m src.prepare dataset=manga prepare.mode=panel` uses,
with conf/prepare/manga.yaml's settings plus any overrides given; `--scale` resizes every page (and
its true boxes) first, as a scan at another resolution would be. Prints a table per page and the
totals; writes each page with true (red) and found (green) boxes to --out.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import cv2
import torch
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.utils import instantiate

from src.cli import CONFIG_DIR
from src.data.mask_io import read_image
from src.data.preparation.panels import panel_boxes
from src.tasks.segmentation.metrics import match_boxes
from src.utils.pictures import grid, save_png


def pages(folder: Path) -> list[tuple[Path, list[tuple[int, int, int, int]]]]:
    """(image, true boxes x0,y0,x1,y1) for every annotated page."""
    books = json.loads((folder / "annotation.json").read_text())
    found = []
    for book in books:
        for page in book["pages"]:
            for image in page["image_paths"].values():
                boxes = [(f["x"], f["y"], f["x"] + f["w"], f["y"] + f["h"]) for f in page["frame"]]
                found.append((folder / image, boxes))
                break
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("folder", type=Path)
    parser.add_argument("--iou", type=float, default=0.5)
    parser.add_argument("--scale", type=float, default=1.0)
    parser.add_argument("--out", type=Path, default=Path("outputs/benchmarks/manga_panels"))
    parser.add_argument("overrides", nargs="*", help="Hydra overrides, e.g. prepare.panel.white_level=240")
    args = parser.parse_args()
    GlobalHydra.instance().clear()  # `import sam2` (through src.utils.pictures) initialises it
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        cfg = compose(config_name="prepare", overrides=["dataset=manga", *args.overrides])
    extractor = instantiate(cfg.prepare.panel)

    rows, tiles, totals = [], [], [0, 0, 0]
    start = time.perf_counter()
    for path, truth in pages(args.folder):
        image = read_image(path)
        if args.scale != 1.0:
            image = cv2.resize(image, None, fx=args.scale, fy=args.scale, interpolation=cv2.INTER_AREA)
            truth = [tuple(round(v * args.scale) for v in box) for box in truth]
        found = panel_boxes(extractor.extract(image))
        hits = match_boxes(torch.tensor(found).reshape(-1, 4), torch.tensor(truth).reshape(-1, 4), args.iou)
        rows.append((str(path.relative_to(args.folder)), len(truth), len(found), hits))
        totals = [totals[0] + len(truth), totals[1] + len(found), totals[2] + hits]
        picture = image.copy()
        for box in truth:
            cv2.rectangle(picture, box[:2], box[2:], (230, 25, 75), 8)
        for box in found:
            cv2.rectangle(picture, (box[0] + 6, box[1] + 6), (box[2] - 6, box[3] - 6), (60, 180, 75), 5)
        tiles.append(cv2.resize(picture, (415, round(415 * image.shape[0] / image.shape[1]))))
    seconds = time.perf_counter() - start

    print(f"{'page':<40}{'true':>6}{'found':>7}{'matched':>9}")
    for name, true, found, hits in rows:
        print(f"{name:<40}{true:>6}{found:>7}{hits:>9}")
    true, found, hits = totals
    print(f"{'all ' + str(len(rows)) + ' pages':<40}{true:>6}{found:>7}{hits:>9}")
    print(
        f"precision {hits / max(found, 1):.3f}  recall {hits / max(true, 1):.3f}  at IoU >= {args.iou}  "
        f"({seconds / max(len(rows), 1):.2f} s per page)"
    )
    args.out.mkdir(parents=True, exist_ok=True)
    sheet = grid([tiles[i : i + 5] for i in range(0, len(tiles), 5)])
    print(f"pages with true (red) and found (green) boxes: {save_png(sheet, args.out / 'pages.png')}")


if __name__ == "__main__":
    main()
