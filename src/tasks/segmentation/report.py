"""What an evaluation leaves behind: per-image CSV, summary tables, pictures, and their MLflow metrics."""

from __future__ import annotations

import csv
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path

from src.tasks.segmentation.evaluator import EvaluationResult, ObjectRecord
from src.tasks.segmentation.protocols import CLICKS
from src.utils.atomic import atomic_path, write_text_atomic
from src.utils.pictures import plot_curves, save_png

ORIGINAL, FINE_TUNED = "original", "fine-tuned"
Summary = dict[tuple[str, str], dict[str, float]]  # (model, mode) -> metric -> value


def noc_key(threshold: float) -> str:
    return f"noc{round(threshold * 100)}"


def summarize(records: Sequence[ObjectRecord], thresholds: Sequence[float]) -> Summary:
    """Means over objects per (model, mode): mIoU, Dice, and for clicks NoC and mIoU after each click."""
    groups: dict[tuple[str, str], list[ObjectRecord]] = defaultdict(list)
    for record in records:
        groups[(record.model, record.mode)].append(record)
    summary: Summary = {}
    for key, rows in groups.items():
        count = len(rows)
        values = {
            "objects": float(count),
            "miou": sum(r.iou for r in rows) / count,
            "dice": sum(r.dice for r in rows) / count,
        }
        if key[1] == CLICKS:
            for t in thresholds:
                values[noc_key(t)] = sum(r.clicks_to[t] for r in rows) / count
            for k, column in enumerate(zip(*(r.ious_per_click for r in rows), strict=True), start=1):
                values[f"miou@{k}"] = sum(column) / count
        summary[key] = values
    return summary


def _table(header: list[str], rows: list[list[str]]) -> str:
    """A Markdown table whose columns also line up in a terminal."""
    widths = [max(len(str(cell)) for cell in column) for column in zip(header, *rows, strict=True)]
    lines = [header, ["-" * w for w in widths], *rows]
    return "\n".join(
        "| " + " | ".join(str(c).ljust(w) for c, w in zip(line, widths, strict=True)) + " |" for line in lines
    )


def _metric_rows(summary: Summary, model: str, mode: str, thresholds: Sequence[float]) -> list[tuple[str, str, float]]:
    """(metric name, metric key, value) shown for one model and mode."""
    values = summary[(model, mode)]
    rows = [("mIoU", "miou", values["miou"]), ("Dice", "dice", values["dice"])]
    if mode == CLICKS:
        rows += [(f"NoC@{round(t * 100)}", noc_key(t), values[noc_key(t)]) for t in thresholds]
    return rows


def _shown(key: str, value: float) -> str:
    return f"{value:.2f}" if key.startswith("noc") else f"{100 * value:.2f}%"


def summary_table(summary: Summary, thresholds: Sequence[float]) -> str:
    """One row per model and prompt mode."""
    noc = [f"NoC@{round(t * 100)}" for t in thresholds]
    rows = []
    for (model, mode), values in summary.items():
        cells = [_shown(key, value) for _, key, value in _metric_rows(summary, model, mode, thresholds)]
        rows.append([model, mode, str(int(values["objects"])), *cells, *[""] * (len(noc) + 2 - len(cells))])
    return _table(["model", "prompt", "objects", "mIoU", "Dice", *noc], rows)


def comparison_table(summary: Summary, modes: Sequence[str], thresholds: Sequence[float]) -> str:
    """Seed 001's side-by-side table: original, fine-tuned and the change, per prompt mode and metric."""
    rows = []
    for mode in modes:
        for name, key, before in _metric_rows(summary, ORIGINAL, mode, thresholds):
            after = summary[(FINE_TUNED, mode)][key]
            change = f"{after - before:+.2f} clicks" if key.startswith("noc") else f"{100 * (after - before):+.2f} pp"
            rows.append([mode, name, _shown(key, before), _shown(key, after), change])
    return _table(["prompt", "metric", ORIGINAL, FINE_TUNED, "change"], rows)


def mlflow_metrics(summary: Summary) -> dict[tuple[str, int], float]:
    """`<model>/<mode>/<metric>` at step 0, mIoU after k clicks at step k, and `change/...` when comparing."""
    compare = {model for model, _ in summary} == {ORIGINAL, FINE_TUNED}
    metrics: dict[tuple[str, int], float] = {}
    for (model, mode), values in summary.items():
        slug = model.replace("-", "")
        for key, value in values.items():
            if key.startswith("miou@"):
                metrics[(f"{slug}/{mode}/miou_by_click", int(key[5:]))] = value
            else:
                metrics[(f"{slug}/{mode}/{key}", 0)] = value
                if compare and model == FINE_TUNED and key != "objects":
                    metrics[(f"change/{mode}/{key}", 0)] = value - summary[(ORIGINAL, mode)][key]
    return metrics


def write_records(records: Sequence[ObjectRecord], thresholds: Sequence[float], path: Path) -> Path:
    noc = [f"noc@{round(t * 100)}" for t in thresholds]
    header = ["model", "mode", "image", "object", "area", "iou", "dice", *noc, "ious_per_click", "prompt"]
    with atomic_path(path) as tmp, open(tmp, "w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(header)
        for r in records:
            clicks = [r.clicks_to.get(t, "") for t in thresholds]
            per_click = ";".join(f"{v:.4f}" for v in r.ious_per_click)
            writer.writerow(
                [
                    r.model,
                    r.mode,
                    r.image,
                    r.object_id,
                    r.area,
                    f"{r.iou:.6f}",
                    f"{r.dice:.6f}",
                    *clicks,
                    per_click,
                    r.prompt,
                ]
            )
    return path


def write_summary(summary: Summary, path: Path) -> Path:
    keys = sorted({key for values in summary.values() for key in values if not key.startswith("miou@")})
    with atomic_path(path) as tmp, open(tmp, "w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["model", "mode", *keys])
        for (model, mode), values in summary.items():
            writer.writerow([model, mode, *(f"{values[k]:.6f}" if k in values else "" for k in keys)])
    return path


def write_report(
    result: EvaluationResult, summary: Summary, tables: str, thresholds: Sequence[float], folder: Path
) -> list[tuple[Path, str | None]]:
    """Write every file of the report into `folder`; return (file, MLflow artifact folder) pairs."""
    files: list[tuple[Path, str | None]] = [
        (write_records(result.records, thresholds, folder / "per_image.csv"), None),
        (write_summary(summary, folder / "summary.csv"), None),
        (write_text_atomic(tables + "\n", folder / "summary.md"), None),
    ]
    for name, picture in result.pictures.items():
        files.append((save_png(picture, folder / "pictures" / f"{name}.png"), "pictures"))
    curves = {
        f"{model}: mIoU after k clicks": [(int(k[5:]), v) for k, v in values.items() if k.startswith("miou@")]
        for (model, mode), values in summary.items()
        if mode == CLICKS
    }
    picture = plot_curves(curves, xlabel="clicks")
    if picture is not None:
        files.append((save_png(picture, folder / "clicks.png"), None))
    return files
