"""An embedded landmark dataset: cartoon faces drawn with OpenCV, their 28 points known exactly.

Each face is an ellipse with brows, eyes, nose and mouth placed at random; the anime_face_28
points are taken from the same geometry the drawing uses (contour on the jaw, brow ends and
middles, eye corners and lids, nose wings and tip, lip corners and arcs), left to right as seen.
It is written in the animal dataset's layout (raw images, split lists, annotated/*.json), so the
landmark task reads it through exactly the code that reads annotated animal characters.
"""

from __future__ import annotations

import logging
from pathlib import Path

import cv2
import numpy as np
from tqdm import tqdm

from src.data.synthetic import generate_once
from src.tasks.landmarks.annotations import LandmarkAnnotation, save_annotation
from src.tasks.landmarks.scheme import load_scheme

log = logging.getLogger(__name__)

SPEC_FILE = "synthetic_faces.json"
SCHEME = "anime_face_28"
SHIFT = 4  # cv2 fractional bits: shapes are drawn at the points' sub-pixel positions


def _pt(xy: np.ndarray) -> tuple[int, int]:
    return round(float(xy[0]) * (1 << SHIFT)), round(float(xy[1]) * (1 << SHIFT))


def _arc(center: np.ndarray, axes: np.ndarray, degrees: list[float]) -> np.ndarray:
    rad = np.radians(degrees)
    return np.stack([center[0] + axes[0] * np.cos(rad), center[1] + axes[1] * np.sin(rad)], axis=1)


def face_points(rng: np.random.Generator, width: int, height: int) -> tuple[np.ndarray, dict]:
    """The 28 points of one random face, and the shape parameters they were derived from."""
    side = min(width, height)
    axes = np.array([rng.uniform(0.28, 0.4), rng.uniform(0.3, 0.42)]) * side
    center = np.array([width / 2, height / 2]) + rng.uniform(-0.08, 0.08, 2) * side
    eye_dx, eye_y = axes[0] * rng.uniform(0.38, 0.5), center[1] - axes[1] * rng.uniform(0.05, 0.2)
    eye_axes = np.array([axes[0] * rng.uniform(0.16, 0.22), axes[1] * rng.uniform(0.1, 0.18)])
    brow_y = eye_y - eye_axes[1] - axes[1] * rng.uniform(0.08, 0.16)
    nose_y = center[1] + axes[1] * rng.uniform(0.15, 0.25)
    nose_w = axes[0] * rng.uniform(0.08, 0.14)
    mouth_y = center[1] + axes[1] * rng.uniform(0.45, 0.58)
    mouth_w = axes[0] * rng.uniform(0.25, 0.4)
    mouth_h = axes[1] * rng.uniform(0.06, 0.14)

    contour = _arc(center, axes, [170, 135, 90, 45, 10])
    eyes = []
    for sign in (-1, 1):
        c = np.array([center[0] + sign * eye_dx, eye_y])
        dx, dy = np.array([eye_axes[0], 0.0]), np.array([0.0, eye_axes[1]])
        eyes.append(np.array([c - dx, c - dy, c + dx]))
    brows = []
    for eye in eyes:
        left, right = eye[0][0] - eye_axes[0] * 0.2, eye[2][0] + eye_axes[0] * 0.2
        brows.append(np.array([[left, brow_y + 2], [(left + right) / 2, brow_y - 2], [right, brow_y + 2]]))
    nose = np.array([[center[0] - nose_w, nose_y], [center[0], nose_y + nose_w], [center[0] + nose_w, nose_y]])
    upper = np.stack(
        [np.linspace(center[0] - mouth_w, center[0] + mouth_w, 5), np.full(5, mouth_y) - [0, 1, 2, 1, 0]], axis=1
    )
    upper[[1, 3], 1] -= mouth_h * 0.3
    upper[2, 1] -= mouth_h * 0.5
    lower = np.array(
        [
            [center[0] - mouth_w / 2, mouth_y + mouth_h],
            [center[0], mouth_y + mouth_h * 1.3],
            [center[0] + mouth_w / 2, mouth_y + mouth_h],
        ]
    )
    points = np.concatenate([contour, brows[0], brows[1], eyes[0], nose, eyes[1], upper, lower])
    return points, {"center": center, "axes": axes, "eye_axes": eye_axes}


