"""Measurements the benchmark reports: peak memory while a block runs, and a short profile."""

from __future__ import annotations

import contextlib
import os
import threading
from collections.abc import Callable
from pathlib import Path

import torch


def _children(pid: int) -> list[int]:
    """Child processes of `pid`, from /proc (Linux); none where the kernel does not list them."""
    found = []
    for task in Path(f"/proc/{pid}/task").glob("*"):
        with contextlib.suppress(OSError):
            found += [int(child) for child in (task / "children").read_text().split()]
    return found


def _own_bytes(pid: int) -> int:
    """A process's proportional set size: shared pages (a forked worker's copy of the model) count once."""
    with contextlib.suppress(OSError, ValueError):
        for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
            if line.startswith("Pss:"):
                return int(line.split()[1]) * 1024
    with contextlib.suppress(OSError, IndexError, ValueError):
        return int(Path(f"/proc/{pid}/statm").read_text().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    return 0


def _memory_bytes(pid: int | None = None) -> int:
    """Memory of a process (this one by default) and its children, e.g. data-loading workers."""
    pid = pid or os.getpid()
    return _own_bytes(pid) + sum(_memory_bytes(child) for child in _children(pid))


class PeakMemory:
    """Peak memory inside a `with` block: `torch.cuda.max_memory_allocated` on CUDA, else the sampled
    resident memory (proportional set size) of this process and its loader workers."""

    def __init__(self, device: torch.device, interval_s: float = 0.05):
        self.device, self.interval_s = device, interval_s
        self.peak_bytes = 0

    def __enter__(self) -> PeakMemory:
        if self.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(self.device)
            return self
        self._stop = threading.Event()
        self.peak_bytes = _memory_bytes()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def _sample(self) -> None:
        while not self._stop.wait(self.interval_s):
            self.peak_bytes = max(self.peak_bytes, _memory_bytes())

    def __exit__(self, *exc) -> None:
        if self.device.type == "cuda":
            self.peak_bytes = torch.cuda.max_memory_allocated(self.device)
            return
        self._stop.set()
        self._thread.join()
        self.peak_bytes = max(self.peak_bytes, _memory_bytes())


def profile_table(step: Callable[[], None], repeats: int, rows: int = 12) -> str:
    """torch.profiler's table of where `repeats` calls of `step` spend their time (after one warm-up call)."""
    from torch.profiler import ProfilerActivity, profile

    step()
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if torch.cuda.is_available() else [])
    with profile(activities=activities) as prof:
        for _ in range(repeats):
            step()
    sort = "cuda_time_total" if torch.cuda.is_available() else "cpu_time_total"
    return prof.key_averages().table(sort_by=sort, row_limit=rows)
