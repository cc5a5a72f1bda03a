"""`python -m src.annotate [image_dir=...] [annotator=...] [ui.port=...]`: annotate images in the browser.

Serves a page on 127.0.0.1 (ui.host, ui.port): click the 28 landmarks in order (a diagram beside
the image shows where each goes; a slider zooms) and Save, one JSON per image into `annotated_dir`
(the dataset's annotated/, or `<image_dir>/annotated` for a folder elsewhere), every click kept in
a draft until then; or, in mask mode, click the character for SAM2 and Save its mask into the
dataset's images/ and masks/ folders. See src/apps/annotation.py for what is written where.
"""

from __future__ import annotations

from omegaconf import DictConfig

from src.cli import hydra_entry


@hydra_entry("annotate")
def main(cfg: DictConfig) -> None:
    from src.apps.annotate_page import serve_annotate_page  # gradio loads only for the page

    serve_annotate_page(cfg)


if __name__ == "__main__":
    main()
