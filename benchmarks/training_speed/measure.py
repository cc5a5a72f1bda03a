"""Measurements the benchmark reports: peak memory while a block runs, and a short profile."""

from __future__ import annotations

import contextlib
import os
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


def _status_kib(pid: int, field: str) -> int:
    """A memory field of /proc/PID/status (VmHWM: peak resident set, VmRSS: current), in KiB; 0 if unknown."""
    with contextlib.suppress(OSError, ValueError, IndexError):
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(f"{field}:"):
                return int(line.split()[1])
    return 0


def _pss_kib(pid: int) -> int:
    """Proportional set size in KiB: pages shared with the parent (a forked worker's copy of the model) count once."""
    with contextlib.suppress(OSError, ValueError, IndexError):
        for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
            if line.startswith("Pss:"):
                return int(line.split()[1])
    return _status_kib(pid, "VmRSS")


def _reset_peak(pid: int) -> None:
    """Restart the kernel's peak-RSS counter (VmHWM) of a process (Linux: `5` to clear_refs)."""
    with contextlib.suppress(OSError):
        Path(f"/proc/{pid}/clear_refs").write_text("5")


class PeakMemory:
    """Peak memory inside a `with` block: `torch.cuda.max_memory_allocated` on CUDA; on the CPU the
    kernel's peak resident set (VmHWM) of this process plus the proportional set size of the
    loader workers alive at the end (their own memory, not the pages they share with this one).

    The kernel keeps the peak, so nothing samples memory while the measured code runs (a sampler
    reading /proc competes with the allocator for the process's memory map and slows it down).
    """

    def __init__(self, device: torch.device):
        self.device = device
        self.peak_bytes = 0

    def __enter__(self) -> PeakMemory:
        if self.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(self.device)
        else:
            _reset_peak(os.getpid())
        return self

    def __exit__(self, *exc) -> None:
        if self.device.type == "cuda":
            self.peak_bytes = torch.cuda.max_memory_allocated(self.device)
            return
        pid = os.getpid()
        workers = sum(_pss_kib(child) for child in _children(pid))
        self.peak_bytes = (_status_kib(pid, "VmHWM") + workers) * 1024


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
