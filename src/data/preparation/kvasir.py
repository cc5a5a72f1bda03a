"""Kvasir-SEG (seed 001): the official archive, or a local copy, into train/val with binary masks.

The archive holds `Kvasir-SEG/images/NAME.jpg` and `Kvasir-SEG/masks/NAME.jpg` (and a bounding-box
JSON). Masks are JPEGs with compression noise, binarised at >127 and written as PNG; images are
copied byte for byte. Members are read straight from the zip, so nothing is extracted to disk.
"""

from __future__ import annotations

import io
import logging
import zipfile
from collections.abc import Callable
from pathlib import Path, PurePosixPath
from urllib.parse import urlparse

import numpy as np
from PIL import Image, UnidentifiedImageError
from tqdm import tqdm

from src.data.layout import IMAGE_SUFFIXES
from src.data.preparation.builder import DatasetBuilder, PrepareReport, current_report, decode_image
from src.data.preparation.inputs import fingerprint
from src.data.preparation.splits import assign_splits, check_ratios
from src.errors import ConfigError, DataError, DownloadError
from src.utils.download import download

log = logging.getLogger(__name__)

TITLE = "Kvasir-SEG"
MASK_THRESHOLD = 127
LAYOUT = "Kvasir-SEG/images/NAME.jpg with Kvasir-SEG/masks/NAME.jpg"


def fetch_archive(
    url: str, cache_dir: str | Path, size: int | None, sha256: str | None, retries: int
) -> tuple[Path, str]:
    """The official archive in the cache, downloaded (and verified) once; with its identity."""
    dest = Path(cache_dir).expanduser() / "datasets" / Path(urlparse(url).path).name
    log.info("Kvasir-SEG archive: %s (cached at %s)", url, dest)
    try:
        path = download(url, dest, size=size, sha256=sha256, retries=retries)
    except DownloadError as err:
        raise DownloadError(
            f"{err} Without internet (or if the site's certificate is refused), download the archive from "
            f"https://datasets.simula.no/kvasir-seg/ yourself and pass prepare.source=/path/to/kvasir-seg.zip "
            "(or the extracted folder)."
        ) from err
    return path, sha256 or fingerprint(path)


def archive_members(path: Path) -> dict[str, Callable[[], bytes]]:
    """Readers for every file of a zip archive or a folder, keyed by their POSIX relative path."""
    if path.is_dir():
        return {p.relative_to(path).as_posix(): p.read_bytes for p in sorted(path.rglob("*")) if p.is_file()}
    try:
        archive = zipfile.ZipFile(path)
        broken = archive.testzip()
    except (zipfile.BadZipFile, OSError, EOFError) as err:
        raise DataError(
            f"{path} is not a readable zip archive ({err}): it is truncated or corrupt. Delete it and run again "
            "to download it anew, or pass prepare.source= a good copy"
        ) from err
    if broken is not None:
        raise DataError(f"{path} is corrupt: {broken} fails its CRC check. Delete it and run again")
    return {
        info.filename: (lambda name=info.filename: archive.read(name))
        for info in archive.infolist()
        if not info.is_dir()
    }


def find_pairs_in(members: dict[str, Callable[[], bytes]]) -> tuple[dict[str, tuple[str, str]], list[str]]:
    """name -> (image member, mask member), matched by file name; and members left unmatched."""
    found: dict[str, dict[str, str]] = {"images": {}, "masks": {}}
    for member in members:
        posix = PurePosixPath(member)
        if "__MACOSX" in posix.parts or posix.name.startswith("."):
            continue
        if posix.suffix.lower() in IMAGE_SUFFIXES and posix.parent.name in found:
            found[posix.parent.name][posix.stem] = member
    images, masks = found["images"], found["masks"]
    if not images or not masks:
        raise DataError(f"no images/ and masks/ folders with JPEGs found; expected {LAYOUT}")
    pairs = {name: (images[name], masks[name]) for name in sorted(images.keys() & masks.keys())}
    unmatched = [images[n] for n in sorted(images.keys() - masks.keys())] + [
        masks[n] for n in sorted(masks.keys() - images.keys())
    ]
    return pairs, unmatched


def binary_mask(data: bytes, member: str) -> np.ndarray:
    """A JPEG mask (any channels) as 0/1, thresholded at >127 against compression noise."""
    gray = decode_image(data, member).max(axis=2)
    return (gray > MASK_THRESHOLD).astype(np.uint8)


def prepare_kvasir(
    root: str,
    url: str,
    size: int | None,
    sha256: str | None,
    source: str | None,
    cache_dir: str,
    expected_pairs: int | None,
    splits: dict[str, float],
    seed: int,
    visualize: int,
    retries: int = 3,
) -> PrepareReport:
    """Download (or take `source`), pair, binarise and split Kvasir-SEG into `root`."""
    ratios = check_ratios(splits)
    if source is not None:
        path = Path(source).expanduser()
        if not path.exists():
            raise ConfigError(f"prepare.source={source}: no such file or folder; expected kvasir-seg.zip or its folder")
        identity = fingerprint(path)
    else:
        path, identity = fetch_archive(url, cache_dir, size, sha256, retries)
    spec = {"source": identity, "splits": ratios, "seed": seed, "threshold": MASK_THRESHOLD}
    if (report := current_report(root, TITLE, spec, ratios)) is not None:
        return report
    members = archive_members(path)
    pairs, unmatched = find_pairs_in(members)
    if expected_pairs is not None and len(pairs) != expected_pairs:
        raise DataError(
            f"{path} holds {len(pairs)} image/mask pairs, Kvasir-SEG has {expected_pairs}: an incomplete or "
            f"different archive. Set prepare.expected_pairs=null to use it anyway"
        )
    assignment = assign_splits(pairs, ratios, seed)
    with DatasetBuilder(root, TITLE, spec, ratios, visualize) as builder:
        builder.note(f"source: {path}")
        for member in unmatched:
            builder.skip(member, "no image/mask partner with the same name")
        for name, (image_member, mask_member) in tqdm(pairs.items(), desc="Kvasir-SEG", unit="pair"):
            image = members[image_member]()
            try:
                ids = binary_mask(members[mask_member](), mask_member)
                with Image.open(io.BytesIO(image)) as header:
                    width, height = header.size
            except (DataError, UnidentifiedImageError) as err:
                builder.skip(image_member, f"unreadable: {err}")
                continue
            if (height, width) != ids.shape:
                builder.skip(mask_member, f"mask is {ids.shape[1]}x{ids.shape[0]}, image {width}x{height}")
                continue
            builder.add(assignment[name], name, image, ids, suffix=PurePosixPath(image_member).suffix)
    return builder.report
