"""The browser page of `python -m src.predict interactive=true`: click on an image, get its mask.

A click on the image adds a point (foreground, or background when the switch says so), the mask
is refined and redrawn with the points, and the mask PNG is ready to download. Each browser tab
has its own `ClickSession`; the model is loaded once and shared.
"""

from __future__ import annotations

import shlex
import tempfile
import uuid
from pathlib import Path
from typing import Any

import gradio as gr
import numpy as np
from omegaconf import DictConfig

from src.apps.launch import serve
from src.data.user_input import read_user_image
from src.tasks.segmentation.drawing import overlay_with_prompts
from src.tasks.segmentation.interactive import ClickSession
from src.tasks.segmentation.predictor import Sam2Predictor, load_predictor
from src.tasks.segmentation.prompts import LABEL_NEGATIVE, LABEL_POSITIVE
from src.tasks.segmentation.user_prompts import format_prompt
from src.tracking.checkpoints import Weights
from src.utils.pictures import save_mask_png

FOREGROUND, BACKGROUND = "foreground", "background"


class ClickPage:
    """Event handlers of the page, each returning the new (session, picture, status, mask file)."""

    def __init__(self, predictor: Sam2Predictor, download_dir: Path, command: str):
        self.predictor, self.download_dir, self.command = predictor, download_dir, command

    def open(self, image: np.ndarray | None, name: str = "image") -> tuple[Any, ...]:
        if image is None:
            return None, None, "Open an image to start.", None
        return self._show(ClickSession(self.predictor, image[..., :3], name))

    def click(self, session: ClickSession | None, kind: str, event: gr.SelectData) -> tuple[Any, ...]:
        if session is None:
            return self.open(None)
        x, y = event.index
        session.add(x, y, LABEL_NEGATIVE if kind == BACKGROUND else LABEL_POSITIVE)
        return self._show(session)

    def undo(self, session: ClickSession | None) -> tuple[Any, ...]:
        if session is None:
            return self.open(None)
        session.undo()
        return self._show(session)

    def clear(self, session: ClickSession | None) -> tuple[Any, ...]:
        if session is None:
            return self.open(None)
        session.clear()
        return self._show(session)

    def _show(self, session: ClickSession) -> tuple[Any, ...]:
        mask = session.mask()
        if mask is None:
            return session, session.image, "Click on the object.", None
        prompts, prediction = session.prompts, session.prediction
        picture = overlay_with_prompts(session.image, mask[None], prompts.points.numpy(), prompts.labels.numpy())
        scores = ", ".join(f"{s:.3f}" for s in prediction.scores[0].tolist())
        status = (
            f"{len(session.points)} point(s), predicted IoU {prediction.scores[0].max():.3f} (candidates: {scores}); "
            f"replay with: `{self.command} {format_prompt(prompts.points[0], prompts.labels[0])}`"
        )
        # a folder per click, so that a browser never serves an earlier mask from its cache
        path = self.download_dir / uuid.uuid4().hex / f"{Path(session.name).stem}_mask.png"
        return session, picture, status, str(save_mask_png(mask, path))


def build_click_page(predictor: Sam2Predictor, image: np.ndarray | None, name: str, title: str, command: str) -> Any:
    """The Gradio Blocks of the page, opened on `image` (or waiting for an upload); `command` is the
    `src.predict` command that, given a click's prompt, replays it."""
    handlers = ClickPage(predictor, Path(tempfile.mkdtemp(prefix="samtune-masks-")), command)
    with gr.Blocks(title="samtune: click to segment", analytics_enabled=False) as page:
        gr.Markdown(f"### {title}\nClick on the image to add a point; the mask updates after each click.")
        session = gr.State(None)
        with gr.Row():
            with gr.Column(scale=3):
                picture = gr.Image(
                    label="image",
                    interactive=False,
                    format="png",
                    height=560,
                    buttons=["download", "fullscreen"],
                    elem_id="canvas",
                )
            with gr.Column(scale=1):
                kind = gr.Radio([FOREGROUND, BACKGROUND], value=FOREGROUND, label="a click adds", elem_id="kind")
                with gr.Row():
                    undo = gr.Button("undo last point", elem_id="undo")
                    clear = gr.Button("clear points", elem_id="clear")
                status = gr.Markdown(elem_id="status")
                mask_file = gr.File(label="mask (PNG)", elem_id="mask", interactive=False)
                upload = gr.Image(label="open another image", sources=["upload", "clipboard"], elem_id="upload")
        outputs = [session, picture, status, mask_file]
        picture.select(handlers.click, [session, kind], outputs)
        undo.click(handlers.undo, [session], outputs)
        clear.click(handlers.clear, [session], outputs)
        upload.upload(handlers.open, [upload], outputs)
        page.load(lambda: handlers.open(image, name), None, outputs)
    return page


def serve_click_page(cfg: DictConfig, weights: Weights | None) -> None:
    """`python -m src.predict interactive=true [image=PATH]`: load the model, serve the page until stopped;
    `weights` when the caller has read them already."""
    path, image = read_user_image(cfg.image) if cfg.image is not None else (Path("image.png"), None)
    predictor, weights = load_predictor(cfg, weights)
    title = f"SAM2.1 {cfg.model.name} · {weights.source}"
    serve(build_click_page(predictor, image, path.name, title, predict_command(cfg)), cfg.ui.host, int(cfg.ui.port))


def predict_command(cfg: DictConfig) -> str:
    """`python -m src.predict` on the same image and weights as the page, shell-quoted."""
    words = ["python", "-m", "src.predict", f"image={cfg.image or 'IMAGE'}", f"model={cfg.model.name}"]
    if cfg.original or cfg.checkpoint is None:
        words.append("original=true")
    else:
        words.append(f"checkpoint={cfg.checkpoint}")
    return " ".join(shlex.quote(word) for word in words)
