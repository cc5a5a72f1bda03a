"""The pyfunc flavour of a registered segmentation model: `mlflow.pyfunc.load_model(uri).predict(frame)`.

MLflow calls `_load_pyfunc` with the model's copy of `best.pt` (src.tracking.registered_model puts
it there). The weights are read as plain tensors (`weights_only=True`) and SAM2 is built from the
registry key in their metadata (`meta.model`), never from anything unpickled.

Input: a pandas DataFrame, one row per object: `image`, a file path or an RGB uint8 array (H, W, 3),
and `prompt`, in the form the project prints (`'box=[x0,y0,x1,y1]' 'points=[[x,y,1]]'`: a row of
evaluation's `per_image.csv`, the click page's replay line) or as people type it
(`points=320,200;100,50,0`). Output: a DataFrame with `mask`, the chosen mask as a boolean (H, W)
array, and `score`, its predicted IoU.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from src.data.user_input import read_user_image
from src.errors import PromptError
from src.tasks.segmentation.object_masks import checkpoint_predictor
from src.tasks.segmentation.predictor import EncodedImage, Sam2Predictor
from src.tasks.segmentation.user_prompts import check_inside, parse_prompt, user_prompts
from src.tracking.checkpoints import Weights
from src.utils.checkpoint_io import read_checkpoint


def _load_pyfunc(path: str) -> SegmentationPyfunc:
    return SegmentationPyfunc(Path(path))


class SegmentationPyfunc:
    """SAM2 from a checkpoint, predicting one mask per row of images and prompts."""

    def __init__(self, checkpoint: Path):
        weights = Weights(read_checkpoint(checkpoint), str(checkpoint))
        # the cache folder is the checkpoint's own: a registered best.pt holds merged stock weights, no adapter base
        cache_dir = str(checkpoint.parent)
        self.predictor: Sam2Predictor = checkpoint_predictor(weights, "registered model", "cpu", "fp32", cache_dir)

    def predict(self, model_input: pd.DataFrame, params: dict[str, Any] | None = None) -> pd.DataFrame:
        encoded: dict[str, EncodedImage] = {}  # rows prompting the same image file encode it once
        rows = []
        for number, row in enumerate(model_input.to_dict("records")):
            if "image" not in row or "prompt" not in row:
                raise PromptError(f"row {number}: expected the columns image and prompt, got {sorted(row)}")
            image, name = row["image"], f"row {number}'s image"
            if isinstance(image, (str, Path)):
                name = str(image)
                if name not in encoded:
                    encoded[name] = self.predictor.encode(read_user_image(name)[1])
                features = encoded[name]
            else:
                features = self.predictor.encode(np.ascontiguousarray(image, dtype=np.uint8))
            points, box = parse_prompt(str(row["prompt"]))
            check_inside(points, box, features.width, features.height, name)
            prediction = self.predictor.predict(features, user_prompts(points, box))
            best = int(prediction.best[0])
            rows.append({"mask": prediction.best_masks()[0].cpu().numpy(), "score": float(prediction.scores[0, best])})
        return pd.DataFrame(rows, columns=["mask", "score"])
