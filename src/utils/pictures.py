"""Pictures: mask overlays with outlines, captions, grids, curves, and PNG files written atomically."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import cv2
import numpy as np

from src.utils.atomic import atomic_path

PALETTE = np.array(
    [
        [230, 25, 75],
        [60, 180, 75],
        [255, 225, 25],
        [0, 130, 200],
        [245, 130, 48],
        [145, 30, 180],
        [70, 240, 240],
        [240, 50, 230],
        [210, 245, 60],
        [250, 190, 212],
        [0, 128, 128],
        [170, 110, 40],
    ],
    dtype=np.uint8,
)


def overlay_masks(image: np.ndarray, masks: np.ndarray, alpha: float = 0.45) -> np.ndarray:
    """RGB image with each (K, H, W) boolean mask tinted in its own colour and outlined."""
    out = image.astype(np.float32).copy()
    for k, mask in enumerate(masks):
        colour = PALETTE[k % len(PALETTE)].astype(np.float32)
        out[mask] = (1 - alpha) * out[mask] + alpha * colour
    out = out.astype(np.uint8)
    for k, mask in enumerate(masks):
        contours, _ = cv2.findContours(mask.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
        cv2.drawContours(out, contours, -1, PALETTE[k % len(PALETTE)].tolist(), thickness=max(1, image.shape[0] // 256))
    return out


def resize_longest(image: np.ndarray, side: int) -> np.ndarray:
    """The image scaled so that its longest side is `side` pixels (area filter to shrink, linear to grow)."""
    scale = side / max(image.shape[:2])
    if scale == 1:
        return image
    size = (max(1, round(image.shape[1] * scale)), max(1, round(image.shape[0] * scale)))
    return cv2.resize(image, size, interpolation=cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR)


def caption(image: np.ndarray, text: str) -> np.ndarray:
    """The image with a text bar above it."""
    scale = min(max(image.shape[1] / 560, 0.42), 1.2)
    bar_height = int(30 * scale) + 8
    bar = np.full((bar_height, image.shape[1], 3), 255, np.uint8)
    cv2.putText(bar, text, (4, bar_height - 9), cv2.FONT_HERSHEY_SIMPLEX, scale, (0, 0, 0), 1, cv2.LINE_AA)
    return np.vstack([bar, image])


def grid(rows: Sequence[Sequence[np.ndarray]], gap: int = 4) -> np.ndarray:
    """Tiles of equal height side by side, rows stacked, separated by white gaps."""
    lines = []
    for row in rows:
        height = max(tile.shape[0] for tile in row)
        padded = [np.pad(t, ((0, height - t.shape[0]), (0, gap), (0, 0)), constant_values=255) for t in row]
        lines.append(np.hstack(padded))
    width = max(line.shape[1] for line in lines)
    lines = [np.pad(line, ((0, gap), (0, width - line.shape[1]), (0, 0)), constant_values=255) for line in lines]
    return np.vstack(lines)


def save_png(image: np.ndarray, path: str | Path) -> Path:
    """Write an RGB (H, W, 3) or single-channel (H, W) image as PNG, atomically."""
    path = Path(path)
    with atomic_path(path) as tmp:
        ok, encoded = cv2.imencode(".png", image[..., ::-1] if image.ndim == 3 else image)
        if not ok:
            raise OSError(f"could not encode {path}")
        tmp.write_bytes(encoded.tobytes())
    return path


def save_mask_png(mask: np.ndarray, path: str | Path) -> Path:
    """Write a boolean (H, W) mask as a single-channel PNG: 255 on the object, 0 elsewhere."""
    return save_png(mask.astype(np.uint8) * 255, path)


Points = list[tuple[int, float]]


def plot_curves(series: dict[str, Points | dict[str, Points]], xlabel: str = "step") -> np.ndarray | None:
    """One panel per metric; a panel draws one history [(step, value), ...] or several, named in a legend
    (e.g. one line per job of a sweep). None when there is nothing to draw."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    panels: dict[str, dict[str, Points]] = {}
    for name, lines in series.items():
        lines = lines if isinstance(lines, dict) else {"": lines}
        named = {label: points for label, points in lines.items() if points}
        if named:
            panels[name] = named
    if not panels:
        return None
    figure = Figure(figsize=(4.5 * len(panels), 3.2), dpi=100, layout="constrained")
    canvas = FigureCanvasAgg(figure)
    for axis, (name, lines) in zip(figure.subplots(1, len(panels), squeeze=False)[0], panels.items(), strict=True):
        for label, points in lines.items():
            steps, values = zip(*sorted(points), strict=True)
            axis.plot(steps, values, marker="o" if len(points) < 30 else None, markersize=3, label=label or None)
        if "" not in lines:
            axis.legend(fontsize="small")
        axis.set_title(name)
        axis.set_xlabel(xlabel)
        axis.grid(alpha=0.3)
    canvas.draw()
    return np.asarray(canvas.buffer_rgba())[..., :3].copy()
