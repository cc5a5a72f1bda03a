"""What people give the tools on the command line: an image path and a box, in that image's own pixels."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from src.data.mask_io import read_image
from src.errors import DataError, PromptError

Box = tuple[float, float, float, float]
BOX_HINT = 'expected "x0,y0,x1,y1" in image pixels with x0 <= x1 and y0 <= y1, e.g. box="10,20,200,240"'


def read_user_image(value: str | None) -> tuple[Path, np.ndarray]:
    """The image `image=` names, upright as image viewers show it (EXIF orientation applied)."""
    path = Path(str(value)).expanduser() if value is not None else None
    if path is None or not path.is_file():
        raise DataError(f"image={value}: no such file; expected the path of an image (JPEG, PNG, ...)")
    return path, read_image(path, upright=True)


def parse_numbers(part: Any, what: str, hint: str) -> list[float]:
    """`"1,2,3"` or a list of numbers -> floats; anything else is a PromptError naming `what` and `hint`."""
    items = part.split(",") if isinstance(part, str) else list(part) if isinstance(part, Sequence) else [part]
    try:
        return [float(item) for item in items]
    except (TypeError, ValueError) as err:
        raise PromptError(f"{what}: {part!r} is not a list of numbers; {hint}") from err


def parse_box(value: Any) -> Box | None:
    """`"x0,y0,x1,y1"` or [x0, y0, x1, y1] -> a tuple; None -> None."""
    if value is None:
        return None
    numbers = parse_numbers(value, f"box={value}", BOX_HINT)
    if len(numbers) != 4 or numbers[0] > numbers[2] or numbers[1] > numbers[3]:
        raise PromptError(f"box={value}: {BOX_HINT}")
    return numbers[0], numbers[1], numbers[2], numbers[3]
