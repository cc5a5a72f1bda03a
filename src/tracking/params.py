"""Which parts of a run's config MLflow shows as params: what a person compares across runs.

Hyper-parameters and each config group's choice are params, so the compare view and its
parallel-coordinates plot start from them. Provenance (paths, URLs, checksums, file sizes, the
Hydra and logger settings) stays in the config artifact (`config/config_resolved.yaml`), where it is
complete, instead of crowding the params.
"""

from __future__ import annotations

from typing import Any

from hydra.core.hydra_config import HydraConfig

from src.tracking.runs import flatten

PROVENANCE_GROUPS = ("paths", "hydra", "logger")  # where a run's files go, not how it learns
PROVENANCE_SUFFIXES = ("_url", "_sha256", "_bytes", "_dir", "root", "_target_", "_partial_")


def command_choices() -> dict[str, str]:
    """The running command's choice of each config group (`model` -> `small`); empty outside Hydra. A group
    chosen into another place (`optimizer@discriminator.optimizer`) is named by that place (MLflow refuses '@')."""
    if not HydraConfig.initialized():
        return {}
    choices = HydraConfig.get().runtime.choices
    return {f"choice.{group.rpartition('@')[2]}": str(value) for group, value in choices.items()
            if not group.startswith("hydra/")}  # fmt: skip


def comparable_params(config: dict[str, Any], choices: dict[str, str]) -> dict[str, str]:
    """The flattened config without provenance, and the group choices."""
    params = {
        key: value
        for key, value in flatten(config).items()
        if key.split(".", 1)[0] not in PROVENANCE_GROUPS and not key.endswith(PROVENANCE_SUFFIXES)
    }
    return {**choices, **params}
