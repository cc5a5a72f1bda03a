"""`python -m src.predict image=PATH 'points="320,200;100,50,0"' [box=...] [original=true]`: segment one image.

Writes `<name>_result.png` (the prompts, then each candidate mask with its predicted IoU) and
`<name>_mask.png` (the chosen mask, 255 on the object) to `output_dir`, and prints every mask's
score. `interactive=true` serves a browser page instead: click to add points, download the mask.
"""

from __future__ import annotations

import logging
from pathlib import Path

from omegaconf import DictConfig

from src.cli import hydra_entry
from src.inference import load_predictor
from src.user_input import check_inside, parse_box, parse_points, read_user_image, user_prompts
from src.visualize import caption, draw_prompts, grid, overlay_with_prompts, resize_longest, save_mask_png, save_png

log = logging.getLogger(__name__)

READABLE_SIDE = 384  # px: the result picture's tiles are at least this large


def predict(cfg: DictConfig) -> dict[str, Path]:
    path, image = read_user_image(cfg.image)
    points, box = parse_points(cfg.points), parse_box(cfg.box)
    height, width = image.shape[:2]
    check_inside(points, box, width, height, path.name)
    prompts = user_prompts(points, box)
    predictor, _ = load_predictor(cfg)
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


@hydra_entry("predict")
def main(cfg: DictConfig) -> dict[str, Path] | None:
    if cfg.interactive:
        from src.ui.click_page import serve_click_page  # gradio loads only for the page

        return serve_click_page(cfg)
    return predict(cfg)


if __name__ == "__main__":
    main()
