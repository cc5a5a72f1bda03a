"""The tags every MLflow run of the project carries, built in one place for all entry points."""

from __future__ import annotations

from omegaconf import DictConfig

from src.cli import command_line_overrides
from src.config import PROJECT_ROOT
from src.tracking.runs import cluster_tags, git_state, library_versions


def run_tags(entry: str, cfg: DictConfig, **extra: str) -> dict[str, str]:
    """What made a run: the entry point, the command-line overrides, the run folder, the code
    (git commit, library versions) and the SLURM job; `extra` adds the entry's own tags."""
    return {
        "overrides": " ".join(command_line_overrides()) or "(none)",
        "run_dir": str(cfg.paths.run_dir),
        "mlflow.source.name": entry,
        **extra,
        **cluster_tags(),
        **git_state(PROJECT_ROOT),
        **library_versions(),
    }


def run_name(cfg: DictConfig, prefix: str, fallback: str) -> str:
    """`run_name=` when given, else `prefix` and the command-line overrides (or `fallback` without any)."""
    described = ",".join(command_line_overrides()) or fallback
    return cfg.get("run_name") or " ".join(part for part in (prefix, described) if part)
