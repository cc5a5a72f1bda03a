"""The benchmark's table: one row per loop, then the ratio of each trainer row to the seed loop;
and time to quality, from each loop's validation curve (val mIoU against seconds of training)."""

from __future__ import annotations

import math
from dataclasses import dataclass

COLUMNS = (
    ("prompts_per_s", "prompts/s"),
    ("images_per_s", "images/s"),
    ("seconds_to_steps", "s to {steps} steps"),
    ("seconds_to_target", "s to val mIoU {target:g}"),
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
    seconds_to_target: float  # nan: the target mIoU was not reached within the budget
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


Curve = list[tuple[float, float]]  # (seconds of training, val mIoU), in time order


def seconds_to_target(curve: Curve, target: float) -> float:
    """When val mIoU first reached `target`; nan if it never did."""
    return next((seconds for seconds, miou in curve if miou >= target), math.nan)


def table(baseline: Row, others: list[Row], steps: int, budget_s: float, memory: str, target: float) -> str:
    """Markdown table with a `b/a` ratio row per trainer row (for seconds and memory, lower is better)."""
    titles = {"steps": steps, "budget": budget_s, "memory": memory, "target": target}
    headers = ["loop"] + [title.format(**titles) for _, title in COLUMNS]
    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    for row in [baseline, *others]:
        lines.append("| " + " | ".join([row.name] + [_cell(getattr(row, key)) for key, _ in COLUMNS]) + " |")
    for row in others:
        cells = [_cell(ratio(float(getattr(row, key)), float(getattr(baseline, key)))) for key, _ in COLUMNS]
        lines.append("| " + " | ".join([f"ratio {row.name} / {baseline.name}", *cells]) + " |")
    return "\n".join(lines)


def headline(baseline: Row, others: list[Row], target: float) -> str:
    """The two figures that matter, each trainer row against the seed loop: prompts/s and time to quality."""
    lines = []
    for row in others:
        faster = ratio(baseline.seconds_to_target, row.seconds_to_target)
        quality = (
            f"val mIoU {target:g} in {row.seconds_to_target:.0f} s against {baseline.seconds_to_target:.0f} s, "
            f"{faster:.1f}x sooner"
            if not math.isnan(faster)
            else f"val mIoU {target:g}: {_cell(row.seconds_to_target)} s against {_cell(baseline.seconds_to_target)} s"
        )
        speed = ratio(row.prompts_per_s, baseline.prompts_per_s)
        lines.append(f"- {row.name}: {speed:.1f}x the seed loop's prompts/s; {quality}")
    return "\n".join(lines)
