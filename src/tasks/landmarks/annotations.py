"""One JSON file per annotated image: the contract between the annotation tool and the landmark task.

    ROOT/annotated/<image stem>.json
    {"image": "../raw/safebooru/x.jpg",            # the image, relative to this file's folder
     "image_relative_to": "annotation file",     # older files: "dataset root" (the default when
                                                 # absent), or an absolute path
     "width": 640, "height": 480,      # the image's true size
     "scheme": "anime_face_28",
     "points": [[x, y], ...],          # in image pixels, in landmark order; the centre of the
                                       # top-left pixel is (0, 0); fewer than the scheme's count
                                       # while `complete` is false (the annotator resumes there)
     "complete": true,
     "annotator": "alice", "updated_at": "2026-12-01T23:40:00+00:00"}

The annotation tool (`python -m src.annotate`) writes these files; the landmark task reads them.
A path relative to the file keeps a folder of images and its annotations valid wherever they move.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from pathlib import Path

from src.errors import DataError
from src.tasks.landmarks.scheme import LandmarkScheme
from src.utils.atomic import write_text_atomic

RELATIVE_TO_FILE, RELATIVE_TO_ROOT = "annotation file", "dataset root"


@dataclass
class LandmarkAnnotation:
    image: str
    width: int
    height: int
    scheme: str
    points: list[tuple[float, float]]
    complete: bool
    annotator: str = ""
    updated_at: str = ""
    image_relative_to: str = RELATIVE_TO_ROOT  # what a relative `image` is relative to


def image_reference(image: Path, annotated_dir: Path) -> str:
    """`image` as an annotation in `annotated_dir` refers to it: relative to that folder (POSIX separators)."""
    return Path(os.path.relpath(Path(image).absolute(), Path(annotated_dir).absolute())).as_posix()


def annotated_image(annotation: LandmarkAnnotation, source: Path, root: Path) -> Path:
    """The image an annotation read from file `source` is about (`root`: the dataset root, for older files)."""
    image = Path(annotation.image)
    if image.is_absolute():
        return image
    return (Path(source).parent if annotation.image_relative_to == RELATIVE_TO_FILE else Path(root)) / image


def annotation_path(annotated_dir: Path, image: str | Path) -> Path:
    """Where the annotation of `image` (a path relative to the dataset root) lives."""
    return Path(annotated_dir) / f"{Path(image).stem}.json"


def save_annotation(annotation: LandmarkAnnotation, annotated_dir: Path) -> Path:
    """Write atomically, stamping the time: an interrupted save leaves the previous file intact."""
    annotation.updated_at = datetime.now(timezone.utc).isoformat(timespec="seconds")
    record = asdict(annotation)
    record["points"] = [[float(x), float(y)] for x, y in annotation.points]
    return write_text_atomic(json.dumps(record, indent=1) + "\n", annotation_path(annotated_dir, annotation.image))


def load_annotation(path: Path, scheme: LandmarkScheme | None = None) -> LandmarkAnnotation:
    """Read and check one file; a problem is a DataError naming the file and what was expected."""
    try:
        record = json.loads(Path(path).read_text())
    except (OSError, json.JSONDecodeError) as err:
        raise DataError(f"{path}: not a readable annotation JSON ({err})") from err
    missing = [k for k in ("image", "width", "height", "scheme", "points", "complete") if k not in record]
    if missing:
        raise DataError(f"{path}: missing key(s) {missing}")
    points = record["points"]
    if not all(isinstance(p, list | tuple) and len(p) == 2 for p in points):
        raise DataError(f"{path}: `points` must be a list of [x, y] pairs")
    annotation = LandmarkAnnotation(
        image=str(record["image"]),
        width=int(record["width"]),
        height=int(record["height"]),
        scheme=str(record["scheme"]),
        points=[(float(x), float(y)) for x, y in points],
        complete=bool(record["complete"]),
        annotator=str(record.get("annotator", "")),
        updated_at=str(record.get("updated_at", "")),
        image_relative_to=str(record.get("image_relative_to", RELATIVE_TO_ROOT)),
    )
    if annotation.image_relative_to not in (RELATIVE_TO_FILE, RELATIVE_TO_ROOT):
        raise DataError(
            f"{path}: image_relative_to {annotation.image_relative_to!r}, expected "
            f"{RELATIVE_TO_FILE!r} or {RELATIVE_TO_ROOT!r}"
        )
    if scheme is not None:
        if annotation.scheme != scheme.name:
            raise DataError(f"{path}: scheme {annotation.scheme!r}, expected {scheme.name!r}")
        expected = scheme.num_points if annotation.complete else None
        if len(points) > scheme.num_points or (expected is not None and len(points) != expected):
            raise DataError(
                f"{path}: {len(points)} points; a complete {scheme.name} annotation has {scheme.num_points}"
            )
    return annotation
