"""`python -m src.automask image=PATH_OR_FOLDER [checkpoint=RUN | original=true] [automask.KEY=VALUE]`.

Every object SAM2 finds, per image: `<output_dir>/<name>/overlay.png`, `masks/NNN.png` and
`masks.json` (COCO RLE, area, box, predicted IoU, stability). A folder is searched with its
subfolders, and `<name>` is the image's path in it (`vol1/001`); it shows its progress and resumes:
an image whose `masks.json` exists is skipped. Running out of memory, or images without a mask,
name the settings to lower.
"""

from __future__ import annotations

import logging
from pathlib import Path

from hydra.utils import instantiate
from omegaconf import DictConfig
from tqdm import tqdm

from src.cli import hydra_entry, with_checkpoint_choices
from src.data.layout import image_tree
from src.data.mask_io import read_image
from src.errors import DataError, OutOfMemory
from src.tasks.segmentation.automatic_masks import MASKS_FILE, write_masks
from src.tasks.segmentation.predictor import load_predictor
from src.tracking.checkpoints import requested_weights
from src.utils.device import is_out_of_memory

log = logging.getLogger(__name__)


def input_images(value: str | None) -> dict[str, Path]:
    """name -> file: the image `image=` names, or every image below the folder it names (as prepare finds
    them); a name is the image's path in that folder without its suffix (`vol1/001`), so outputs mirror it."""
    path = Path(str(value)).expanduser() if value is not None else None
    if path is not None and path.is_dir():
        return image_tree(path, "image")
    if path is None or not path.is_file():
        raise DataError(
            f"image={value}: no such file or folder; expected an image (JPEG, PNG, ...) or a folder of them"
        )
    return {path.stem: path}


def out_of_memory_advice(cfg: DictConfig, image: Path, size: tuple[int, int], err: BaseException) -> OutOfMemory:
    """Which settings to lower, as seed 004's user had to find out."""
    amg = cfg.automask
    advice = [f"lower automask.points_per_batch (now {amg.points_per_batch}, try {max(1, amg.points_per_batch // 2)})"]
    if cfg.model.name != "tiny":
        advice.append(f"use a smaller model (model=tiny; now model={cfg.model.name})")
    if amg.crop_n_layers:
        advice.append(f"use fewer crop layers (automask.crop_n_layers, now {amg.crop_n_layers})")
    reason = str(err).splitlines()[0]
    return OutOfMemory(
        f"out of memory generating masks for {image.name} ({size[1]}x{size[0]} px): {reason[:200]}. SAM2's generator "
        f"holds points_per_batch x 3 masks at full image size at once: {'; '.join(advice)}. Images already done "
        "are kept; rerun to continue"
    )


def no_masks_advice(cfg: DictConfig, empty: list[str], total: int) -> str:
    """What to lower when SAM2 kept no mask: its filters, with their values now (seed 004's user asked)."""
    amg = cfg.automask
    advice = [
        f"automask.pred_iou_thresh (now {amg.pred_iou_thresh}; masks whose predicted IoU is below it are dropped)",
        f"automask.stability_score_thresh (now {amg.stability_score_thresh}; unstable shapes are dropped)",
    ]
    if amg.min_mask_region_area > 0:
        advice.append(f"automask.min_mask_region_area (now {amg.min_mask_region_area} px)")
    advice.append(f"or prompt a denser grid, automask.points_per_side (now {amg.points_per_side})")
    shown = ", ".join(empty[:5]) + (f" and {len(empty) - 5} more" if len(empty) > 5 else "")
    return (
        f"{len(empty)} of {total} images gave 0 masks ({shown}): SAM2 found candidates but its filters kept none. "
        f"Lower {'; '.join(advice)}; e.g. automask.pred_iou_thresh=0.5 automask.stability_score_thresh=0.8, "
        "or automask=dense (lower thresholds, finer grid)"
    )


def automask(cfg: DictConfig) -> list[Path]:
    images = input_images(cfg.image)
    out = Path(cfg.output_dir)
    todo = {name: path for name, path in images.items() if not (out / name / MASKS_FILE).is_file()}
    if len(todo) < len(images):
        log.info("%d of %d images already have masks in %s; skipping them", len(images) - len(todo), len(images), out)
    if not todo:
        return []
    weights = requested_weights(cfg)
    if weights is not None:
        cfg = with_checkpoint_choices(cfg, weights.meta, weights.source)
    predictor, _ = load_predictor(cfg, weights)
    generator = instantiate(cfg.automask)(predictor)
    written, empty = [], []
    for name, path in tqdm(todo.items(), desc="automask", unit="image", dynamic_ncols=True):
        image = read_image(path, upright=True)
        try:
            records = generator.generate(image)
        except (RuntimeError, MemoryError) as err:
            if is_out_of_memory(err):
                raise out_of_memory_advice(cfg, path, image.shape[:2], err) from err
            raise
        written.append(write_masks(image, records, out / name, path.name))
        tqdm.write(f"{name}: {len(records)} masks -> {out / name}")
        if not records:
            empty.append(name)
    if empty:
        log.warning(no_masks_advice(cfg, empty, len(todo)))
    return written


@hydra_entry("automask")
def main(cfg: DictConfig) -> list[Path]:
    return automask(cfg)


if __name__ == "__main__":
    main()
