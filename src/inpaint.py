"""`python -m src.inpaint image=X mask=M checkpoint=RUN [output=...] [dilate=N]`: fill holes.

`image` and `mask` are files (the filled image goes to `output`, default
<paths.output_dir>/inpaint/NAME.png) or folders (masks named like the images; every image is
filled into the `output` folder, and a rerun skips those already there). White mask pixels are
filled; every other pixel is kept.
"""

from __future__ import annotations

from pathlib import Path

from omegaconf import DictConfig

from src.cli import hydra_entry
from src.data.layout import list_images
from src.errors import ConfigError
from src.tasks.inpainting.inference import inpaint_files, load_generator, matching_masks
from src.tracking.checkpoints import read_trained_checkpoint
from src.utils.device import autocast, resolve_device, resolve_precision


def inpaint(cfg: DictConfig) -> list[Path]:
    for key in ("image", "mask", "checkpoint"):
        if not cfg.get(key):
            raise ConfigError(f"{key}= is required: python -m src.inpaint image=X mask=M checkpoint=RUN")
    image, mask = Path(str(cfg.image)).expanduser(), Path(str(cfg.mask)).expanduser()
    device = resolve_device(cfg.device)
    amp = resolve_precision(cfg.precision, device)
    generator = load_generator(read_trained_checkpoint(str(cfg.checkpoint), cfg.logger.tracking_uri), device)
    default = Path(cfg.paths.output_dir) / "inpaint"
    if image.is_dir():
        if not mask.is_dir():
            raise ConfigError(f"image={image} is a folder, so mask= must be a folder of masks too (got {mask})")
        pairs, output = matching_masks(list_images(image, "image"), mask), Path(cfg.output or default)
    else:
        for key, path in (("image", image), ("mask", mask)):
            if not path.is_file():
                raise ConfigError(f"{key}={path}: no such file")
        target = Path(cfg.output) if cfg.output else default / f"{image.stem}.png"
        if target.suffix.lower() != ".png":
            raise ConfigError(f"output={cfg.output}: expected a .png file")
        if target.is_file():
            target.unlink()  # one image asked for by name is always filled again
        pairs, output = {target.stem: (image, mask)}, target.parent
    written, done = inpaint_files(generator, pairs, output, int(cfg.dilate), device, lambda: autocast(device, amp))
    print(f"inpainted {len(written)} images into {output}" + (f" ({done} were already there)" if done else ""))
    return written


@hydra_entry("inpaint")
def main(cfg: DictConfig) -> list[Path]:
    return inpaint(cfg)


if __name__ == "__main__":
    main()
