"""Downloads with progress, retries, resume of partial files, and size/SHA-256 verification.

Used for SAM2 weights and dataset archives. A file only appears at its final path once it is
complete and verified; a partial download stays in `NAME.part` and is resumed on the next try.
"""

from __future__ import annotations

import hashlib
import logging
import os
import time
import urllib.error
import urllib.request
from pathlib import Path

from tqdm import tqdm

from src.errors import DownloadError

log = logging.getLogger(__name__)

_CHUNK = 1 << 20
USER_AGENT = "samtune (+https://github.com/samtune/samtune)"


def sha256_of(path: str | os.PathLike) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(_CHUNK), b""):
            digest.update(block)
    return digest.hexdigest()


def verify_file(path: Path, *, size: int | None, sha256: str | None) -> None:
    """Raise DownloadError unless `path` has the expected size and checksum."""
    actual_size = path.stat().st_size
    if size is not None and actual_size != size:
        raise DownloadError(f"{path}: expected {size} bytes, found {actual_size} (truncated or wrong file)")
    if sha256 is not None:
        actual = sha256_of(path)
        if actual != sha256.lower():
            raise DownloadError(f"{path}: SHA-256 {actual} does not match the expected {sha256}")


def download(
    url: str,
    dest: str | os.PathLike,
    *,
    size: int | None = None,
    sha256: str | None = None,
    retries: int = 3,
    timeout: float = 60.0,
    backoff: float = 2.0,
) -> Path:
    """Download `url` to `dest` unless a verified copy is already there; return `dest`.

    A verified file is remembered with a `dest.sha256` stamp so that a 900 MB checkpoint is hashed
    once, not on every run.
    """
    dest = Path(dest)
    stamp = dest.with_name(dest.name + ".sha256")
    if dest.exists():
        try:
            _verify_once(dest, stamp, size=size, sha256=sha256)
            return dest
        except DownloadError as err:
            log.warning("%s; downloading it again", err)
            dest.unlink()

    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(dest.name + ".part")
    last_error: Exception | None = None
    for attempt in range(1, retries + 2):
        try:
            _fetch(url, part, total=size, timeout=timeout)
            verify_file(part, size=size, sha256=sha256)
            os.replace(part, dest)
            _write_stamp(stamp, sha256)
            return dest
        except DownloadError as err:
            # a complete file with the wrong bytes cannot be fixed by resuming it
            part.unlink(missing_ok=True)
            last_error = err
        except urllib.error.HTTPError as err:
            if 400 <= err.code < 500 and err.code not in (408, 429):
                raise DownloadError(f"could not download {url}: HTTP {err.code} {err.reason}") from err
            last_error = err
        except (urllib.error.URLError, OSError, TimeoutError) as err:
            last_error = err
        if attempt <= retries:
            wait = backoff ** (attempt - 1)
            log.warning("download of %s failed (%s); retry %d/%d in %.0fs", url, last_error, attempt, retries, wait)
            time.sleep(wait)
    raise DownloadError(
        f"could not download {url} to {dest} after {retries + 1} attempts: {last_error}. "
        "Check the network, or download the file yourself and pass its local path."
    )


def _verify_once(path: Path, stamp: Path, *, size: int | None, sha256: str | None) -> None:
    """Verify `path`, skipping the hash when a stamp says this exact checksum was verified before."""
    if sha256 and stamp.exists() and stamp.read_text().strip() == sha256.lower():
        verify_file(path, size=size, sha256=None)
        return
    verify_file(path, size=size, sha256=sha256)
    _write_stamp(stamp, sha256)


def _write_stamp(stamp: Path, sha256: str | None) -> None:
    if sha256:
        stamp.write_text(sha256.lower())


def _fetch(url: str, part: Path, *, total: int | None, timeout: float) -> None:
    """Append the rest of `url` to `part`, resuming with an HTTP Range request when possible."""
    have = part.stat().st_size if part.exists() else 0
    request = urllib.request.Request(url, headers={"User-Agent": USER_AGENT})
    if have:
        request.add_header("Range", f"bytes={have}-")
    with urllib.request.urlopen(request, timeout=timeout) as response:
        if have and response.status != 206:
            have = 0  # the server ignored the range: start over
        length = response.headers.get("Content-Length")
        expected = total if total is not None else (have + int(length) if length else None)
        with (
            open(part, "ab" if have else "wb") as fh,
            tqdm(total=expected, initial=have, unit="B", unit_scale=True, desc=part.name[:-5], leave=False) as bar,
        ):
            while block := response.read(_CHUNK):
                fh.write(block)
                bar.update(len(block))
        if length is not None and part.stat().st_size < have + int(length):
            raise OSError(f"connection closed after {part.stat().st_size} of {have + int(length)} bytes")
