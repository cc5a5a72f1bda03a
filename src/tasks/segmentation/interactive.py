"""Click-by-click segmentation of one object, independent of any user interface.

SAM2's interactive loop: each click is added to the prompt and the previous mask is fed back as
the mask prompt, so the mask is refined rather than predicted afresh; undo returns to exactly the
previous mask. The browser page of `python -m src.predict interactive=true` drives one; so can an
annotation tool.
"""

from __future__ import annotations

import numpy as np

from src.tasks.segmentation.predictor import Prediction, Sam2Predictor
from src.tasks.segmentation.prompts import Prompts
from src.tasks.segmentation.user_prompts import Point, check_inside, user_prompts


class ClickSession:
    """One image, encoded once, and the clicks (x, y, label) placed on it so far."""

    def __init__(self, predictor: Sam2Predictor, image: np.ndarray, name: str = "image"):
        self.predictor, self.image, self.name = predictor, image, name
        self.encoded = predictor.encode(image)
        self.points: list[Point] = []
        self.history: list[Prediction] = []

    @property
    def prediction(self) -> Prediction | None:
        return self.history[-1] if self.history else None

    @property
    def prompts(self) -> Prompts | None:
        return user_prompts(self.points, None) if self.points else None

    def mask(self) -> np.ndarray | None:
        """The current (H, W) boolean mask, or None before the first click."""
        return None if self.prediction is None else self.prediction.best_masks()[0].cpu().numpy()

    def add(self, x: float, y: float, label: int) -> Prediction:
        """Add a click (label 1 foreground, 0 background) and refine the mask."""
        check_inside([(x, y, label)], None, self.encoded.width, self.encoded.height, self.name)
        self.points.append((float(x), float(y), int(label)))
        previous = None if self.prediction is None else self.prediction.best_logits()
        self.history.append(self.predictor.predict(self.encoded, self.prompts, previous))
        return self.history[-1]

    def undo(self) -> None:
        if self.points:
            self.points.pop()
            self.history.pop()

    def clear(self) -> None:
        self.points.clear()
        self.history.clear()
