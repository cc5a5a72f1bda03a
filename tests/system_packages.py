"""Debian packages some tests need (SLURM, Chromium), installed on first use where the machine allows.

CI runs as root on Debian, so the packages are installed there; elsewhere a test that needs them is
skipped with the command that would install them.
"""

from __future__ import annotations

import fcntl
import os
import shutil
import subprocess
from collections.abc import Sequence

LOCK = "/tmp/samtune-apt.lock"


def ensure_debian_packages(packages: Sequence[str], binaries: Sequence[str]) -> str | None:
    """Make `binaries` available by installing `packages`; return None, or why that was impossible."""
    if all(shutil.which(b) for b in binaries):
        return None
    command = f"apt-get install -y {' '.join(packages)}"
    if shutil.which("apt-get") is None or os.geteuid() != 0:
        return f"needs {', '.join(binaries)}; install them with: sudo {command}"
    with open(LOCK, "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # one apt-get at a time, across test processes
        if not all(shutil.which(b) for b in binaries):
            env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
            for args in (["apt-get", "update", "-qq"], ["apt-get", "install", "-y", "-qq", *packages]):
                result = subprocess.run(args, capture_output=True, text=True, env=env, timeout=900)
                if result.returncode != 0:
                    return f"`{' '.join(args)}` failed: {result.stderr.strip()[-500:]}"
    missing = [b for b in binaries if shutil.which(b) is None]
    return f"{', '.join(missing)} still missing after {command}" if missing else None
