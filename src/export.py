"""`python -m src.export checkpoint=RUN output=FILE.pth`: weights for use outside this repository.

Writes the model's plain state dict (tensors only) and `FILE.yaml` beside it with what rebuilding
the model needs. Landmark exports load with `src.tasks.landmarks.export.load_exported`; SAM2
segmentation exports are stock SAM2 state dicts (`sam2_config` and `image_size` in the YAML).
"""

from __future__ import annotations

import logging
from pathlib import Path

from omegaconf import DictConfig

from src.cli import hydra_entry
from src.errors import ConfigError
from src.tracking.checkpoints import read_trained_checkpoint, write_export

log = logging.getLogger(__name__)


def export(cfg: DictConfig) -> tuple[Path, Path]:
    if not cfg.checkpoint:
        raise ConfigError("checkpoint= is required: a .pt file, a training run folder or an MLflow run id")
    weights = read_trained_checkpoint(str(cfg.checkpoint), cfg.logger.tracking_uri)
    if "model" not in weights.checkpoint:
        raise ConfigError(
            f"checkpoint={cfg.checkpoint} is an adapter folder, which needs its base model to become weights; export "
            "the training run folder instead (its best.pt holds the adapter merged into the base)"
        )
    meta = weights.meta
    default = Path(cfg.paths.output_dir) / "exports" / f"{meta.get('model', 'model')}_{meta.get('task', 'sam2')}.pth"
    output = Path(cfg.output) if cfg.output else default
    if output.suffix not in (".pth", ".pt"):
        raise ConfigError(f"output={cfg.output}: expected a file name ending in .pth or .pt")
    written = write_export(weights.checkpoint, output)
    print(f"exported {weights.source} to {written[0]} (state dict) and {written[1]} (how to rebuild it)")
    return written


@hydra_entry("export")
def main(cfg: DictConfig) -> tuple[Path, Path]:
    return export(cfg)


if __name__ == "__main__":
    main()
