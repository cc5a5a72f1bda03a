"""Annotating a folder of images, independent of any user interface: landmarks in order, or a mask.

`python -m src.annotate` drives one `AnnotationSession` per browser tab; so can a test or a script.
Landmarks are placed one after another in the scheme's order (0, 1, ...), in the image's own pixels
(the centre of the top-left pixel is (0, 0)), and saved as one JSON per image
(`src.tasks.landmarks.annotations`), complete or not. Every click also writes a draft
(`<annotations>/.drafts/<stem>.json`), so a closed tab or a crash loses nothing: a new session
starts at an image with a draft, or else at the first image whose annotation is not complete, with
its draft's points (unsaved, until Save or Next/Previous) or the points saved so far. In mask mode,
clicks are SAM2 point prompts (`ClickSession`), and Save writes the mask into SAM2's dataset layout:

    ROOT/images/SPLIT/NAME.ext   the image (a hard link where possible), SPLIT from ROOT/SPLIT.txt
    ROOT/masks/SPLIT/NAME.png    0/255, the size of the image

so that `python -m src.train dataset=animal task=segmentation` trains on what was drawn.
"""

from __future__ import annotations

import os
import shutil
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from src.data.layout import IMAGE_SUFFIXES, find_images, image_dir, mask_file
from src.data.mask_io import read_image
from src.data.preparation.splits import read_split_lists
from src.errors import DataError, PromptError
from src.tasks.landmarks.annotations import (
    RELATIVE_TO_FILE,
    LandmarkAnnotation,
    annotation_path,
    image_reference,
    load_annotation,
    save_annotation,
)
from src.tasks.landmarks.scheme import LandmarkScheme
from src.tasks.segmentation.interactive import ClickSession
from src.tasks.segmentation.predictor import Sam2Predictor
from src.tasks.segmentation.prompts import LABEL_NEGATIVE, LABEL_POSITIVE
from src.tasks.segmentation.user_prompts import check_inside
from src.utils.atomic import atomic_path
from src.utils.pictures import save_mask_png

DRAFTS = ".drafts"  # in the annotations folder: each image's clicks since its last save, written on every click


@dataclass(frozen=True)
class NextPoint:
    """The landmark the next click places."""

    index: int
    group: str
    color: tuple[int, int, int]


def images_to_annotate(root: Path, image_dir: str | Path | None, splits: Sequence[str]) -> list[str]:
    """The images to annotate, as paths relative to `root` where they lie under it (absolute otherwise).

    `image_dir` given: every image below it. Otherwise the entries of the split lists
    (`root/<split>.txt`), or, before there are lists, every image below `root/raw`.
    """
    if image_dir is None:
        listed = read_split_lists(root, splits)
        if listed:
            return unique_stems(sorted(listed), "the split lists")
        folder, key = root / "raw", "dataset.root"
        hint = (
            f"expected split lists ({', '.join(f'{s}.txt' for s in splits)}) in {root} or images below {folder}: "
            "crawl first (python -m src.prepare dataset=animal ...) or give image_dir=FOLDER"
        )
    else:
        folder, key = Path(image_dir).expanduser(), "image_dir"
        hint = "expected a folder of images"
    if not folder.is_dir():
        raise DataError(f"{key}: {folder} does not exist; {hint}")
    found = find_images(folder, key)  # as prepare and automask search a folder
    return unique_stems([p.relative_to(root).as_posix() if p.is_relative_to(root) else str(p) for p in found], folder)


def annotations_folder(root: Path, image_dir: str | Path | None, annotated_dir: str | Path | None) -> Path:
    """Where the JSONs go: `annotated_dir` when set; else `root/annotated` for the dataset's own images (where
    training reads them), and `<image_dir>/annotated` for a folder elsewhere, which then keeps its annotations."""
    if annotated_dir is not None:
        return Path(annotated_dir).expanduser()
    if image_dir is None or Path(image_dir).expanduser().absolute().is_relative_to(root.absolute()):
        return root / "annotated"
    return Path(image_dir).expanduser() / "annotated"


def unique_stems(entries: list[str], where: str | Path) -> list[str]:
    """`entries`, refused when two share a file name stem: their annotation JSONs would be one file."""
    seen: dict[str, str] = {}
    for entry in entries:
        if (other := seen.setdefault(Path(entry).stem, entry)) != entry:
            raise DataError(
                f"{other} and {entry} (in {where}) share the name {Path(entry).stem!r}, so their annotations "
                "would share a file; rename one"
            )
    return entries


