"""Inpainting training samples (seed 003): crops of source images with holes from one mask source.

    python -m src.prepare dataset=inpaint prepare.input_dir=IMAGES prepare.prefix=flickr holes=depth

The input is seed 003's folder (`train/` and `eval/` of images) or a prepared dataset of this
project (`images/train`, `images/val`). Images with a shorter side below `min_side` are upscaled
first. Each image gives `num_samples` crops of `size` px, each the one of `crop_tries` random
crops with the largest hole area between `min_hole_area` and `max_hole_area`.

One run (a prefix and a mask source) writes its files into a hidden folder, then replaces its own
earlier files in ROOT/train and ROOT/eval and records its settings in prepare.json last, so a
rerun with the same settings does nothing and an interrupted one is redone.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
import zlib
from pathlib import Path
from typing import Any

import cv2
import numpy as np
from tqdm import tqdm

from src.data.inpaint_pairs import IMAGE_TAG, MASK_TAG, SampleName, run_key
from src.data.layout import list_images
from src.data.mask_io import read_image
from src.data.preparation.builder import RECORD, TMP_PREFIX, PrepareReport, Skipped, normalise
from src.data.preparation.holes import SourceImage, source_spec
from src.errors import ConfigError, DataError
from src.utils.atomic import write_text_atomic
from src.utils.seeding import derive_seed

log = logging.getLogger(__name__)

SPLITS = {"train": ("train",), "eval": ("eval", "val")}  # output split: its input folder names


def input_splits(input_dir: str | None) -> tuple[Path, dict[str, tuple[str, dict[str, Path]]]]:
    """The input root, and output split -> (input split name, name -> image), for either input layout."""
    if input_dir is None:
        raise ConfigError("prepare.input_dir is not set: expected a folder with train/ and eval/ images")
    root = Path(input_dir).expanduser()
    base = root / "images" if (root / "images").is_dir() and not (root / "train").is_dir() else root
    found = {}
    for split, names in SPLITS.items():
        for name in names:
            if (base / name).is_dir():
                found[split] = (name, list_images(base / name, f"prepare.input_dir/{name}"))
                break
    if not found:
        raise ConfigError(
            f"prepare.input_dir={root}: expected train/ and eval/ image folders (or images/train, images/val)"
        )
    return root, found


def upscaled(image: np.ndarray, short_side: int) -> np.ndarray:
    """`image` with its shorter side raised to `short_side` (seed 003 upscales small sources)."""
    height, width = image.shape[:2]
    if min(height, width) >= short_side:
        return image
    scale = short_side / min(height, width)
    size = (max(short_side, round(width * scale)), max(short_side, round(height * scale)))
    interpolation = cv2.INTER_NEAREST if image.dtype == bool else cv2.INTER_CUBIC
    return cv2.resize(image.astype(np.uint8) if image.dtype == bool else image, size, interpolation=interpolation)


def hardest_crop(
    image: np.ndarray, source: Any, item: SourceImage, holes: np.ndarray | None, size: int, tries: int,
    area: tuple[float, float], rng: np.random.Generator,
) -> tuple[np.ndarray, np.ndarray] | None:  # fmt: skip
    """Of `tries` random crops, the one with the most hole within `area`; None if none qualifies."""
    height, width = image.shape[:2]
    best, best_area = None, -1.0
    for _ in range(tries):
        y, x = int(rng.integers(0, height - size + 1)), int(rng.integers(0, width - size + 1))
        crop = image[y : y + size, x : x + size]
        mask = source.holes(crop, item, rng) if holes is None else holes[y : y + size, x : x + size] > 0
        fraction = float(mask.mean())
        if area[0] <= fraction <= area[1] and fraction > best_area:
            best, best_area = (crop, mask), fraction
    return best


def prepare_inpaint(
    root: str, input_dir: str | None, prefix: str | None, holes: Any, size: int, num_samples: int, min_side: int,
    crop_tries: int, min_hole_area: float, max_hole_area: float, seed: int,
) -> PrepareReport:  # fmt: skip
    if not prefix:
        raise ConfigError("prepare.prefix is not set: it starts every file name ({prefix}_{mask}_{seq}_C.png)")
    if "/" in prefix or prefix.startswith("."):
        raise ConfigError(f"prepare.prefix={prefix!r}: expected a plain name (no '/', not starting with '.')")
    root_path, key = Path(root).expanduser(), run_key(prefix, holes.name)
    spec = normalise({
        "input_dir": str(Path(input_dir).expanduser().resolve()) if input_dir else None, "holes": source_spec(holes),
        "size": size, "num_samples": num_samples, "min_side": min_side, "crop_tries": crop_tries,
        "min_hole_area": min_hole_area, "max_hole_area": max_hole_area, "seed": seed,
    })  # fmt: skip
    record = _read_record(root_path)
    done = record["runs"].get(key)
    if done and done["spec"] == spec and all((root_path / s).is_dir() for s in done["samples"]):
        return _report(root_path, key, done, up_to_date=True)
    input_root, splits = input_splits(input_dir)
    root_path.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=TMP_PREFIX, dir=root_path))
    try:
        entry = {"spec": spec, "samples": {}, "sources": {}, "skipped": []}
        for split_index, (split, (input_split, images)) in enumerate(splits.items()):
            (tmp / split).mkdir()
            seq = 0
            for name, path in tqdm(images.items(), desc=f"{key} {split}", mininterval=1.0):
                rng = np.random.default_rng(derive_seed(seed, split_index, zlib.crc32(name.encode())))
                item = SourceImage(name, path, input_split, input_root)
                try:
                    image = read_image(path)
                except DataError as err:
                    entry["skipped"].append({"path": str(path), "reason": str(err)})
                    continue
                hole_map = None if holes.per_crop else holes.holes(image, item, rng)
                image = upscaled(image, max(min_side, size))
                if hole_map is not None:
                    hole_map = cv2.resize(
                        hole_map.astype(np.uint8), image.shape[1::-1], interpolation=cv2.INTER_NEAREST
                    )
                written = 0
                for _ in range(num_samples):
                    crop = hardest_crop(
                        image, holes, item, hole_map, size, crop_tries, (min_hole_area, max_hole_area), rng
                    )
                    if crop is None:
                        continue
                    sample = SampleName(prefix, holes.name, seq)
                    cv2.imwrite(str(tmp / split / sample.file(IMAGE_TAG)), crop[0][..., ::-1])
                    cv2.imwrite(str(tmp / split / sample.file(MASK_TAG)), crop[1].astype(np.uint8) * 255)
                    seq, written = seq + 1, written + 1
                if written < num_samples:
                    reason = (
                        f"{num_samples - written} of {num_samples} crops had no hole area in "
                        f"[{min_hole_area}, {max_hole_area}] in {crop_tries} tries"
                    )
                    entry["skipped"].append({"path": str(path), "reason": reason})
            entry["samples"][split], entry["sources"][split] = seq, len(images)
        for split in entry["samples"]:
            _replace_run_files(root_path / split, tmp / split, key)
        record["runs"][key] = entry
        write_text_atomic(_dumps(record), root_path / RECORD)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return _report(root_path, key, entry, up_to_date=False)


def _replace_run_files(dest: Path, fresh: Path, key: str) -> None:
    """This run's earlier files in `dest` give way to the fresh ones (other runs' files stay)."""
    dest.mkdir(parents=True, exist_ok=True)
    for old in dest.glob(f"{key}_*"):
        old.unlink()
    for new in sorted(fresh.iterdir()):
        os.replace(new, dest / new.name)


def _read_record(root: Path) -> dict[str, Any]:
    path = root / RECORD
    if not path.is_file():
        return {"runs": {}}
    try:
        record = json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise DataError(f"{path} is not valid JSON ({err}); delete it to prepare {root} again") from err
    if not isinstance(record.get("runs"), dict):
        raise DataError(f"{path} was not written by the inpaint preparation (no 'runs'); use another dataset.root")
    return record


def _dumps(record: dict[str, Any]) -> str:
    return json.dumps(record, indent=2, sort_keys=True) + "\n"


def _report(root: Path, key: str, entry: dict[str, Any], up_to_date: bool) -> PrepareReport:
    report = PrepareReport(root, f"inpaint ({key})", images=dict(entry["samples"]), up_to_date=up_to_date)
    report.skipped = [Skipped(**s) for s in entry["skipped"]]
    sources = ", ".join(f"{split} {count}" for split, count in entry["sources"].items())
    report.notes.append(f"samples from source images: {sources}; files {key}_NNNNNN_C.png / _M.png")
    return report
