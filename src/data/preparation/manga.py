"""Manga pages (seed 000): four ways to make masks, each written in the shared layout.

- `synthetic`: random shapes painted onto the pages, for first tests;
- `panel`: comic panels found by image processing (`src.data.preparation.panels`), one instance each;
- `character`: the user's own masks (`prepare.mask_dir`), matched by name;
- `test`: N pages drawn with `seed` into a held-out test split, labelled by one of the above.

The first three split their pages into `prepare.splits` (train/val); a page already in the test
split is never put into train or val, and `test` never draws a page that is in train or val.
"""

from __future__ import annotations

import logging
import zlib
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from src.data.layout import image_dir, list_images
from src.data.mask_io import read_image
from src.data.preparation.builder import DatasetBuilder, PrepareReport, current_report, read_record
from src.data.preparation.inputs import Unlabelled, UserMasks, fingerprint
from src.data.preparation.splits import assign_splits, check_ratios
from src.data.synthetic import SHAPES, paint_shapes
from src.errors import ConfigError, DataError

log = logging.getLogger(__name__)

TEST = "test"
Labeller = Callable[[str, np.ndarray], tuple[np.ndarray | None, np.ndarray]]


class SyntheticShapes:
    """Random filled shapes painted onto each page (a per-page seed, so reruns paint the same)."""

    def __init__(
        self,
        num_shapes: int | Sequence[int] = 3,
        kinds: Sequence[str] = SHAPES,
        min_size: float = 0.1,
        max_size: float = 0.3,
        seed: int = 0,
    ):
        counts = [int(num_shapes)] * 2 if isinstance(num_shapes, int) else [int(n) for n in num_shapes]
        if len(counts) != 2 or not 1 <= counts[0] <= counts[1] <= 255:
            raise ConfigError(f"prepare.synthetic.num_shapes={num_shapes}: expected N or [MIN, MAX] within 1..255")
        if not 0 < float(min_size) <= float(max_size) < 1:
            raise ConfigError(
                f"prepare.synthetic min_size={min_size}, max_size={max_size}: expected 0 < min <= max < 1"
            )
        self.counts, self.kinds = counts, tuple(kinds)
        self.min_size, self.max_size, self.seed = float(min_size), float(max_size), int(seed)

    def __call__(self, name: str, image: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        rng = np.random.default_rng([self.seed, zlib.crc32(name.encode())])
        return paint_shapes(image, rng, *self.counts, self.min_size, self.max_size, self.kinds)


def names_in_split(root: Path, split: str) -> set[str]:
    folder = image_dir(root, split)
    return {p.stem for p in folder.iterdir() if p.is_file()} if folder.is_dir() else set()


def label_pages(
    builder: DatasetBuilder, pages: dict[str, Path], assignment: dict[str, str], labeller: Labeller
) -> None:
    """Label each page and add it to its split; pages that get no mask are reported with the reason."""
    for name in tqdm(sorted(assignment), desc="pages", unit="page"):
        path = pages[name]
        try:
            image = read_image(path)
            painted, ids = labeller(name, image)
        except (Unlabelled, DataError) as err:
            builder.skip(path, str(err))
            continue
        builder.add(assignment[name], name, path if painted is None else painted, ids)


def prepare_manga(
    root: str,
    mode: str,
    input_dir: str | None,
    mask_dir: str | None,
    splits: dict[str, float],
    seed: int,
    visualize: int,
    synthetic: SyntheticShapes,
    panel: Labeller,
    character: UserMasks,
    test: dict[str, Any],
) -> PrepareReport:
    """Make masks for the pages in `input_dir` with `mode` and write them into `root`."""
    labellers: dict[str, Labeller] = {"synthetic": synthetic, "panel": panel, "character": character}
    if mode not in (*labellers, TEST):
        raise ConfigError(f"prepare.mode={mode}: expected one of {', '.join((*labellers, TEST))}")
    labelled_by = test["labels"] if mode == TEST else mode
    if labelled_by not in labellers:
        raise ConfigError(f"prepare.test.labels={labelled_by}: expected one of {', '.join(labellers)}")
    labeller = labellers[labelled_by]
    pages = list_images(input_dir, "prepare.input_dir")
    ratios = {TEST: 1.0} if mode == TEST else check_ratios(splits)
    if TEST in ratios and mode != TEST:
        raise ConfigError(f"prepare.splits={dict(splits)}: the test split comes from prepare.mode=test")
    settings = {"mode": mode, "labels": labelled_by, "input": fingerprint(input_dir), "seed": seed}
    settings["labeller"] = {k: v for k, v in vars(labeller).items() if not k.startswith("_") and k != "used"}
    if labelled_by == "character":
        settings["masks"] = fingerprint(mask_dir)
    spec = {**settings, "splits": ratios, **({"num_samples": test["num_samples"]} if mode == TEST else {})}
    title = f"manga ({mode}" + (f", labelled by {labelled_by})" if mode == TEST else ")")
    if (report := current_report(root, title, spec, ratios)) is not None:
        return report

    record = read_record(Path(root))
    others = [s for s in record["splits"] if (s == TEST) != (mode == TEST)]
    excluded = {name: split for split in others for name in names_in_split(Path(root), split)}
    with DatasetBuilder(root, title, spec, ratios, visualize) as builder:
        builder.note(f"pages: {input_dir}")
        for name in sorted(excluded.keys() & pages.keys()):
            builder.skip(pages[name], f"already in the {excluded[name]} split, which this mode leaves as it is")
        candidates = sorted(pages.keys() - excluded.keys())
        if mode == TEST:
            count = min(int(test["num_samples"]), len(candidates))
            if count < int(test["num_samples"]):
                builder.note(f"only {count} pages are left to draw {test['num_samples']} test pages from")
            drawn = np.random.default_rng(seed).choice(len(candidates), count, replace=False)
            assignment = {candidates[i]: TEST for i in sorted(drawn)}
        else:
            assignment = assign_splits(candidates, ratios, seed)
        label_pages(builder, pages, assignment, labeller)
        if labelled_by == "character":
            for name, path in character.unmatched().items():
                if name not in pages:
                    builder.skip(path, "a mask with no page of that name in prepare.input_dir")
    return builder.report