class LazyPredictor:
    """SAM2, built on first use only (mask mode), once for every session that asks."""

    def __init__(self, load: Callable[[], Sam2Predictor]):
        self._load, self._predictor, self._lock = load, None, threading.Lock()

    def __call__(self) -> Sam2Predictor:
        with self._lock:
            if self._predictor is None:
                self._predictor = self._load()
            return self._predictor

    @property
    def loaded(self) -> bool:
        return self._predictor is not None


class AnnotationSession:
    """The images, which one is open, its landmarks so far, and (in mask mode) its SAM2 clicks."""

    def __init__(
        self,
        root: Path,
        images: Sequence[str],
        annotated_dir: Path,
        scheme: LandmarkScheme,
        annotator: str = "",
        splits: Sequence[str] = ("train", "val", "test"),
        predictor: Callable[[], Sam2Predictor] | None = None,
    ):
        if not images:
            raise DataError(f"no images to annotate in {root}")
        self.root, self.images, self.annotated_dir = Path(root), list(images), Path(annotated_dir)
        self.scheme, self.annotator, self.splits, self.predictor = scheme, annotator, tuple(splits), predictor
        self.index = 0
        self.completed = {entry for entry in self.images if (a := self.load(entry)) is not None and a.complete}
        self.points: list[tuple[float, float]] = []
        self.dirty = False  # points changed since the last save or load
        self.restored = False  # the points came from a draft: clicks not saved when the last session ended
        self.clicks: ClickSession | None = None
        self.image = np.zeros((0, 0, 3), np.uint8)  # RGB as stored (no EXIF rotation): the pixels training reads
        self.go(self.resume_index(), save=False)

    # which image -------------------------------------------------------------
    @property
    def entry(self) -> str:
        return self.images[self.index]

    @property
    def path(self) -> Path:
        return self.root / self.entry  # an absolute entry stays itself

    @property
    def name(self) -> str:
        return Path(self.entry).stem

    @property
    def size(self) -> tuple[int, int]:
        height, width = self.image.shape[:2]
        return width, height

    def annotation_file(self, entry: str | None = None) -> Path:
        return annotation_path(self.annotated_dir, entry or self.entry)

    def draft_file(self, entry: str | None = None) -> Path:
        return annotation_path(self.annotated_dir / DRAFTS, entry or self.entry)

    def load(self, entry: str, draft: bool = False) -> LandmarkAnnotation | None:
        path = self.draft_file(entry) if draft else self.annotation_file(entry)
        return load_annotation(path, self.scheme) if path.is_file() else None

    def resume_index(self) -> int:
        """An image with a draft, else the first without a complete annotation (the first when all are done)."""
        drafted = next((i for i, entry in enumerate(self.images) if self.draft_file(entry).is_file()), None)
        if drafted is not None:
            return drafted
        return next((i for i, entry in enumerate(self.images) if entry not in self.completed), 0)

    def go(self, index: int, save: bool = True) -> None:
        """Open image `index` with its saved points; unsaved points of the one left are saved first."""
        index = max(0, min(int(index), len(self.images) - 1))
        entry = self.images[index]
        image = read_image(self.root / entry)
        annotation, draft = self.load(entry), self.load(entry, draft=True)
        height, width = image.shape[:2]
        for found, path in ((annotation, self.annotation_file(entry)), (draft, self.draft_file(entry))):
            if found is not None and (found.width, found.height) != (width, height):
                raise DataError(
                    f"{path}: made for a {found.width}x{found.height} image, but "
                    f"{self.root / entry} is {width}x{height}; move the file away to annotate the image again"
                )
        if save and self.dirty:
            self.save()
        self.index, self.image, self.clicks = index, image, None
        latest = draft if draft is not None else annotation
        self.points = list(latest.points) if latest is not None else []
        self.dirty = self.restored = draft is not None

    def next(self) -> None:
        self.go(self.index + 1)

    def previous(self) -> None:
        self.go(self.index - 1)

    # landmarks ---------------------------------------------------------------
    @property
    def complete(self) -> bool:
        return len(self.points) == self.scheme.num_points

    def next_point(self) -> NextPoint | None:
        """What the next click places, or None when every landmark is placed."""
        if self.complete:
            return None
        index = len(self.points)
        group = self.scheme.group_of(index)
        return NextPoint(index, group.name, group.color)

    def add_point(self, x: float, y: float) -> None:
        """Place the next landmark at (x, y) in image pixels."""
        if self.complete:
            raise PromptError(f"all {self.scheme.num_points} landmarks are placed; Clear Last to move one")
        width, height = self.size
        check_inside([(x, y, LABEL_POSITIVE)], None, width, height, self.path.name)
        self.points.append((float(x), float(y)))
        self.changed()

    def clear_last(self) -> None:
        if self.points:
            self.points.pop()
            self.changed()

    def clear_all(self) -> None:
        if self.points:
            self.points.clear()
            self.changed()

    def changed(self) -> None:
        """The points moved: keep them in this image's draft (atomically) until Save."""
        self.dirty = True
        save_annotation(self.annotation(self.annotated_dir / DRAFTS), self.annotated_dir / DRAFTS)

    def annotation(self, folder: Path) -> LandmarkAnnotation:
        """The points so far, as a file in `folder` records them (the image relative to that folder)."""
        width, height = self.size
        return LandmarkAnnotation(
            image=image_reference(self.path, folder),
            width=width,
            height=height,
            scheme=self.scheme.name,
            points=list(self.points),
            complete=self.complete,
            annotator=self.annotator,
            image_relative_to=RELATIVE_TO_FILE,
        )

    def save(self) -> Path:
        """Write this image's JSON (complete when every landmark is placed, else partial), atomically."""
        annotation = self.annotation(self.annotated_dir)
        path = save_annotation(annotation, self.annotated_dir)
        self.draft_file().unlink(missing_ok=True)
        (self.completed.add if annotation.complete else self.completed.discard)(self.entry)
        self.dirty = self.restored = False
        return path

    # mask --------------------------------------------------------------------
    def mask_click(self, x: float, y: float, positive: bool = True) -> None:
        """A SAM2 point prompt at (x, y) in image pixels (foreground, or background when not `positive`)."""
        if self.clicks is None:
            if self.predictor is None:
                raise PromptError("mask mode needs SAM2, and this session was started without it")
            self.clicks = ClickSession(self.predictor(), self.image, self.path.name)
        self.clicks.add(x, y, LABEL_POSITIVE if positive else LABEL_NEGATIVE)

    def mask_undo(self) -> None:
        if self.clicks is not None:
            self.clicks.undo()

    def mask_clear(self) -> None:
        if self.clicks is not None:
            self.clicks.clear()

    def mask(self) -> np.ndarray | None:
        """The current (H, W) boolean mask, or None before the first mask click."""
        return None if self.clicks is None else self.clicks.mask()

    def split(self) -> str:
        """The split this image is listed in, which decides where its mask goes."""
        listed = read_split_lists(self.root, self.splits)
        if self.entry not in listed:
            lists = ", ".join(str(self.root / f"{s}.txt") for s in self.splits)
            raise DataError(
                f"{self.entry} is in none of the split lists ({lists}), so its mask has no split; "
                "list it (python -m src.prepare dataset=animal prepare.mode=split) and annotate from the lists"
            )
        return listed[self.entry]

    def mask_files(self) -> tuple[Path, Path]:
        """Where this image and its mask go in the dataset layout."""
        split = self.split()
        return (
            image_dir(self.root, split) / f"{self.name}{self.path.suffix.lower()}",
            mask_file(self.root, split, self.name),
        )

    def save_mask(self) -> Path:
        """Write the current mask (and the image beside it) into ROOT/{images,masks}/SPLIT/; returns the mask."""
        mask = self.mask()
        if mask is None or not mask.any():
            raise PromptError("no mask to save: click on the character first")
        image_dest, mask_dest = self.mask_files()
        for other in image_dest.parent.glob(f"{self.name}.*"):
            if other != image_dest and other.suffix.lower() in IMAGE_SUFFIXES:
                raise DataError(f"{other} has the name of {self.entry} but another suffix; remove one of them")
        if not image_dest.is_file():
            image_dest.parent.mkdir(parents=True, exist_ok=True)
            try:
                os.link(self.path, image_dest)  # one step, and no second copy of the image
            except OSError:  # another file system, or links not allowed: copy, then rename
                with atomic_path(image_dest) as tmp:
                    shutil.copy2(self.path, tmp)
        return save_mask_png(mask, mask_dest)

    def saved_mask(self) -> Path | None:
        """This image's mask in the layout, when one was saved before."""
        try:
            return path if (path := self.mask_files()[1]).is_file() else None
        except DataError:
            return None
