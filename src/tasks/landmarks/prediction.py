"""Landmarks of one image for `python -m src.predict`: the crop is the face box (enlarged by the
trained margin) or the whole image; points come back in image pixels and are written as a drawing
and as JSON in the annotation files' convention (the centre of the top-left pixel is (0, 0)).
"""

from __future__ import annotations

import json
from pathlib import Path

from omegaconf import DictConfig

from src.data.user_input import parse_box, read_user_image
from src.tasks.landmarks.drawing import draw_landmarks
from src.tasks.landmarks.predictor import LandmarkPredictor
from src.tracking.checkpoints import Weights
from src.utils.atomic import write_text_atomic
from src.utils.device import resolve_device
from src.utils.pictures import caption, resize_longest, save_png


def predict_landmarks(cfg: DictConfig, weights: Weights) -> dict[str, Path]:
    """The points of one face (`box=`, or the whole image), drawn and written as JSON in `output_dir`."""
    path, image = read_user_image(cfg.image)
    box = parse_box(cfg.box)
    predictor = LandmarkPredictor.from_checkpoint(weights.checkpoint, weights.source).to(resolve_device(cfg.device))
    result = predictor.predict(image, box)
    scale = int(cfg.picture_side) / max(image.shape[:2])
    drawing = draw_landmarks(
        resize_longest(image, int(cfg.picture_side)),
        result.points * scale + (scale - 1) / 2,
        predictor.scheme,
        label_points=True,
    )
    out = Path(cfg.output_dir)
    record = {
        "image": str(path),
        "width": image.shape[1],
        "height": image.shape[0],
        "scheme": predictor.scheme.name,
        "points": [[round(float(x), 2), round(float(y), 2)] for x, y in result.points],
        "scores": [round(float(s), 4) for s in result.scores],
        "box": [round(v, 2) for v in result.box],
    }
    written = {
        "picture": save_png(
            caption(drawing, f"{path.name}: {predictor.scheme.name}"), out / f"{path.stem}_landmarks.png"
        ),
        "json": write_text_atomic(json.dumps(record, indent=1) + "\n", out / f"{path.stem}_landmarks.json"),
    }
    print(f"wrote {written['picture']} and {written['json']}")
    return written
