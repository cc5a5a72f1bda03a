"""Segment one image from points and/or a box for `python -m src.predict`."""

from __future__ import annotations

import logging
from pathlib import Path

from omegaconf import DictConfig

from src.data.user_input import read_user_image
from src.tasks.segmentation.drawing import draw_prompts, overlay_with_prompts
from src.tasks.segmentation.predictor import load_predictor
from src.tasks.segmentation.user_prompts import typed_prompts
from src.tracking.checkpoints import Weights
from src.utils.pictures import caption, grid, resize_longest, save_mask_png, save_png

log = logging.getLogger(__name__)

READABLE_SIDE = 384  # px: the result picture's tiles are at least this large


def predict_segmentation(cfg: DictConfig, weights: Weights) -> dict[str, Path]:
    """The masks of one image from `points=`/`box=`: every candidate with its predicted IoU in
    `<name>_result.png`, the chosen one in `<name>_mask.png` (255 on the object)."""
    path, image = read_user_image(cfg.image)
    height, width = image.shape[:2]
    prompts = typed_prompts(cfg.points, cfg.box, width, height, path.name)
    predictor, _ = load_predictor(cfg, weights)
    prediction = predictor.predict(predictor.encode(image), prompts, multimask=cfg.multimask)

    masks, scores, best = prediction.masks()[0].cpu().numpy(), prediction.scores[0].tolist(), int(prediction.best[0])
    drawn_points, drawn_labels = prompts.points.numpy(), prompts.labels.numpy()
    side = max(READABLE_SIDE, height, width)  # small images are enlarged so that captions fit
    tiles = [caption(resize_longest(draw_prompts(image, drawn_points, drawn_labels), side), f"{path.name}: prompts")]
    for k, (mask, score) in enumerate(zip(masks, scores, strict=True)):
        text = f"mask {k + 1}: predicted IoU {score:.3f}" + (" (chosen)" if k == best else "")
        print(text)
        tiles.append(
            caption(resize_longest(overlay_with_prompts(image, mask[None], drawn_points, drawn_labels), side), text)
        )
    out = Path(cfg.output_dir)
    written = {
        "result": save_png(grid([tiles]), out / f"{path.stem}_result.png"),
        "mask": save_mask_png(masks[best], out / f"{path.stem}_mask.png"),
    }
    print(f"wrote {written['result']} and {written['mask']}")
    return written
