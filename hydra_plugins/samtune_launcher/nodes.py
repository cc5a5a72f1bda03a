"""What the partition's nodes offer (`sinfo`), and the check of a launcher request against them."""

from __future__ import annotations

import re
import shutil
import subprocess
from dataclasses import dataclass
from typing import Any

from src.errors import ConfigError


@dataclass(frozen=True)
class Node:
    name: str
    cpus: int
    memory_mb: int
    gpus: int

    def describe(self) -> str:
        return f"{self.cpus} CPUs, {self.memory_mb / 1024:.1f} GB, {self.gpus} GPUs"


def gpu_count(gres: str) -> int:
    """GPUs in a `sinfo %G` field: `gpu:4`, `gpu:a100:2(S:0-1),gpu:v100:1`, or `(null)`."""
    return sum(int(m[1]) for m in re.finditer(r"(?:^|,)gpu(?::[^:,(]+)?:(\d+)", gres))


def partition_nodes(partition: str | None) -> list[Node] | None:
    """The nodes of `partition` (None: the cluster's default one); None where `sinfo` cannot say."""
    if shutil.which("sinfo") is None:
        return None
    command = ["sinfo", "-h", "-N", "-o", "%P|%N|%c|%m|%G", *(["-p", partition] if partition else [])]
    try:
        result = subprocess.run(command, capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return None
    nodes = []
    for line in result.stdout.splitlines():
        fields = line.strip().split("|")
        if len(fields) != 5 or (partition is None and not fields[0].endswith("*")):  # the default is starred
            continue
        cpus, memory = (value.rstrip("+") for value in fields[2:4])
        if cpus.isdigit() and memory.isdigit():
            nodes.append(Node(fields[1], int(cpus), int(memory), gpu_count(fields[4])))
    return nodes if result.returncode == 0 and nodes else None


def check_request(params: dict[str, Any], nodes: list[Node]) -> None:
    """Refuse, in one line naming the key to change, a request no node of the partition can run."""
    tasks = int(params.get("tasks_per_node") or 1)
    cpus = int(params.get("cpus_per_task") or 1) * tasks
    memory_mb = int(float(params["mem_gb"]) * 1024) if params.get("mem_gb") else 0
    gpus = int(params.get("gpus_per_node") or 0)
    count = len({n.name for n in nodes})
    fits = any(n.cpus >= cpus and n.memory_mb >= memory_mb and n.gpus >= gpus for n in nodes)
    if fits and count >= int(params.get("nodes") or 1):
        return
    where = f"partition {params.get('partition') or '(default)'}"
    largest = max(nodes, key=lambda n: (min(n.gpus, gpus), n.cpus, n.memory_mb))  # enough GPUs first
    changes = []
    if cpus > largest.cpus:
        per_node = f" x tasks_per_node={tasks}" if tasks > 1 else ""
        asked = f"{params.get('cpus_per_task')}{per_node}"
        changes.append(f"hydra.launcher.cpus_per_task={max(1, largest.cpus // tasks)} (asked {asked})")
    if memory_mb > largest.memory_mb:
        changes.append(f"hydra.launcher.mem_gb={max(1, largest.memory_mb // 1024)} (asked {params['mem_gb']})")
    if gpus > largest.gpus:
        changes.append(f"hydra.launcher.gpus_per_node={largest.gpus} (asked {gpus})")
    if int(params.get("nodes") or 1) > count:
        changes.append(f"hydra.launcher.nodes={count} (asked {params['nodes']})")
    if not changes:  # each fits some node, no node fits all
        changes.append("a smaller hydra.launcher.cpus_per_task, mem_gb or gpus_per_node")
    raise ConfigError(
        f"no node of {where} can run this request; its largest, {largest.name}, has {largest.describe()}: "
        f"set {', '.join(changes)}, or choose another hydra.launcher.partition"
    )
