"""Where `model.checkpoint` points: the official weights, a local file, or nothing (random init)."""

from __future__ import annotations

import logging
from pathlib import Path
from urllib.parse import urlparse

from omegaconf import DictConfig

from src.errors import CheckpointError, DownloadError
from src.utils.download import download

log = logging.getLogger(__name__)

PRETRAINED = "pretrained"


def resolve_checkpoint(model_cfg: DictConfig, cache_dir: str | Path) -> Path | None:
    """Return the weights file for `model_cfg.checkpoint`, downloading the official one once."""
    choice = model_cfg.checkpoint
    if choice is None:
        log.warning(
            "\n%s\n!! model.checkpoint=null: SAM2 %s starts from RANDOM weights. Fine for tests and the\n"
            "!! offline demo; for real fine-tuning use model.checkpoint=pretrained or a local file.\n%s",
            "!" * 78,
            model_cfg.name,
            "!" * 78,
        )
        return None
    if choice == PRETRAINED:
        url = model_cfg.checkpoint_url
        dest = Path(cache_dir) / "checkpoints" / Path(urlparse(url).path).name
        log.info("SAM2 %s weights: %s (cached at %s)", model_cfg.name, url, dest)
        try:
            return download(url, dest, size=model_cfg.checkpoint_bytes, sha256=model_cfg.checkpoint_sha256)
        except DownloadError as err:
            raise DownloadError(
                f"{err} Offline? Copy {Path(dest).name} to {dest}, pass model.checkpoint=/path/to/file.pt, "
                "or model.checkpoint=null to start from random weights."
            ) from err
    path = Path(str(choice)).expanduser()
    if not path.is_file():
        raise CheckpointError(
            f"model.checkpoint={choice}: no such file. Expected '{PRETRAINED}' (download the official "
            f"SAM2.1 {model_cfg.name} weights), a path to a .pt file, or null for random weights"
        )
    return path
