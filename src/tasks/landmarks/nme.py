"""Normalised mean error (NME) of landmarks, per image, per group and overall, with failure rate.

NME of one image = mean over its points of |predicted - true| / d, where d is
  bbox:         sqrt(w * h) of the true points' bounding box (the default; seed 002's choice), or
  inter_ocular: the distance between the centres of the two eyes (scheme.left_eye / right_eye).
An image fails when its NME exceeds `failure_threshold` (0.1 by convention).
"""

from __future__ import annotations

import numpy as np

from src.errors import ConfigError
from src.tasks.landmarks.scheme import LandmarkScheme
from src.utils.distributed import sum_over_ranks

NORMALIZATIONS = ("bbox", "inter_ocular")


def normalizer(points: np.ndarray, scheme: LandmarkScheme, normalize: str) -> np.ndarray:
    """The distance d of each image; `points` are the true (B, K, 2) points."""
    if normalize == "bbox":
        size = points.max(axis=1) - points.min(axis=1)
        return np.sqrt(size[:, 0] * size[:, 1])
    if normalize == "inter_ocular":
        left = points[:, list(scheme.left_eye)].mean(axis=1)
        right = points[:, list(scheme.right_eye)].mean(axis=1)
        return np.linalg.norm(left - right, axis=1)
    raise ConfigError(f"nme.normalize={normalize!r}: expected one of {list(NORMALIZATIONS)}")


def image_nme(pred: np.ndarray, true: np.ndarray, scheme: LandmarkScheme, normalize: str = "bbox") -> np.ndarray:
    """(B, K) per-point errors divided by each image's d."""
    d = np.maximum(normalizer(true, scheme, normalize), 1e-6)
    return np.linalg.norm(pred - true, axis=-1) / d[:, None]


class NmeMeter:
    """Accumulates per-point normalised errors; `compute()` gives nme, nme/<group>, failure_rate.

    In a data-parallel run every process adds its images and `compute()` returns the result over all.
    """

    def __init__(self, scheme: LandmarkScheme, normalize: str = "bbox", failure_threshold: float = 0.1):
        if normalize not in NORMALIZATIONS:
            raise ConfigError(f"nme.normalize={normalize!r}: expected one of {list(NORMALIZATIONS)}")
        self.scheme, self.normalize, self.failure_threshold = scheme, normalize, float(failure_threshold)
        self.errors: list[np.ndarray] = []  # (B, K) each

    def update(self, pred: np.ndarray, true: np.ndarray) -> np.ndarray:
        """Add a batch; return each image's NME."""
        errors = image_nme(np.asarray(pred, np.float64), np.asarray(true, np.float64), self.scheme, self.normalize)
        self.errors.append(errors)
        return errors.mean(axis=1)

    def per_image(self) -> np.ndarray:
        return np.concatenate(self.errors) if self.errors else np.zeros((0, self.scheme.num_points))

    def compute(self) -> dict[str, float]:
        errors = self.per_image()
        per_image = errors.mean(axis=1)
        sums = [float(per_image.sum()), float((per_image > self.failure_threshold).sum()), float(len(per_image))]
        sums += [float(errors[:, list(g.indices)].mean(axis=1).sum()) for g in self.scheme.groups]
        totals = sum_over_ranks(sums)
        count = totals[2]
        if not count:
            return {"nme": float("nan"), "failure_rate": float("nan"), "images": 0.0}
        metrics = {"nme": totals[0] / count, "failure_rate": totals[1] / count, "images": count}
        for group, total in zip(self.scheme.groups, totals[3:], strict=True):
            metrics[f"nme_{group.name}"] = total / count
        return metrics
