"""Where a run's wall-clock time goes: preparation (e.g. filling an embedding cache), training steps
and evaluation, with what the steps processed. The trainer logs it; the benchmark reads it."""

from __future__ import annotations

import time
from collections import defaultdict
from dataclasses import dataclass, field


@dataclass
class RunTiming:
    started: float = field(default_factory=time.perf_counter)
    prepare_s: float = 0.0  # before the first step: data preparation such as caching embeddings
    eval_s: float = 0.0  # validation and the checkpoints written after it
    # seconds spent in training (data waits, forward, backward, optimizer) when each step ended
    step_ends: list[float] = field(default_factory=list)
    counts: dict[str, int] = field(default_factory=lambda: defaultdict(int))  # e.g. prompts, images trained on

    def elapsed(self) -> float:
        """Seconds since the run started, everything included."""
        return time.perf_counter() - self.started

    @property
    def train_s(self) -> float:
        return self.step_ends[-1] if self.step_ends else 0.0

    def add_counts(self, counts: dict[str, int]) -> None:
        for name, value in counts.items():
            self.counts[name] += value

    def summary(self) -> dict[str, float]:
        """As MLflow metrics."""
        return {
            "time/prepare_s": self.prepare_s,
            "time/train_s": self.train_s,
            "time/eval_s": self.eval_s,
            "time/total_s": self.elapsed(),
        }
