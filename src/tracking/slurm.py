"""`launcher=slurm`: submitit's SLURM launcher, checked against the cluster before it submits, and
a sweep whose submission fails ends its MLflow parent run FAILED with the reason.

The launcher's defaults suit a GPU node; on a laptop's single-node cluster they ask for more CPUs
or memory than the node has, which SLURM answers with a traceback from deep inside submitit. The
check reads the partition's nodes (`sinfo`) and names the setting to lower instead.
"""

from __future__ import annotations

import json
import logging
import shutil
import subprocess
from pathlib import Path
from typing import Any

from hydra.utils import instantiate
from hydra_plugins.hydra_submitit_launcher.submitit_launcher import SlurmLauncher

from src.errors import ConfigError
from src.tracking.runs import MlflowTracker
from src.tracking.sweeps import SWEEP_FILE

log = logging.getLogger(__name__)


def largest_node(partition: str | None) -> tuple[int, int] | None:
    """(CPUs, memory in MB) of the partition's largest node, as `sinfo` reports; None without SLURM."""
    if shutil.which("sinfo") is None:
        return None
    command = ["sinfo", "-h", "-o", "%c %m", *(["-p", partition] if partition else [])]
    result = subprocess.run(command, capture_output=True, text=True, timeout=30)
    sizes = []
    for line in result.stdout.splitlines():
        cpus, memory = (field.rstrip("+") for field in line.split())
        if cpus.isdigit() and memory.isdigit():
            sizes.append((int(cpus), int(memory)))
    return (max(c for c, _ in sizes), max(m for _, m in sizes)) if sizes else None


def check_fits(params: dict[str, Any], node: tuple[int, int]) -> None:
    """Refuse settings no node of the partition can run, naming the key and the value that fits."""
    cpus, memory_mb = node
    where = f"partition {params.get('partition') or '(default)'}"
    asked = int(params["cpus_per_task"]) * int(params["tasks_per_node"])
    if asked > cpus:
        raise ConfigError(
            f"hydra.launcher.cpus_per_task={params['cpus_per_task']} x tasks_per_node={params['tasks_per_node']} "
            f"asks for {asked} CPUs, but the largest node of {where} has {cpus}: set "
            f"hydra.launcher.cpus_per_task={max(1, cpus // int(params['tasks_per_node']))}"
        )
    if params.get("mem_gb") and int(params["mem_gb"]) * 1024 > memory_mb:
        raise ConfigError(
            f"hydra.launcher.mem_gb={params['mem_gb']}, but the largest node of {where} has {memory_mb} MB: set "
            f"hydra.launcher.mem_gb={max(1, memory_mb // 1024)}"
        )


class CheckedSlurmLauncher(SlurmLauncher):
    """submitit's SLURM launcher that checks the request first and fails the sweep's parent run."""

    def launch(self, job_overrides: Any, initial_job_idx: int) -> Any:
        try:
            node = largest_node(self.params.get("partition"))
            if node is not None:
                check_fits(self.params, node)
            return super().launch(job_overrides, initial_job_idx)
        except Exception as err:
            self._fail_parent_run(err)
            raise

    def _fail_parent_run(self, err: BaseException) -> None:
        record = Path(str(self.config.hydra.sweep.dir)) / SWEEP_FILE
        if not record.is_file():
            return
        tracker: MlflowTracker = instantiate(self.config.logger)
        tracker.start("", {}, run_id=json.loads(record.read_text())["parent_run_id"])
        tracker.set_tags({"sweep.failure": f"{type(err).__name__}: {err}"[:5000]})
        tracker.finish("FAILED")
        log.error("the sweep's launch failed; its MLflow run %s is marked FAILED", tracker.run_id)
