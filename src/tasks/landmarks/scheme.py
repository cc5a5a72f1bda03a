"""A landmark scheme: how many points, their groups and colors, and which swap under a mirror flip.

One YAML in `conf/landmarks/` describes a scheme; the annotation tool, the heatmap model, flip
augmentation, NME per group and the drawings all read it from here, so they cannot disagree.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf

from src.config import PROJECT_ROOT

SCHEMES_DIR = PROJECT_ROOT / "conf" / "landmarks"


@dataclass(frozen=True)
class LandmarkGroup:
    name: str
    indices: tuple[int, ...]
    color: tuple[int, int, int]  # RGB


@dataclass(frozen=True)
class LandmarkScheme:
    name: str
    num_points: int
    groups: tuple[LandmarkGroup, ...]
    flip_pairs: tuple[tuple[int, int], ...]
    left_eye: tuple[int, ...]
    right_eye: tuple[int, ...]
    reference: tuple[tuple[float, float], ...] = ()  # each point on a typical face, in a unit square (optional)

    @classmethod
    def from_config(cls, cfg: Mapping[str, Any] | Any, source: str = "landmarks") -> LandmarkScheme:
        """Build and validate a scheme; errors name `source` and the key that is wrong."""
        if not isinstance(cfg, Mapping):
            cfg = OmegaConf.to_container(cfg, resolve=True)
        missing = [k for k in ("name", "num_points", "groups", "flip_pairs", "left_eye", "right_eye") if k not in cfg]
        if missing:
            raise ValueError(f"{source}: missing key(s) {missing}")
        scheme = cls(
            name=str(cfg["name"]),
            num_points=int(cfg["num_points"]),
            groups=tuple(
                LandmarkGroup(str(g["name"]), tuple(int(i) for i in g["indices"]), _rgb(g["color"], source))
                for g in cfg["groups"]
            ),
            flip_pairs=tuple((int(a), int(b)) for a, b in cfg["flip_pairs"]),
            left_eye=tuple(int(i) for i in cfg["left_eye"]),
            right_eye=tuple(int(i) for i in cfg["right_eye"]),
            reference=tuple((float(x), float(y)) for x, y in cfg.get("reference") or ()),
        )
        scheme._validate(source)
        return scheme

    def _validate(self, source: str) -> None:
        grouped = sorted(i for g in self.groups for i in g.indices)
        if grouped != list(range(self.num_points)):
            raise ValueError(f"{source}.groups: every index 0..{self.num_points - 1} must be in exactly one group")
        flipped = [i for pair in self.flip_pairs for i in pair]
        if len(set(flipped)) != len(flipped) or any(not 0 <= i < self.num_points for i in flipped):
            raise ValueError(f"{source}.flip_pairs: indices must be in 0..{self.num_points - 1}, each at most once")
        for key in ("left_eye", "right_eye"):
            indices = getattr(self, key)
            if not indices or any(not 0 <= i < self.num_points for i in indices):
                raise ValueError(f"{source}.{key}: expected a non-empty list of indices in 0..{self.num_points - 1}")

        if self.reference and (
            len(self.reference) != self.num_points or any(not 0 <= v <= 1 for xy in self.reference for v in xy)
        ):
            raise ValueError(f"{source}.reference: expected {self.num_points} [x, y] pairs in 0..1 (or no key)")

    def group_of(self, index: int) -> LandmarkGroup:
        for group in self.groups:
            if index in group.indices:
                return group
        raise IndexError(f"landmark {index} is not in scheme {self.name} (0..{self.num_points - 1})")

    def colors(self) -> list[tuple[int, int, int]]:
        """The RGB color of each landmark, in index order."""
        return [self.group_of(i).color for i in range(self.num_points)]

    def flip_permutation(self) -> list[int]:
        """`points[perm]` relabels the points of a mirrored image: a left eye becomes a right eye."""
        perm = list(range(self.num_points))
        for a, b in self.flip_pairs:
            perm[a], perm[b] = b, a
        return perm

    def to_dict(self) -> dict[str, Any]:
        """The scheme as the YAML it came from (written beside exported models)."""
        return {
            "name": self.name,
            "num_points": self.num_points,
            "groups": [{"name": g.name, "indices": list(g.indices), "color": list(g.color)} for g in self.groups],
            "flip_pairs": [list(p) for p in self.flip_pairs],
            "left_eye": list(self.left_eye),
            "right_eye": list(self.right_eye),
            **({"reference": [list(xy) for xy in self.reference]} if self.reference else {}),
        }


def load_scheme(name_or_path: str | Path) -> LandmarkScheme:
    """A scheme by name (`conf/landmarks/<name>.yaml`) or by path to a YAML file."""
    path = Path(name_or_path)
    if path.suffix not in (".yaml", ".yml"):
        path = SCHEMES_DIR / f"{name_or_path}.yaml"
    if not path.is_file():
        known = sorted(p.stem for p in SCHEMES_DIR.glob("*.yaml"))
        raise FileNotFoundError(f"landmark scheme {name_or_path!r}: {path} does not exist (known: {known})")
    return LandmarkScheme.from_config(OmegaConf.load(path), source=str(path))


def _rgb(value: Sequence[int], source: str) -> tuple[int, int, int]:
    if len(value) != 3 or any(not 0 <= int(c) <= 255 for c in value):
        raise ValueError(f"{source}: color {list(value)} must be three integers 0..255 (RGB)")
    return int(value[0]), int(value[1]), int(value[2])
