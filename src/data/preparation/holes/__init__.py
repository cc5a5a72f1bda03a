"""Where inpainting holes come from (the `holes=` config group): one small module per source.

A source has a `name` (it goes into the sample file names), says whether it draws holes for each
crop (`per_crop`) or once for the whole image, and `holes(image, item, rng)` returns a bool mask of
the image's size, True where the model will have to fill in.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any

SOURCES = ("free_form", "depth", "objects")  # the names sample files may carry


@dataclass(frozen=True)
class SourceImage:
    """One input image, as a hole source needs to find its own side files (depth maps, object masks)."""

    name: str  # unique within its split, as prepare lists the input (a/b/001.jpg -> a_b_001)
    path: Path
    split: str  # the input's split folder (train, eval, val)
    root: Path  # the input folder


def source_spec(source: Any) -> dict[str, Any]:
    """A source's settings (its dataclass init fields), recorded in prepare.json for idempotent reruns."""
    return {f.name: getattr(source, f.name) for f in dataclasses.fields(source) if f.init}
