"""Device and precision choice: `auto` means CUDA, then Apple MPS, then CPU."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator

import torch

from src.errors import ConfigError

log = logging.getLogger(__name__)

PRECISIONS = ("auto", "bf16", "fp16", "fp32")


def resolve_device(name: str) -> torch.device:
    """Turn `trainer.device` into a torch.device, warning where SAM2 runs slower than expected."""
    if name == "auto":
        if torch.cuda.is_available():
            name = "cuda"
        elif torch.backends.mps.is_available():
            name = "mps"
        else:
            name = "cpu"
    try:
        device = torch.device(name)
    except RuntimeError as err:
        raise ConfigError(f"trainer.device={name!r} is not a device torch knows: {err}") from err
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise ConfigError("trainer.device=cuda but torch sees no CUDA GPU; use trainer.device=auto or cpu")
        major, minor = torch.cuda.get_device_capability(device)
        if major < 8:
            log.warning(
                "GPU %s has compute capability %d.%d < 8.0: SAM2 turns Flash Attention off and bf16 is "
                "unavailable, so training is slower and uses more memory (try model=tiny or a smaller "
                "trainer.batch_size)",
                torch.cuda.get_device_name(device),
                major,
                minor,
            )
    return device


def set_cpu_threads(threads: int | None, key: str) -> None:
    """`trainer.cpu_threads` (training) or `cpu_threads` (every other entry point): torch's threads per
    operation on the CPU; None keeps torch's default.

    On a machine shared with other jobs, the threads of one operation wait for each other whenever
    one of them is descheduled; with the decoder's many small operations, 1 thread can be several
    times faster than 2 busy cores.
    """
    if threads is None:
        return
    if int(threads) < 1:
        raise ConfigError(f"{key}={threads}: expected a positive number of threads, or null")
    torch.set_num_threads(int(threads))


def resolve_precision(name: str, device: torch.device) -> torch.dtype | None:
    """Autocast dtype for `trainer.precision`, or None for full fp32.

    `auto` is bf16 on CUDA GPUs that support it and fp32 elsewhere: CPU autocast is slower than
    fp32 for SAM2, and MPS bf16 support varies by macOS version.
    """
    if name not in PRECISIONS:
        raise ConfigError(f"trainer.precision={name!r}: expected one of {', '.join(PRECISIONS)}")
    if name == "auto":
        name = "bf16" if device.type == "cuda" and torch.cuda.is_bf16_supported() else "fp32"
    if name != "fp32" and device.type != "cuda":
        raise ConfigError(f"trainer.precision={name} needs a CUDA GPU; this run is on {device.type}")
    if name == "bf16" and not torch.cuda.is_bf16_supported():
        raise ConfigError("trainer.precision=bf16 but this GPU has no bf16 support; use fp16 or fp32")
    return {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": None}[name]


@contextlib.contextmanager
def autocast(device: torch.device, dtype: torch.dtype | None) -> Iterator[None]:
    """Mixed-precision context; a no-op for fp32."""
    if dtype is None:
        yield
    else:
        with torch.autocast(device_type=device.type, dtype=dtype):
            yield


def is_out_of_memory(err: BaseException) -> bool:
    """Whether `err` is a device or host allocation failure (CUDA, MPS or CPU), not a bug."""
    if isinstance(err, torch.OutOfMemoryError | MemoryError):
        return True
    text = str(err)
    return isinstance(err, RuntimeError) and ("out of memory" in text or "can't allocate memory" in text)