def draw_face(rng: np.random.Generator, width: int, height: int) -> tuple[np.ndarray, np.ndarray]:
    """An RGB cartoon face and its (28, 2) points in image pixels."""
    points, shape = face_points(rng, width, height)
    background = rng.integers(40, 216, 3)
    image = np.clip(background + rng.normal(0, 12, (height, width, 3)), 0, 255).astype(np.uint8)
    skin = tuple(int(v) for v in rng.integers(170, 256, 3))
    line = tuple(int(v) for v in rng.integers(0, 70, 3))
    scale = 1 << SHIFT
    axes = (round(shape["axes"][0] * scale), round(shape["axes"][1] * scale))
    cv2.ellipse(image, _pt(shape["center"]), axes, 0, 0, 360, skin, -1, cv2.LINE_AA, SHIFT)
    cv2.ellipse(image, _pt(shape["center"]), axes, 0, 0, 360, line, 2, cv2.LINE_AA, SHIFT)
    iris = tuple(int(v) for v in rng.integers(0, 256, 3))
    eye_axes = (round(shape["eye_axes"][0] * scale), round(shape["eye_axes"][1] * scale))
    for eye in (points[11:14], points[17:20]):
        centre = (eye[0] + eye[2]) / 2
        cv2.ellipse(image, _pt(centre), eye_axes, 0, 0, 360, (255, 255, 255), -1, cv2.LINE_AA, SHIFT)
        cv2.ellipse(image, _pt(centre), eye_axes, 0, 0, 360, line, 1, cv2.LINE_AA, SHIFT)
        iris_axes = (eye_axes[1] * 2 // 3, eye_axes[1] * 2 // 3)
        cv2.ellipse(image, _pt(centre), iris_axes, 0, 0, 360, iris, -1, cv2.LINE_AA, SHIFT)
    for brow in (points[5:8], points[8:11]):
        cv2.polylines(image, [np.array([_pt(p) for p in brow])], False, line, 2, cv2.LINE_AA, SHIFT)
    cv2.polylines(image, [np.array([_pt(p) for p in points[14:17]])], False, line, 1, cv2.LINE_AA, SHIFT)
    lips = np.array([_pt(p) for p in [*points[20:25], points[24], *points[25:28][::-1], points[20]]])
    cv2.fillPoly(image, [lips], (200, 40, 60), cv2.LINE_AA, SHIFT)
    return image, points


def ensure_synthetic_faces(
    root: str | Path,
    num_train: int = 64,
    num_val: int = 16,
    num_test: int = 16,
    min_size: int = 96,
    max_size: int = 160,
    seed: int = 0,
) -> Path:
    """Write the synthetic faces to `root` unless the same ones are already there; return `root`."""
    root = Path(root)
    spec = {k: v for k, v in locals().items() if k != "root"}
    return generate_once(root, spec, SPEC_FILE, "synthetic faces", lambda tmp: _write(tmp, **spec))


def _write(tmp: Path, num_train: int, num_val: int, num_test: int, min_size: int, max_size: int, seed: int) -> None:
    scheme = load_scheme(SCHEME)
    (tmp / "raw" / "synthetic").mkdir(parents=True)
    for split_id, (split, count) in enumerate((("train", num_train), ("val", num_val), ("test", num_test))):
        names = []
        for i in tqdm(range(count), desc=f"synthetic faces {split}", leave=False):
            rng = np.random.default_rng([seed, split_id, i])
            width, height = (int(v) for v in rng.integers(min_size, max_size + 1, 2))
            image, points = draw_face(rng, width, height)
            relative = f"raw/synthetic/{split}_{i:04d}.png"
            cv2.imwrite(str(tmp / relative), image[..., ::-1])
            annotation = LandmarkAnnotation(
                relative, width, height, scheme.name, [tuple(p) for p in points], True, "synthetic"
            )
            save_annotation(annotation, tmp / "annotated")
            names.append(relative)
        (tmp / f"{split}.txt").write_text("".join(f"{name}\n" for name in names))
