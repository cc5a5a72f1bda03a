"""`python -m src.inpaint image=X mask=M checkpoint=RUN [output=...] [dilate=N]`: fill holes.

`image` and `mask` are files (the filled image goes to `output`, default
<paths.output_dir>/inpaint/NAME.png) or folders (masks named like the images; every image is
filled into the `output` folder, and a rerun skips those already there). White mask pixels are
filled; every other pixel is kept.

Object removal: `points=`/`box=` with `segmenter=SEGMENTATION_RUN` instead of `mask=`: SAM2 masks
the object they mark, the mask grows by `dilate` px and is written beside the output as
NAME_mask.png, and the inpainting model fills it.
"""

from __future__ import annotations

from pathlib import Path

from omegaconf import DictConfig

from src.cli import hydra_entry
from src.data.layout import list_images
from src.data.mask_io import read_image
from src.errors import ConfigError, DataError
from src.tasks.inpainting.inference import grown, inpaint_files, load_generator, matching_masks
from src.tasks.segmentation.object_masks import checkpoint_predictor, object_mask
from src.tracking.checkpoints import read_trained_checkpoint
from src.utils.device import autocast, resolve_device, resolve_precision
from src.utils.pictures import save_mask_png

USAGE = "python -m src.inpaint image=X checkpoint=RUN (mask=M | points=... / box=... segmenter=SEGMENTATION_RUN)"


def inpaint(cfg: DictConfig) -> list[Path]:
    for key in ("image", "checkpoint"):
        if not cfg.get(key):
            raise ConfigError(f"{key}= is required: {USAGE}")
    prompted = cfg.points is not None or cfg.box is not None
    if prompted == bool(cfg.mask):
        given = "both mask= and points=/box=" if prompted else "neither mask= nor points=/box="
        raise ConfigError(f"{given} given; expected one: a mask file (or folder), or SAM2 prompts: {USAGE}")
    image = Path(str(cfg.image)).expanduser()
    device = resolve_device(cfg.device)
    amp = resolve_precision(cfg.precision, device)
    generator = load_generator(read_trained_checkpoint(str(cfg.checkpoint), cfg.logger.tracking_uri), device)
    default = Path(cfg.paths.output_dir) / "inpaint"
    dilate = int(cfg.dilate)
    if image.is_dir():
        mask = Path(str(cfg.mask)).expanduser() if cfg.mask else None
        if mask is None or not mask.is_dir():
            raise ConfigError(f"image={image} is a folder, so mask= must be a folder of masks too (got {cfg.mask})")
        pairs, output = matching_masks(list_images(image, "image"), mask), Path(cfg.output or default)
    else:
        if not image.is_file():
            raise ConfigError(f"image={image}: no such file")
        target = Path(cfg.output) if cfg.output else default / f"{image.stem}.png"
        if target.suffix.lower() != ".png":
            raise ConfigError(f"output={cfg.output}: expected a .png file")
        if prompted:
            mask, dilate = segmented_hole(cfg, image, target.with_name(f"{target.stem}_mask.png")), 0
        else:
            mask = Path(str(cfg.mask)).expanduser()
            if not mask.is_file():
                raise ConfigError(f"mask={mask}: no such file")
        if target.is_file():
            target.unlink()  # one image asked for by name is always filled again
        pairs, output = {target.stem: (image, mask)}, target.parent
    written, done = inpaint_files(generator, pairs, output, dilate, device, lambda: autocast(device, amp))
    print(f"inpainted {len(written)} images into {output}" + (f" ({done} were already there)" if done else ""))
    return written


def segmented_hole(cfg: DictConfig, image_path: Path, mask_path: Path) -> Path:
    """SAM2's mask of the object `points=`/`box=` mark in the image, grown by `dilate` px: written to `mask_path`."""
    if not cfg.segmenter:
        raise ConfigError(f"points=/box= need segmenter=: the segmentation checkpoint that masks the object; {USAGE}")
    weights = read_trained_checkpoint(str(cfg.segmenter), cfg.logger.tracking_uri)
    predictor = checkpoint_predictor(weights, "segmenter", cfg.device, cfg.precision, str(cfg.paths.cache_dir))
    image = read_image(image_path)  # the pixels as stored, which the fill reads too
    hole = grown(object_mask(predictor, image, cfg.points, cfg.box, image_path.name), int(cfg.dilate))
    prompt = " ".join(f"{key}={cfg[key]}" for key in ("points", "box") if cfg[key] is not None)
    if not hole.any():
        raise DataError(f"SAM2 ({weights.source}) found no object at {prompt} in {image_path}; try other prompts")
    if hole.all():
        raise DataError(
            f"SAM2 ({weights.source}) masked all of {image_path} at {prompt}, leaving nothing to fill from; try "
            "other prompts or a smaller dilate="
        )
    return save_mask_png(hole, mask_path)


@hydra_entry("inpaint", plain_values=("points", "box"))
def main(cfg: DictConfig) -> list[Path]:
    return inpaint(cfg)


if __name__ == "__main__":
    main()
