"""What a folder holds, in short: a fingerprint of its files (did two runs see the same data?) and its size."""

from __future__ import annotations

import hashlib
from pathlib import Path


def folder_digest(root: Path) -> str:
    """12 hex digits over every file's relative path and size: cheap on large datasets, and
    changed by any file added, removed, renamed or resized (not by an edit that keeps the size)."""
    digest = hashlib.sha256()
    for path in sorted(p for p in Path(root).rglob("*") if p.is_file()):
        digest.update(f"{path.relative_to(root).as_posix()}\0{path.stat().st_size}\n".encode())
    return digest.hexdigest()[:12]


def folder_size(root: Path) -> int:
    """Bytes of the files under `root`, a file with several hard links (checkpoints) counted once."""
    sizes = {}
    for path in Path(root).rglob("*"):
        if path.is_file():
            stat = path.stat()
            sizes[(stat.st_dev, stat.st_ino)] = stat.st_size
    return sum(sizes.values())


def human_size(size: float) -> str:
    """1536 -> "1.5 KB"."""
    units = ["B", "KB", "MB", "GB", "TB"]
    k = 0
    while size >= 1024 and k < len(units) - 1:
        size, k = size / 1024, k + 1
    return f"{size:.0f} B" if k == 0 else f"{size:.1f} {units[k]}"
