"""Animal-character art (seed 002): crawled images, seeded split lists, and masks for SAM2.

    ROOT/raw/<source>/<site>_<id>_<md5>.jpg|png   crawled images (gallery-dl), each with NAME.ext.json
    ROOT/raw/archive.sqlite3                      posts already fetched: reruns download nothing twice
    ROOT/train.txt, val.txt, test.txt             image paths relative to ROOT, one per line (seed 002)
    ROOT/images/SPLIT/NAME.*, ROOT/masks/SPLIT/NAME.png    after `character`: SAM2's mask layout

The split lists are what every animal task shares (the landmark annotation tool and task read
them; `character` follows them), so an image has one split for all of them, and keeps it when a
later crawl adds images.

Modes: `crawl` (download, then `split`), `split` (lists from what `raw/` holds), `character`
(pair the listed images with masks named like them in `mask_dir`, e.g. from the annotation tool).
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from tqdm import tqdm

from src.data.layout import IMAGE_SUFFIXES
from src.data.mask_io import read_image
from src.data.preparation.builder import DatasetBuilder, PrepareReport, Skipped, current_report
from src.data.preparation.crawl import crawl
from src.data.preparation.inputs import Unlabelled, UserMasks, fingerprint
from src.data.preparation.splits import assign_splits, check_ratios, read_split_lists, write_split_lists
from src.errors import ConfigError, DataError

MODES = ("crawl", "split", "character")
RAW = "raw"
SIDECARS = (".json", ".part", ".sqlite3", ".log")


def crawled_images(root: Path) -> tuple[dict[str, Path], list[tuple[Path, str]]]:
    """Entry (path relative to ROOT) -> image under ROOT/raw/<source>/, and files that are not used."""
    images, unused = {}, []
    for path in sorted((root / RAW).glob("*/*")):
        if not path.is_file() or path.suffix.lower() in SIDECARS:
            continue
        if path.suffix.lower() not in IMAGE_SUFFIXES:
            unused.append((path, f"a {path.suffix} file, not a still image"))
            continue
        images[path.relative_to(root).as_posix()] = path
    return images, unused


def write_splits(root: Path, ratios: dict[str, float], seed: int, report: PrepareReport) -> dict[str, str]:
    """(Re)write the split lists for every crawled image; images listed before keep their split."""
    images, unused = crawled_images(root)
    if not images:
        raise DataError(f"no crawled images in {root / RAW}/<source>/; crawl first (prepare.mode=crawl)")
    assignment = assign_splits(images, ratios, seed, read_split_lists(root, ratios))
    report.images = write_split_lists(root, assignment, ratios)
    report.skipped.extend(Skipped(str(path), reason) for path, reason in unused)
    without = [path for path in images.values() if not path.with_name(path.name + ".json").is_file()]
    if without:
        report.notes.append(f"{len(without)} images have no metadata JSON beside them (added by hand?)")
    report.notes.append(f"split lists: {', '.join(str(root / f'{s}.txt') for s in ratios)}")
    return assignment


def lists_digest(root: Path, splits: Sequence[str]) -> str:
    digest = hashlib.sha256()
    for split in splits:
        path = root / f"{split}.txt"
        digest.update(path.read_bytes() if path.is_file() else b"-")
    return digest.hexdigest()


def prepare_animal(
    root: str,
    mode: str,
    source: str,
    tags: str,
    limit: int,
    ratings: Sequence[str] | None,
    sources: Mapping[str, Mapping[str, Any]],
    gallery_dl: Mapping[str, Any],
    splits: dict[str, float],
    seed: int,
    visualize: int,
    mask_dir: str | None,
    character: UserMasks,
) -> PrepareReport:
    """Crawl, split, or add masks to the animal dataset in `root` (see the module docstring)."""
    if mode not in MODES:
        raise ConfigError(f"prepare.mode={mode}: expected one of {', '.join(MODES)}")
    root_path, ratios = Path(root).expanduser(), check_ratios(splits)
    if mode == "character":
        return add_masks(root_path, ratios, visualize, mask_dir, character)
    report = PrepareReport(root_path, f"animal ({mode})")
    if mode == "crawl":
        if source not in sources:
            raise ConfigError(f"prepare.source={source}: expected one of {', '.join(sources)}")
        new = crawl(source, sources[source], tags, int(limit), root_path / RAW, ratings, gallery_dl)
        report.notes.append(f"crawled {source} for '{tags}': {new} new images (limit {limit}, ratings {ratings})")
    write_splits(root_path, ratios, seed, report)
    return report


def add_masks(
    root: Path, ratios: dict[str, float], visualize: int, mask_dir: str | None, character: UserMasks
) -> PrepareReport:
    """The listed images with their masks from `mask_dir`, in SAM2's layout; unmasked ones reported."""
    entries = read_split_lists(root, ratios)
    if not entries:
        raise DataError(f"no split lists ({', '.join(f'{s}.txt' for s in ratios)}) in {root}; crawl first")
    spec = {"lists": lists_digest(root, ratios), "masks": fingerprint(mask_dir), "mask_type": character.mask_type}
    written = sorted(set(entries.values()))
    title = "animal (character masks)"
    if (report := current_report(root, title, spec, written)) is not None:
        return report
    with DatasetBuilder(root, title, spec, written, visualize, allow_empty=True) as builder:
        for entry, split in tqdm(sorted(entries.items()), desc="masks", unit="img"):
            path = root / entry
            try:
                image = read_image(path)
                _, ids = character(Path(entry).stem, image)
            except (Unlabelled, DataError) as err:
                builder.skip(path, str(err))
                continue
            builder.add(split, Path(entry).stem, path, ids, link=True)
        listed = {Path(entry).stem for entry in entries}
        for name, path in character.unmatched().items():
            if name not in listed:
                builder.skip(path, "a mask with no listed image of that name")
    return builder.report
