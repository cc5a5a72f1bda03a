"""Stop cleanly on preemption and time limits: signal -> flag -> checkpoint at the next step -> exit.

Clusters warn a job before they stop it: SLURM sends SIGTERM on preemption and on `scontrol
requeue`, and submitit asks SLURM for SIGUSR2 shortly before the time limit. A handler that saved
a checkpoint right away could catch the model halfway through an optimizer step, so the handler
only records the signal; the trainer checks `received` between steps, saves, and raises
`TrainingInterrupted`. Leaving the block then hands the signal to whoever handled it before
(submitit requeues the job there), so a requeued job resumes from exactly where it stopped.
"""

from __future__ import annotations

import logging
import signal
import threading
from collections.abc import Sequence
from types import FrameType
from typing import Any

from src.errors import ConfigError, TrainingInterrupted

log = logging.getLogger(__name__)


def parse_signals(names: Sequence[str]) -> list[signal.Signals]:
    parsed = []
    for name in names:
        full = name.upper() if name.upper().startswith("SIG") else f"SIG{name.upper()}"
        if not hasattr(signal.Signals, full):
            raise ConfigError(f"trainer.stop_signals: unknown signal {name!r}; expected names like SIGTERM, SIGUSR2")
        parsed.append(signal.Signals[full])
    return parsed


class StopSignals:
    """Within the block, the listed signals set `received` instead of stopping the process."""

    def __init__(self, names: Sequence[str]):
        self.signals = parse_signals(names)
        self.received: signal.Signals | None = None
        self._previous: dict[signal.Signals, Any] = {}

    def _record(self, signum: int, frame: FrameType | None) -> None:
        if self.received is None:
            self.received = signal.Signals(signum)
            log.warning("received %s: stopping after the current step, with a checkpoint", self.received.name)

    def __enter__(self) -> StopSignals:
        if threading.current_thread() is not threading.main_thread():
            log.warning("not in the main thread: %s will stop training without a checkpoint", self.signals)
            return self
        for sig in self.signals:
            self._previous[sig] = signal.signal(sig, self._record)
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        previous, self._previous = self._previous, {}
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        handler = previous.get(self.received) if self.received else None
        if isinstance(exc, TrainingInterrupted) and callable(handler):
            # e.g. submitit's, which asks SLURM to requeue the job and exits
            handler(int(self.received), None)
