"""The benchmark's table: one row per loop, then the ratio of each trainer row to the seed loop."""

from __future__ import annotations

import math
from dataclasses import dataclass

COLUMNS = (
    ("prompts_per_s", "prompts/s"),
    ("images_per_s", "images/s"),
    ("seconds_to_steps", "s to {steps} steps"),
    ("peak_mib", "peak {memory} MiB"),
    ("miou", "val mIoU @ {budget:g} s"),
    ("steps", "steps in budget"),
)


@dataclass
class Row:
    name: str
    prompts_per_s: float
    images_per_s: float
    seconds_to_steps: float  # nan: fewer steps than that within the budget
    peak_mib: float
    miou: float
    steps: int


def _cell(value: float) -> str:
    if isinstance(value, float) and math.isnan(value):
        return "n/a"
    if isinstance(value, int):
        return str(value)
    return f"{value:.4f}" if abs(value) < 1 else f"{value:.2f}" if abs(value) < 100 else f"{value:.0f}"


def ratio(b: float, a: float) -> float:
    return b / a if a and not (math.isnan(a) or math.isnan(b)) else float("nan")


def table(baseline: Row, others: list[Row], steps: int, budget_s: float, memory: str) -> str:
    """Markdown table with a `b/a` ratio row per trainer row (for seconds and memory, lower is better)."""
    headers = ["loop"] + [title.format(steps=steps, budget=budget_s, memory=memory) for _, title in COLUMNS]
    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    for row in [baseline, *others]:
        lines.append("| " + " | ".join([row.name] + [_cell(getattr(row, key)) for key, _ in COLUMNS]) + " |")
    for row in others:
        cells = [_cell(ratio(float(getattr(row, key)), float(getattr(baseline, key)))) for key, _ in COLUMNS]
        lines.append("| " + " | ".join([f"ratio {row.name} / {baseline.name}", *cells]) + " |")
    return "\n".join(lines)
