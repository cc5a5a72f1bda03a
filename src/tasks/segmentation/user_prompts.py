"""Prompts people type for segmentation, in the image's own pixels, and prompts written back that way.

`points="320,200;100,50,0"`: a point is `x,y` or `x,y,label` (label 1 foreground, the default, or
0 background), separated by `;`. `box="x0,y0,x1,y1"`. Hydra lists work as well:
`points=[[320,200],[100,50,0]]`, `box=[10,20,200,240]`. Prompts are written back as shell-quoted
Hydra lists (`'box=[10,20,200,240]' 'points=[[320,200,1]]'`), which Hydra parses whatever the shell,
so any row of evaluation's CSV and the click page's replay line run as printed.
"""

from __future__ import annotations

import json
import shlex
from typing import Any

import torch

from src.data.user_input import BOX_HINT, Box, parse_box, parse_numbers
from src.errors import PromptError
from src.tasks.segmentation.prompts import (
    LABEL_BOX_BOTTOM_RIGHT,
    LABEL_BOX_TOP_LEFT,
    LABEL_NEGATIVE,
    LABEL_POSITIVE,
    Prompts,
    box_prompts,
)

Point = tuple[float, float, int]
POINTS_HINT = (
    'expected "x,y" or "x,y,label" in image pixels, separated by ";", with label 1 (foreground, the default) or 0 '
    '(background), e.g. points="320,200;100,50,0" (on a shell: \'points="320,200;100,50,0"\')'
)


def parse_points(value: Any) -> list[Point]:
    """`"x,y[,label];..."` or a list of [x, y(, label)] -> [(x, y, label), ...]; None -> []."""
    if value is None:
        return []
    parts = [p for p in value.split(";") if p.strip()] if isinstance(value, str) else list(value)
    points = []
    for part in parts:
        numbers = parse_numbers(part, f"points={value}", POINTS_HINT)
        if len(numbers) not in (2, 3):
            raise PromptError(f"points={value}: {part!r} has {len(numbers)} numbers; {POINTS_HINT}")
        label = numbers[2] if len(numbers) == 3 else LABEL_POSITIVE
        if label not in (LABEL_NEGATIVE, LABEL_POSITIVE):
            raise PromptError(f"points={value}: label {label:g} in {part!r}; {POINTS_HINT}")
        points.append((numbers[0], numbers[1], int(label)))
    return points


def check_inside(points: list[Point], box: Box | None, width: int, height: int, image_name: str) -> None:
    """Every point and box corner must lie on a pixel of the image."""
    corners = [(x, y, "point") for x, y, _ in points]
    if box is not None:
        corners += [(box[0], box[1], "box corner"), (box[2], box[3], "box corner")]
    for x, y, what in corners:
        if not (0 <= x <= width - 1 and 0 <= y <= height - 1):
            raise PromptError(
                f"{what} ({x:g}, {y:g}) is outside {image_name} ({width}x{height} pixels): expected x in "
                f"[0, {width - 1}] and y in [0, {height - 1}]"
            )


def typed_prompts(points: Any, box: Any, width: int, height: int, image_name: str) -> Prompts:
    """`points=`/`box=` as people type them, checked to lie on the image: one object's prompt."""
    parsed_points, parsed_box = parse_points(points), parse_box(box)
    check_inside(parsed_points, parsed_box, width, height, image_name)
    return user_prompts(parsed_points, parsed_box)


def user_prompts(points: list[Point], box: Box | None) -> Prompts:
    """One object's prompt: the box corners first, then the clicks, as SAM2's predictor combines them."""
    if not points and box is None:
        raise PromptError(f"no prompt: give points=... or box=... ({POINTS_HINT}; {BOX_HINT})")
    prompts = Prompts.empty(1)
    if box is not None:
        prompts = box_prompts(torch.tensor([box], dtype=torch.float32))
    if points:
        coords = torch.tensor([[[x, y] for x, y, _ in points]], dtype=torch.float32)
        labels = torch.tensor([[label for _, _, label in points]], dtype=torch.int32)
        prompts = prompts.add(coords, labels)
    return prompts


def format_prompt(points: torch.Tensor, labels: torch.Tensor) -> str:
    """One object's prompt as shell-quoted `src.predict` overrides: `'box=[x0,y0,x1,y1]' 'points=[[x,y,l],...]'`."""
    clicks, corners = [], {}
    for (x, y), label in zip(points.tolist(), labels.tolist(), strict=True):
        if label in (LABEL_NEGATIVE, LABEL_POSITIVE):
            clicks.append(f"[{x:g},{y:g},{label}]")
        else:
            corners[label] = f"{x:g},{y:g}"
    box = (corners.get(LABEL_BOX_TOP_LEFT), corners.get(LABEL_BOX_BOTTOM_RIGHT))
    parts = [f"box=[{box[0]},{box[1]}]"] if all(box) else []
    if clicks:
        parts.append(f"points=[{','.join(clicks)}]")
    return " ".join(shlex.quote(part) for part in parts)


def parse_prompt(text: str) -> tuple[list[Point], Box | None]:
    """`format_prompt`'s text (`'box=[x0,y0,x1,y1]' 'points=[[x,y,l],...]'`), or the plain forms people type
    (`points=320,200;100,50,0 box=1,2,3,4`), back to points and a box."""
    values: dict[str, Any] = {}
    for word in shlex.split(text):
        key, sep, value = word.partition("=")
        if not sep or key not in ("points", "box"):
            raise PromptError(f"prompt {text!r}: {word!r} is not points=... or box=...; {POINTS_HINT}; {BOX_HINT}")
        try:
            values[key] = json.loads(value) if value.startswith("[") else value.strip("'\"")
        except json.JSONDecodeError as err:
            raise PromptError(f"prompt {text!r}: {word!r} is not a list of numbers; {POINTS_HINT}") from err
    return parse_points(values.get("points")), parse_box(values.get("box"))
