"""Seeded, stable train/val/test assignment, and the split lists seed 002 writes (train.txt, ...).

A name keeps its split once it has one: when a crawl adds images, only the new ones are assigned,
so nothing annotated or evaluated moves between splits.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from pathlib import Path

import numpy as np

from src.errors import ConfigError
from src.utils.atomic import write_text_atomic


def check_ratios(ratios: Mapping[str, float], key: str = "prepare.splits") -> dict[str, float]:
    """Ratios as plain floats summing to 1; refuses negative values and an empty mapping."""
    values = {str(split): float(value) for split, value in dict(ratios).items()}
    if not values or any(v < 0 for v in values.values()) or sum(values.values()) <= 0:
        raise ConfigError(
            f"{key}={values}: expected split names with non-negative ratios, e.g. {{train: 0.8, val: 0.2}}"
        )
    total = sum(values.values())
    return {split: value / total for split, value in values.items()}


def split_counts(total: int, ratios: Mapping[str, float]) -> dict[str, int]:
    """Counts per split that add up to `total`, by largest remainder (1000 at 0.8/0.2 gives 800/200)."""
    exact = {split: total * ratio for split, ratio in ratios.items()}
    counts = {split: math.floor(round(value, 9)) for split, value in exact.items()}
    # remainders rounded, so that float noise does not break ties: those go to the split listed first
    by_remainder = sorted(exact, key=lambda split: (-round(exact[split] - counts[split], 9), list(exact).index(split)))
    for split in by_remainder[: total - sum(counts.values())]:
        counts[split] += 1
    return counts


def assign_splits(
    names: Iterable[str], ratios: Mapping[str, float], seed: int, existing: Mapping[str, str] | None = None
) -> dict[str, str]:
    """name -> split. Names in `existing` keep their split; the others are shuffled with `seed` and
    fill each split up to its share of the total."""
    ratios = check_ratios(ratios)
    names = sorted(set(names))
    existing = {name: split for name, split in (existing or {}).items() if name in set(names)}
    new = [names[i] for i in np.random.default_rng(seed).permutation(len(names)) if names[i] not in existing]
    have = {split: 0 for split in ratios}
    for split in existing.values():
        have[split] = have.get(split, 0) + 1
    target = split_counts(len(names), ratios)
    missing = {split: max(0, target[split] - have.get(split, 0)) for split in ratios}
    if sum(missing.values()) != len(new):  # an old assignment overfilled a split: share the rest by ratio
        missing = split_counts(len(new), ratios)
    assignment = dict(existing)
    start = 0
    for split, count in missing.items():
        for name in new[start : start + count]:
            assignment[name] = split
        start += count
    return assignment


def write_split_lists(root: Path, entries: Mapping[str, str], splits: Iterable[str]) -> dict[str, int]:
    """`root/<split>.txt` for every split, one entry per line, sorted; returns the line counts."""
    counts = {}
    for split in splits:
        lines = sorted(entry for entry, assigned in entries.items() if assigned == split)
        write_text_atomic("".join(f"{line}\n" for line in lines), Path(root) / f"{split}.txt")
        counts[split] = len(lines)
    return counts


def read_split_lists(root: Path, splits: Iterable[str]) -> dict[str, str]:
    """entry -> split from the `root/<split>.txt` files that exist."""
    assignment: dict[str, str] = {}
    for split in splits:
        path = Path(root) / f"{split}.txt"
        if path.is_file():
            for line in path.read_text().splitlines():
                if line.strip():
                    assignment[line.strip()] = split
    return assignment
