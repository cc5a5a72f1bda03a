"""Device and precision choice: `auto` means CUDA, then Apple MPS, then CPU."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

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


# x86 flags of native bf16 arithmetic (AVX-512 BF16, AMX); without them torch emulates bf16, slower than fp32
CPU_BF16_FLAGS = ("amx_bf16", "avx512_bf16")


@dataclass(frozen=True)
class Capabilities:
    """What the hardware reports about reduced precision, as `choose_precision` reads it."""

    device_type: str  # cuda | mps | cpu
    cuda_bf16: bool = False  # torch.cuda.is_bf16_supported()
    cpu_flags: frozenset[str] = frozenset()  # the CPU's feature flags (/proc/cpuinfo)
    torch_cpu_bf16: bool = False  # torch's oneDNN can run bf16 kernels on this CPU

    @classmethod
    def detect(cls, device: torch.device) -> Capabilities:
        if device.type == "cuda":
            return cls("cuda", cuda_bf16=torch.cuda.is_bf16_supported())
        if device.type != "cpu":
            return cls(device.type)
        return cls("cpu", cpu_flags=cpu_flags(), torch_cpu_bf16=_torch_cpu_bf16())


def cpu_flags(cpuinfo: Path = Path("/proc/cpuinfo")) -> frozenset[str]:
    """The CPU's feature flags (Linux); empty where the kernel does not list them."""
    with contextlib.suppress(OSError):
        for line in cpuinfo.read_text().splitlines():
            if line.split(":")[0].strip() in ("flags", "Features"):
                return frozenset(line.split(":", 1)[1].split())
    return frozenset()


def _torch_cpu_bf16() -> bool:
    with contextlib.suppress(AttributeError, RuntimeError):
        return bool(torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported())
    return False


def choose_precision(name: str, caps: Capabilities) -> tuple[str, str]:
    """`trainer.precision` (or an inference config's `precision`) as bf16 | fp16 | fp32, and why.

    `auto` is bf16 on CUDA GPUs that support it and fp32 elsewhere: on a CPU with native bf16 (see
    `CPU_BF16_FLAGS`) the encoder runs faster in bf16 but the decoder's training steps ran slower
    (src.bench, AVX-512 BF16 without AMX), emulated CPU bf16 is slower still, and MPS bf16 support
    varies by macOS version. `bf16` on a CPU is allowed, with the reason it may be slow.
    """
    if name not in PRECISIONS:
        raise ConfigError(f"trainer.precision={name!r}: expected one of {', '.join(PRECISIONS)}")
    native_cpu = sorted(caps.cpu_flags.intersection(CPU_BF16_FLAGS)) if caps.torch_cpu_bf16 else []
    if name == "auto":
        if caps.device_type == "cuda":
            if caps.cuda_bf16:
                return "bf16", "auto: this GPU supports bf16"
            return "fp32", "auto: this GPU has no bf16 support"
        if caps.device_type == "cpu":
            if native_cpu:
                return "fp32", (
                    f"auto: fp32 on the CPU although it has native bf16 ({', '.join(native_cpu)}): src.bench measured "
                    "bf16 training slower there; trainer.precision=bf16 to use it"
                )
            return "fp32", f"auto: the CPU has no native bf16 (none of the flags {', '.join(CPU_BF16_FLAGS)})"
        return "fp32", f"auto: fp32 on {caps.device_type}"
    if name == "fp32":
        return "fp32", "trainer.precision=fp32"
    if caps.device_type == "cpu" and name == "bf16":
        if not caps.torch_cpu_bf16:
            raise ConfigError("trainer.precision=bf16 but torch has no bf16 kernels for this CPU; use fp32")
        why = "native" if native_cpu else f"emulated, likely slower than fp32 (no {' or '.join(CPU_BF16_FLAGS)} flag)"
        return "bf16", f"trainer.precision=bf16 on the CPU ({why})"
    if caps.device_type != "cuda":
        raise ConfigError(
            f"trainer.precision={name} needs a CUDA GPU (or bf16 on a CPU); this run is on {caps.device_type}"
        )
    if name == "bf16" and not caps.cuda_bf16:
        raise ConfigError("trainer.precision=bf16 but this GPU has no bf16 support; use fp16 or fp32")
    return name, f"trainer.precision={name}"


def resolve_precision(name: str, device: torch.device) -> torch.dtype | None:
    """Autocast dtype for `trainer.precision` on `device`, or None for full fp32; logs the choice and why."""
    chosen, why = choose_precision(name, Capabilities.detect(device))
    log.info("precision %s on %s (%s)", chosen, device, why)
    return {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": None}[chosen]


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
