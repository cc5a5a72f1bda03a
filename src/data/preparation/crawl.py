"""Crawling a booru by tags with gallery-dl, run as a user runs it: `python -m gallery_dl`.

Everything gallery-dl is told is written to `raw/gallery-dl.json` (kept, so a crawl can be
repeated by hand) and its log to `raw/gallery-dl.log`. Its download archive (`raw/archive.sqlite3`)
remembers every post fetched, so a rerun downloads nothing twice; files appear only when complete
(gallery-dl downloads to `.part` files), each with its metadata JSON (`NAME.ext.json`) beside it.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any
from urllib.parse import quote_plus

from tqdm import tqdm

from src.errors import ConfigError, DownloadError
from src.utils.atomic import write_text_atomic

log = logging.getLogger(__name__)

ARCHIVE = "archive.sqlite3"
CONFIG = "gallery-dl.json"
LOG = "gallery-dl.log"


def rating_filter(ratings: Sequence[str] | None, codes: Mapping[str, str]) -> str | None:
    """gallery-dl `image-filter` keeping posts whose rating is one of `ratings` (words such as
    `general`, `safe`), written as the site writes it: the words, or its letters mapped in `codes`."""
    if ratings is None:
        return None
    allowed = sorted({*ratings, *(code for code, word in codes.items() if word in ratings)})
    if not allowed:
        raise ConfigError("prepare.ratings is empty: list the ratings to keep (e.g. [general, safe]) or null for all")
    return f"rating in {tuple(allowed)!r}"


def gallery_dl_config(
    source: str,
    site: Mapping[str, Any],
    raw: Path,
    limit: int,
    ratings: Sequence[str] | None,
    options: Mapping[str, Any],
) -> dict[str, Any]:
    """The gallery-dl configuration of one crawl (see gallery-dl's docs/configuration.rst)."""
    extractor: dict[str, Any] = {
        "archive": str(raw / ARCHIVE),
        "image-range": f"1-{int(limit)}",
        "sleep-request": site["sleep_request"],
        "postprocessors": [{"name": "metadata", "mode": "json"}],
        **options,
    }
    if (image_filter := rating_filter(ratings, site.get("ratings") or {})) is not None:
        extractor["image-filter"] = image_filter
    if site.get("instance_of"):  # a gallery-dl base category whose instances take their root from config
        extractor[site["instance_of"]] = {source: {"root": site["root"]}}
    return {"extractor": extractor}


def crawl(
    source: str, site: Mapping[str, Any], tags: str, limit: int, raw: Path,
    ratings: Sequence[str] | None, options: Mapping[str, Any],
) -> int:  # fmt: skip
    """Download up to `limit` posts matching `tags` into `raw/<source>/`; returns how many are new."""
    if limit < 1:
        raise ConfigError(f"prepare.limit={limit}: expected at least 1 image")
    if not tags or not str(tags).strip():
        raise ConfigError("prepare.tags is empty: give the tags to search, e.g. prepare.tags='animal_ears solo'")
    raw.mkdir(parents=True, exist_ok=True)
    config = gallery_dl_config(source, site, raw, limit, ratings, options)
    write_text_atomic(json.dumps(config, indent=2), raw / CONFIG)
    url = site["url"].format(root=str(site.get("root", "")).rstrip("/"), tags=quote_plus(str(tags).strip()))
    command = [sys.executable, "-m", "gallery_dl", "--config-ignore", "--config", str(raw / CONFIG),
               "--directory", str(raw / source), url]  # fmt: skip
    log.info("crawling %s: %s", source, " ".join(command))
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}  # a line per file as it lands, for the progress bar
    new = 0
    with (
        open(raw / LOG, "a") as log_file,
        subprocess.Popen(command, stdout=subprocess.PIPE, stderr=log_file, text=True, env=env) as process,
        tqdm(total=limit, desc=f"{source} {tags}", unit="img") as bar,
    ):
        assert process.stdout is not None
        for line in process.stdout:  # one line per post: its path, or "# path" when it was already there
            new += not line.startswith("# ")
            bar.update(1)
    if process.returncode != 0:
        tail = "".join((raw / LOG).read_text().splitlines(keepends=True)[-8:])
        raise DownloadError(
            f"gallery-dl stopped with status {process.returncode} while crawling {url}; what it downloaded so far "
            f"is kept and will not be fetched again. Its log ({raw / LOG}) ends with:\n{tail}"
        )
    return new
