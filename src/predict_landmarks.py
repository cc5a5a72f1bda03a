"""`python -m src.predict_landmarks image=PATH checkpoint=RUN [box=...]`: the landmarks of one face.

The crop is the face box (enlarged by the margin the model was trained with) or the whole image;
points come back in image pixels and are written as a drawing and as JSON in the annotation
files' convention (the centre of the top-left pixel is (0, 0)).
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

from omegaconf import DictConfig

from src.cli import hydra_entry
from src.errors import ConfigError
from src.landmarks.drawing import draw_landmarks
from src.landmarks.exported import load_exported, spec_path
from src.landmarks.predictor import LandmarkPredictor
from src.models.trained_weights import read_trained_checkpoint
from src.user_input import parse_box, read_user_image
from src.utils.atomic import write_text_atomic
from src.utils.device import resolve_device
from src.visualize import caption, resize_longest, save_png

log = logging.getLogger(__name__)


def load_landmark_predictor(spec: str, tracking_uri: str) -> LandmarkPredictor:
    """A predictor from an exported .pth (with its YAML) or anything `checkpoint=` accepts."""
    path = Path(spec).expanduser()
    if path.is_file() and spec_path(path).is_file():
        return load_exported(path)
    weights = read_trained_checkpoint(spec, tracking_uri)
    return LandmarkPredictor.from_checkpoint(weights.checkpoint, weights.source)


def predict_landmarks(cfg: DictConfig) -> dict[str, Path]:
    if not cfg.checkpoint:
        raise ConfigError("checkpoint= is required: a training run folder, a .pt file, an MLflow run id or an export")
    path, image = read_user_image(cfg.image)
    box = parse_box(cfg.box)
    predictor = load_landmark_predictor(str(cfg.checkpoint), cfg.logger.tracking_uri).to(resolve_device(cfg.device))
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


@hydra_entry("predict_landmarks")
def main(cfg: DictConfig) -> dict[str, Path]:
    return predict_landmarks(cfg)


if __name__ == "__main__":
    main()
