"""Writing a dataset in the shared layout, so that an interrupted run never leaves a half-written one.

Everything is written into a hidden folder inside ROOT first; only when every file is there do
`images/`, `masks/` and `overlays/` replace the old ones (by rename) and `prepare.json` records what
was made. Folders ROOT holds besides those (a crawl's `raw/`, split lists) are left alone, and the
splits a run does not write are carried over unchanged.

    ROOT/images/SPLIT/NAME.jpg|png    the image, byte for byte when it came as a file
    ROOT/masks/SPLIT/NAME.png         0/255 for one object, instance ids 1..N for several
    ROOT/overlays/SPLIT/NAME.png      image with tinted, outlined masks, for looking at
    ROOT/prepare.json                 what produced each split (for idempotent reruns), counts, skips
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from src.data.layout import IMAGE_SUFFIXES, IMAGES, MASKS, image_dir, mask_file
from src.errors import DataError
from src.utils.atomic import write_text_atomic
from src.utils.pictures import overlay_masks, save_png

log = logging.getLogger(__name__)

OWNED = (IMAGES, MASKS, "overlays")
RECORD = "prepare.json"
TMP_PREFIX = ".prepare-"
OVERLAY_MAX_SIDE = 1024


@dataclass
class Skipped:
    path: str
    reason: str


@dataclass
class PrepareReport:
    """What a preparation run wrote, printed at the end of every run."""

    root: Path
    title: str
    images: dict[str, int] = field(default_factory=dict)
    objects: dict[str, int] = field(default_factory=dict)
    skipped: list[Skipped] = field(default_factory=list)
    kept: list[str] = field(default_factory=list)
    overlays: int = 0
    up_to_date: bool = False
    notes: list[str] = field(default_factory=list)

    def render(self, max_skipped: int = 20) -> str:
        state = "up to date, nothing written" if self.up_to_date else "written"
        lines = [f"{self.title}: {self.root} ({state})"]
        if self.images:
            lines.append(f"  {'split':<8}{'images':>8}" + (f"{'objects':>9}" if self.objects else ""))
            for split, count in self.images.items():
                objects = f"{self.objects.get(split, 0):>9}" if self.objects else ""
                kept = "  (kept from before)" if split in self.kept else ""
                lines.append(f"  {split:<8}{count:>8}{objects}{kept}")
        if self.overlays:
            lines.append(f"  overlays: {self.overlays} PNG in {self.root / 'overlays'}")
        lines.extend(f"  {note}" for note in self.notes)
        if self.skipped:
            lines.append(f"  skipped {len(self.skipped)}:")
            lines.extend(f"    {s.path}: {s.reason}" for s in self.skipped[:max_skipped])
            if len(self.skipped) > max_skipped:
                lines.append(f"    ... {len(self.skipped) - max_skipped} more in {self.root / RECORD}")
        return "\n".join(lines)


def normalise(spec: Mapping[str, Any]) -> dict[str, Any]:
    """The spec as JSON would give it back, so a fresh spec compares equal to a recorded one."""
    return json.loads(json.dumps(spec, sort_keys=True, default=str))


def read_record(root: Path) -> dict[str, Any]:
    path = Path(root) / RECORD
    if not path.is_file():
        return {"splits": {}, "skipped": []}
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise DataError(f"{path} is not valid JSON ({err}); delete it to prepare {root} again") from err


def current_report(root: Path, title: str, spec: Mapping[str, Any], splits: Iterable[str]) -> PrepareReport | None:
    """A report of the existing dataset if `splits` were made from the same `spec`; else None."""
    root, spec = Path(root), normalise(spec)
    record = read_record(root)
    entries = record["splits"]
    splits = list(splits)
    for split in splits:
        entry = entries.get(split, {})
        if entry.get("spec") != spec or (entry.get("images") and not image_dir(root, split).is_dir()):
            return None
    report = PrepareReport(root, title, up_to_date=True)
    for split, entry in entries.items():
        report.images[split], report.objects[split] = entry["images"], entry["objects"]
    report.skipped = [Skipped(**s) for s in record.get("skipped", [])]
    return report


def link_or_copy(source: Path, dest: Path) -> None:
    """A hard link where the file system allows one (no second copy of a large image), else a copy."""
    try:
        os.link(source, dest)
    except OSError:
        shutil.copy2(source, dest)


def write_mask(ids: np.ndarray, path: Path) -> None:
    """One object as 0/255 (viewable anywhere), several as instance ids (8 or 16 bit)."""
    top = int(ids.max(initial=0))
    if top <= 1:
        mask = (ids > 0).astype(np.uint8) * 255
    elif top <= 255:
        mask = ids.astype(np.uint8)
    elif top <= 65535:
        mask = ids.astype(np.uint16)
    else:
        raise DataError(f"{path}: {top} instances do not fit a 16-bit PNG")
    if not cv2.imwrite(str(path), mask):
        raise OSError(f"could not write {path}")


def decode_image(data: bytes, name: str) -> np.ndarray:
    """RGB uint8 from encoded bytes; a DataError naming the file when they are not an image."""
    image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    if image is None:
        raise DataError(f"{name} is not a readable image")
    return image[..., ::-1]


class DatasetBuilder:
    """Collects the samples of one run and commits them as a whole (see the module docstring).

    `splits` are the splits this run writes; the dataset's other splits are kept as they were.
    """

    def __init__(
        self,
        root: str | Path,
        title: str,
        spec: Mapping[str, Any],
        splits: Iterable[str],
        visualize: int = 16,
        allow_empty: bool = False,
    ):
        self.root, self.title, self.spec = Path(root), title, normalise(spec)
        self.splits, self.visualize, self.allow_empty = list(splits), int(visualize), allow_empty
        self.report = PrepareReport(self.root, title)
        self.names: dict[str, set[str]] = {}
        self.tmp: Path | None = None

    # context -----------------------------------------------------------------
    def __enter__(self) -> DatasetBuilder:
        self.root.mkdir(parents=True, exist_ok=True)
        for stale in self.root.glob(f"{TMP_PREFIX}*"):
            log.warning("removing %s, left by an interrupted run", stale)
            shutil.rmtree(stale, ignore_errors=True)
        self.record = read_record(self.root)
        on_disk = {p.name for folder in OWNED if (self.root / folder).is_dir() for p in (self.root / folder).iterdir()}
        if on_disk and not (self.root / RECORD).is_file():
            raise DataError(
                f"{self.root} already holds images/ or masks/ that src.prepare did not write (no {RECORD}); "
                "move them away or point dataset.root at another folder, so that nothing of yours is replaced"
            )
        self.tmp = Path(tempfile.mkdtemp(prefix=TMP_PREFIX, dir=self.root))
        for split in sorted((on_disk | set(self.record["splits"])) - set(self.splits)):
            self._keep(split)
        for split in self.splits:
            self.names[split] = set()
            self.report.images[split], self.report.objects[split] = 0, 0
            for folder in OWNED:
                (self.tmp / folder / split).mkdir(parents=True)
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        try:
            if exc_type is None:
                self._commit()
        finally:
            if self.tmp is not None:
                shutil.rmtree(self.tmp, ignore_errors=True)

    # samples -----------------------------------------------------------------
    def add(
        self,
        split: str,
        name: str,
        image: Path | bytes | np.ndarray,
        ids: np.ndarray,
        suffix: str = ".png",
        link: bool = False,
    ) -> None:
        """One image (a file, encoded bytes with their `suffix`, or an RGB array) and its instance ids.

        A file is copied, or hard-linked with `link` when it is ours too (a crawl in ROOT/raw/): a
        link to a user's own file would let an edit of one change the other.
        """
        assert self.tmp is not None, "use DatasetBuilder as a context manager"
        if name in self.names[split]:
            raise DataError(f"two inputs are both named {name!r} in split {split!r}; names must be unique")
        self.names[split].add(name)
        pixels = None
        if isinstance(image, Path):
            dest = image_dir(self.tmp, split) / f"{name}{image.suffix.lower()}"
            (link_or_copy if link else shutil.copy2)(image, dest)
        elif isinstance(image, bytes):
            if suffix.lower() not in IMAGE_SUFFIXES:
                raise DataError(f"{name}{suffix}: expected an image file ({', '.join(IMAGE_SUFFIXES)})")
            (image_dir(self.tmp, split) / f"{name}{suffix.lower()}").write_bytes(image)
        else:
            pixels = image
            cv2.imwrite(str(image_dir(self.tmp, split) / f"{name}.png"), image[..., ::-1])
        write_mask(ids, mask_file(self.tmp, split, name))
        count = len(np.unique(ids[ids > 0]))
        self.report.images[split] += 1
        self.report.objects[split] += count
        if self.report.images[split] <= self.visualize:
            if pixels is None:
                data = image.read_bytes() if isinstance(image, Path) else image
                pixels = decode_image(data, name)
            self._overlay(split, name, pixels, ids)

    def skip(self, path: str | Path, reason: str) -> None:
        self.report.skipped.append(Skipped(str(path), reason))

    def note(self, text: str) -> None:
        self.report.notes.append(text)

    # internals ---------------------------------------------------------------
    def _overlay(self, split: str, name: str, image: np.ndarray, ids: np.ndarray) -> None:
        scale = min(1.0, OVERLAY_MAX_SIDE / max(ids.shape))
        if scale < 1.0:
            size = (round(ids.shape[1] * scale), round(ids.shape[0] * scale))
            image = cv2.resize(image, size, interpolation=cv2.INTER_AREA)
            ids = cv2.resize(ids.astype(np.float32), size, interpolation=cv2.INTER_NEAREST).astype(np.int64)
        objects = np.unique(ids[ids > 0])
        masks = ids[None] == objects[:, None, None] if len(objects) else np.zeros((0, *ids.shape), bool)
        save_png(overlay_masks(image, masks), self.tmp / "overlays" / split / f"{name}.png")
        self.report.overlays += 1

    def _keep(self, split: str) -> None:
        """Carry an untouched split over into the new dataset (hard links, no copies)."""
        for folder in OWNED:
            source = self.root / folder / split
            if source.is_dir():
                shutil.copytree(source, self.tmp / folder / split, copy_function=link_or_copy)
        entry = self.record["splits"].get(split)
        if entry is None:  # a split folder added by hand: carried over, counted by its images
            folder = image_dir(self.root, split)
            entry = {"images": sum(1 for p in folder.glob("*") if p.is_file()) if folder.is_dir() else 0, "objects": 0}
            self.record["splits"][split] = entry
        self.report.images[split], self.report.objects[split] = entry["images"], entry["objects"]
        self.report.kept.append(split)

    def _commit(self) -> None:
        empty = [split for split in self.splits if not self.report.images[split]]
        if empty and self.allow_empty and len(empty) < len(self.splits):
            for split in empty:  # no folder at all: an empty one would read as a broken split
                for folder in OWNED:
                    shutil.rmtree(self.tmp / folder / split)
            self.note(f"no images for split(s) {', '.join(empty)}: left out")
            empty = []
        if empty:
            reasons = "; ".join(f"{s.path}: {s.reason}" for s in self.report.skipped[:5])
            raise DataError(
                f"nothing to write for split(s) {', '.join(empty)} of {self.root}"
                + (f" (skipped: {reasons})" if reasons else "")
                + "; the existing dataset is unchanged"
            )
        splits = {s: e for s, e in self.record["splits"].items() if s in self.report.kept}
        for split in self.splits:
            splits[split] = {
                "spec": self.spec,
                "images": self.report.images[split],
                "objects": self.report.objects[split],
                "written": time.strftime("%Y-%m-%d %H:%M:%S"),
            }
        record = {"splits": splits, "skipped": [vars(s) for s in self.report.skipped]}
        (self.root / RECORD).unlink(missing_ok=True)  # until the record is back, the dataset is incomplete
        for folder in OWNED:
            old = self.root / folder
            if old.exists():
                os.replace(old, self.tmp / f"old-{folder}")
            os.replace(self.tmp / folder, old)
        write_text_atomic(json.dumps(record, indent=2), self.root / RECORD)
