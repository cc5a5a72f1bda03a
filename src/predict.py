"""`python -m src.predict image=PATH checkpoint=RUN [points=... | box=...]`: one image through trained weights.

Dispatches on what the checkpoint says it is: segmentation (`points=`/`box=` prompts; writes
`<name>_result.png` with every candidate mask and `<name>_mask.png`; `original=true` uses the
un-tuned SAM2; `interactive=true` serves a click-to-segment page) or landmarks (`box=` the face or
the whole image; writes `<name>_landmarks.png` and `<name>_landmarks.json`).
"""

from __future__ import annotations

from pathlib import Path

from omegaconf import DictConfig

from src.cli import hydra_entry, with_checkpoint_choices
from src.tasks.landmarks.prediction import predict_landmarks
from src.tasks.segmentation.prediction import predict_segmentation
from src.tracking.checkpoints import requested_weights


@hydra_entry("predict", plain_values=("points", "box"))
def main(cfg: DictConfig) -> dict[str, Path] | None:
    weights = requested_weights(cfg)
    if weights is not None:
        cfg = with_checkpoint_choices(cfg, weights.meta, weights.source)
    if cfg.interactive:
        from src.apps.click_page import serve_click_page  # gradio loads only for the page

        return serve_click_page(cfg, weights)
    if weights is not None and weights.task == "landmarks":
        return predict_landmarks(cfg, weights)
    return predict_segmentation(cfg, weights)


if __name__ == "__main__":
    main()
