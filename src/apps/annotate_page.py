"""The browser page of `python -m src.annotate`: click landmarks in order, or a character mask with SAM2.

Large images are fitted into `display.max_side`, never enlarged; the zoom slider then enlarges the
picture (up to `display.zoom_max_side`), which scrolls in its box. A click on the shown picture is
mapped back to image pixels exactly, with pixel centres at integer coordinates on both:
x_image = (x_shown + 0.5) / scale - 0.5, per axis. Beside it, a diagram drawn from the scheme's
`reference` shows where each point goes on a face, the next one ringed. Each browser tab has its own
`AnnotationSession`, opened where the saved annotations leave off; SAM2 is loaded once, by the
first mask click of any tab.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import cv2
import gradio as gr
import numpy as np
from omegaconf import DictConfig

from src.apps.annotation import AnnotationSession, LazyPredictor, annotations_folder, images_to_annotate
from src.apps.launch import serve
from src.errors import ConfigError, SamtuneError
from src.tasks.landmarks.scheme import LandmarkScheme
from src.tasks.segmentation.drawing import overlay_with_prompts
from src.tasks.segmentation.predictor import load_predictor

LANDMARKS, MASK = "landmarks", "mask"
FOREGROUND, BACKGROUND = "foreground", "background"


# the picture is drawn at its own size and scrolls when zoomed, instead of being fitted into its box
ZOOM_CSS = """
#canvas .image-frame { display: block; overflow: auto; max-height: 85vh; }
#canvas .image-frame img { width: auto; height: auto; max-width: none; max-height: none; object-fit: none; }
"""


def display_size(width: int, height: int, max_side: int, zoom: float = 1.0, zoom_max_side: int = 0) -> tuple[int, int]:
    """The shown picture's (width, height): the image fitted into `max_side` (never enlarged), times `zoom`
    up to a longer side of `zoom_max_side` (0: no zoom)."""
    fitted = min(1.0, max_side / max(width, height))
    zoomed = min(fitted * max(1.0, float(zoom)), max(fitted, zoom_max_side / max(width, height)))
    return max(1, round(width * zoomed)), max(1, round(height * zoomed))


def to_image_pixels(
    x: float, y: float, image_size: tuple[int, int], shown_size: tuple[int, int]
) -> tuple[float, float]:
    """A pixel of the shown picture -> the same place in image pixels (the inverse of the resize)."""
    (width, height), (shown_w, shown_h) = image_size, shown_size
    return (x + 0.5) * width / shown_w - 0.5, (y + 0.5) * height / shown_h - 0.5


def to_shown_pixels(
    x: float, y: float, image_size: tuple[int, int], shown_size: tuple[int, int]
) -> tuple[float, float]:
    (width, height), (shown_w, shown_h) = image_size, shown_size
    return (x + 0.5) * shown_w / width - 0.5, (y + 0.5) * shown_h / height - 0.5


def draw_landmarks(
    picture: np.ndarray, points: list[tuple[float, float]], colors: list[tuple[int, int, int]], side: int
) -> np.ndarray:
    """Each point as a dot in its group's color, outlined, with its index beside it; sized for a picture of
    longer side `side` (the unzoomed one), so zooming in shows more of the image around a dot."""
    out = picture.copy()
    radius = max(3, side // 160)
    font = max(0.35, side / 1600)
    for index, (x, y) in enumerate(points):
        centre = (round(x), round(y))
        cv2.circle(out, centre, radius, colors[index], thickness=-1, lineType=cv2.LINE_AA)
        cv2.circle(out, centre, radius, (0, 0, 0), thickness=1, lineType=cv2.LINE_AA)
        label_at = (centre[0] + radius + 1, centre[1] - radius - 1)
        cv2.putText(out, str(index), label_at, cv2.FONT_HERSHEY_SIMPLEX, font, (0, 0, 0), 3, cv2.LINE_AA)
        cv2.putText(out, str(index), label_at, cv2.FONT_HERSHEY_SIMPLEX, font, colors[index], 1, cv2.LINE_AA)
    return out


def draw_reference(scheme: LandmarkScheme, placed: int, side: int) -> np.ndarray | None:
    """Where the scheme's points go on a typical face (its `reference`): placed ones small, the next ringed."""
    if not scheme.reference:
        return None
    out = np.full((side, side, 3), 255, np.uint8)
    colors, radius, font = scheme.colors(), max(3, side // 70), max(0.3, side / 900)
    for index, (u, v) in enumerate(scheme.reference):
        centre = (round(u * (side - 1)), round(v * (side - 1)))
        upcoming = index == placed
        dot = radius * (2 if upcoming else 1) if index >= placed else max(2, radius // 2)
        if upcoming:
            cv2.circle(out, centre, dot + radius, (0, 0, 0), thickness=2, lineType=cv2.LINE_AA)
        cv2.circle(out, centre, dot, colors[index], thickness=-1, lineType=cv2.LINE_AA)
        label_at = (centre[0] + dot + 1, centre[1] - dot - 1)
        thickness = 2 if upcoming else 1
        cv2.putText(out, str(index), label_at, cv2.FONT_HERSHEY_SIMPLEX, font, (0, 0, 0), thickness, cv2.LINE_AA)
    return out


def read_saved_mask(path: Path) -> np.ndarray | None:
    mask = cv2.imread(str(path), cv2.IMREAD_GRAYSCALE)
    return None if mask is None else mask > 0


class AnnotatePage:
    """Event handlers of the page, each returning the new (session, picture, reference diagram, status)."""

    def __init__(
        self,
        new_session: Callable[[], AnnotationSession],
        max_side: int,
        zoom_max_side: int,
        reference_side: int,
    ):
        self.new_session, self.max_side, self.zoom_max_side = new_session, int(max_side), int(zoom_max_side)
        self.reference_side = int(reference_side)
        self._last_scaled: tuple[Any, np.ndarray | None] = (None, None)

    def open(self) -> tuple[Any, ...]:
        try:
            session = self.new_session()
        except SamtuneError as err:
            return None, None, None, f"**cannot open the images**: {err}"
        return self._show(session, LANDMARKS)

    def click(
        self, session: AnnotationSession | None, mode: str, kind: str, event: gr.SelectData, zoom: float = 1.0
    ) -> tuple[Any, ...]:
        def place(s: AnnotationSession) -> str:
            shown = self._shown_size(s, zoom)
            # a click on the picture's far edge can round to one past its last pixel
            shown_x, shown_y = (min(max(int(v), 0), side - 1) for v, side in zip(event.index, shown, strict=True))
            x, y = to_image_pixels(shown_x, shown_y, s.size, shown)
            # enlarged, an edge pixel's centre lies a fraction outside the image's outermost pixel centres
            x, y = min(max(x, 0.0), s.size[0] - 1.0), min(max(y, 0.0), s.size[1] - 1.0)
            if mode == MASK:
                s.mask_click(x, y, positive=kind != BACKGROUND)
            else:
                s.add_point(x, y)
            return ""

        return self._act(session, mode, zoom, place)

    def clear_last(self, session: AnnotationSession | None, mode: str, zoom: float = 1.0) -> tuple[Any, ...]:
        return self._act(session, mode, zoom, lambda s: s.mask_undo() if mode == MASK else s.clear_last())

    def clear_all(self, session: AnnotationSession | None, mode: str, zoom: float = 1.0) -> tuple[Any, ...]:
        return self._act(session, mode, zoom, lambda s: s.mask_clear() if mode == MASK else s.clear_all())

    def save(self, session: AnnotationSession | None, mode: str, zoom: float = 1.0) -> tuple[Any, ...]:
        def write(s: AnnotationSession) -> str:
            if mode == MASK:
                return f"saved the mask: {s.save_mask()}"
            path = s.save()
            return (
                f"saved {'the complete' if s.complete else f'{len(s.points)} of {s.scheme.num_points}'} points: {path}"
            )

        return self._act(session, mode, zoom, write)

    def next(self, session: AnnotationSession | None, mode: str, zoom: float = 1.0) -> tuple[Any, ...]:
        return self._act(session, mode, zoom, lambda s: s.next())

    def previous(self, session: AnnotationSession | None, mode: str, zoom: float = 1.0) -> tuple[Any, ...]:
        return self._act(session, mode, zoom, lambda s: s.previous())

    def switch(self, session: AnnotationSession | None, mode: str, zoom: float = 1.0) -> tuple[Any, ...]:
        return self._act(session, mode, zoom, lambda s: None)

    # internals ---------------------------------------------------------------
    def zoom(self, session: AnnotationSession | None, mode: str, zoom: float) -> tuple[Any, ...]:
        return self._act(session, mode, zoom, lambda s: None)

    def _act(
        self,
        session: AnnotationSession | None,
        mode: str,
        zoom: float,
        action: Callable[[AnnotationSession], str | None],
    ) -> tuple[Any, ...]:
        """Run `action`, then redraw; a user's mistake is shown in the status line, not raised."""
        if session is None:
            return self.open()
        try:
            note = action(session) or ""
        except SamtuneError as err:
            note = f"**{type(err).__name__}**: {err}"
        return self._show(session, mode, note, zoom)

    def _shown_size(self, session: AnnotationSession, zoom: float = 1.0) -> tuple[int, int]:
        return display_size(*session.size, self.max_side, zoom, self.zoom_max_side)

    def _scaled(self, session: AnnotationSession, shown: tuple[int, int]) -> np.ndarray:
        """The image at the shown size, kept while the page stays on it (a large image is resized once);
        enlarged, its pixels stay sharp squares, so a click can be aimed within one."""
        if shown == session.size:
            return session.image
        key = (session.path, shown)
        if self._last_scaled[0] != key:
            enlarged = shown[0] > session.size[0]
            interpolation = cv2.INTER_NEAREST if enlarged else cv2.INTER_AREA
            self._last_scaled = (key, cv2.resize(session.image, shown, interpolation=interpolation))
        return self._last_scaled[1]

    def _show(self, session: AnnotationSession, mode: str, note: str = "", zoom: float = 1.0) -> tuple[Any, ...]:
        shown = self._shown_size(session, zoom)
        picture = self._scaled(session, shown)
        if mode == MASK:
            picture, what = self._draw_mask(session, picture, shown)
        else:
            points = [to_shown_pixels(x, y, session.size, shown) for x, y in session.points]
            picture = draw_landmarks(picture, points, session.scheme.colors(), max(self._shown_size(session)))
            what = self._landmark_status(session)
        width, height = session.size
        done = len(session.completed)
        header = (
            f"image {session.index + 1}/{len(session.images)}: `{session.entry}` ({width}x{height}) · "
            f"{done}/{len(session.images)} complete"
        )
        reference = draw_reference(session.scheme, len(session.points), self.reference_side)
        return session, picture, reference, "\n\n".join(part for part in (header, what, note) if part)

    @staticmethod
    def _landmark_status(session: AnnotationSession) -> str:
        upcoming = session.next_point()
        if upcoming is None:
            text = f"all {session.scheme.num_points} points placed: Save"
        else:
            swatch = '<span style="color: rgb({}, {}, {}); font-size: 1.4em">&#9679;</span>'.format(*upcoming.color)
            text = f"{swatch} next: point {upcoming.index} ({upcoming.group})"
        if session.restored:
            return text + " · restored from the draft of a closed page: Save keeps these points"
        return text + (" · not saved yet (kept in a draft; saved on Save, Next or Previous)" if session.dirty else "")

    def _draw_mask(
        self, session: AnnotationSession, picture: np.ndarray, shown: tuple[int, int]
    ) -> tuple[np.ndarray, str]:
        mask, clicks = session.mask(), session.clicks
        if mask is None or clicks is None or not clicks.points:
            saved = session.saved_mask()
            previous = read_saved_mask(saved) if saved is not None else None
            if previous is None or previous.shape != session.image.shape[:2]:
                return picture, "mask mode: click on the character (SAM2 loads on the first click)"
            small = cv2.resize(previous.astype(np.uint8), shown, interpolation=cv2.INTER_NEAREST) > 0
            return overlay_with_prompts(picture, small[None], np.zeros((1, 0, 2)), np.zeros((1, 0))), (
                f"mask mode: the saved mask {saved}; click to draw a new one"
            )
        small = cv2.resize(mask.astype(np.uint8), shown, interpolation=cv2.INTER_NEAREST) > 0
        points = np.array([[to_shown_pixels(x, y, session.size, shown) for x, y, _ in clicks.points]])
        labels = np.array([[label for _, _, label in clicks.points]])
        picture = overlay_with_prompts(picture, small[None], points, labels)
        score = float(clicks.prediction.scores[0].max()) if clicks.prediction is not None else float("nan")
        return picture, f"mask mode: {len(clicks.points)} click(s), predicted IoU {score:.3f}; Save writes the mask"


def build_annotate_page(new_session: Callable[[], AnnotationSession], display: Any, title: str) -> Any:
    """The Gradio Blocks of the page; every tab opens its own session where the files leave off.

    `display`: conf/annotate.yaml's `display` (max_side, max_zoom, zoom_max_side, reference_side)."""
    handlers = AnnotatePage(new_session, display.max_side, display.zoom_max_side, display.reference_side)
    with gr.Blocks(title="samtune: annotate", analytics_enabled=False) as page:
        gr.Markdown(
            f"### {title}\nClick the landmarks in order (0-27: contour blue, eyebrows green, eyes yellow, "
            "nose magenta, mouth red), then Save. Mask mode: clicks are SAM2 prompts; Save writes the mask."
        )
        session = gr.State(None)
        with gr.Row():
            with gr.Column(scale=4):
                picture = gr.Image(
                    label="image", interactive=False, format="png", buttons=["fullscreen"], elem_id="canvas"
                )
                zoom = gr.Slider(
                    1, float(display.max_zoom), value=1, step=0.5, label="zoom (scroll the picture)", elem_id="zoom"
                )
            with gr.Column(scale=1, min_width=240):
                reference = gr.Image(
                    label="where the points go (the next one ringed)",
                    interactive=False,
                    format="png",
                    buttons=[],
                    elem_id="reference",
                )
                status = gr.Markdown(elem_id="status")
                mode = gr.Radio([LANDMARKS, MASK], value=LANDMARKS, label="mode", elem_id="mode")
                kind = gr.Radio([FOREGROUND, BACKGROUND], value=FOREGROUND, label="a mask click adds", elem_id="kind")
                with gr.Row():
                    clear_last = gr.Button("Clear Last", elem_id="clear-last")
                    clear_all = gr.Button("Clear All", elem_id="clear-all")
                save = gr.Button("Save", variant="primary", elem_id="save")
                with gr.Row():
                    previous = gr.Button("Previous", elem_id="previous")
                    next_ = gr.Button("Next", elem_id="next")
        outputs = [session, picture, reference, status]
        picture.select(handlers.click, [session, mode, kind, zoom], outputs)
        clear_last.click(handlers.clear_last, [session, mode, zoom], outputs)
        clear_all.click(handlers.clear_all, [session, mode, zoom], outputs)
        save.click(handlers.save, [session, mode, zoom], outputs)
        next_.click(handlers.next, [session, mode, zoom], outputs)
        previous.click(handlers.previous, [session, mode, zoom], outputs)
        mode.change(handlers.switch, [session, mode, zoom], outputs)
        zoom.change(handlers.zoom, [session, mode, zoom], outputs, trigger_mode="always_last")
        page.load(handlers.open, None, outputs)
    return page


def serve_annotate_page(cfg: DictConfig) -> None:
    """`python -m src.annotate`: find the images, serve the page until stopped (SAM2 waits for mask mode)."""
    root = Path(cfg.dataset.root).expanduser()
    images = images_to_annotate(root, cfg.image_dir, list(cfg.splits))  # a wrong folder fails here, not in the page
    try:
        scheme = LandmarkScheme.from_config(cfg.landmarks, source="landmarks")
    except ValueError as err:
        raise ConfigError(str(err)) from err
    predictor = LazyPredictor(lambda: load_predictor(cfg)[0])
    annotated = annotations_folder(root, cfg.image_dir, cfg.annotated_dir)

    def new_session() -> AnnotationSession:
        return AnnotationSession(root, images, annotated, scheme, str(cfg.annotator), list(cfg.splits), predictor)

    new_session()  # a broken annotation file is reported now, before the page is served
    where = Path(cfg.image_dir).expanduser() if cfg.image_dir is not None else root
    title = f"Annotate {len(images)} images of {where} ({scheme.name}) into {annotated}"
    page = build_annotate_page(new_session, cfg.display, title)
    serve(page, cfg.ui.host, int(cfg.ui.port), css=ZOOM_CSS)
