"""submitit's launchers, each ending the sweep's MLflow parent run when its launch fails; the SLURM
one also refuses, before submitting, a request no node of the partition can run.

Hydra imports this module whenever it scans for plugins (every command), so the project's own
modules, which pull in MLflow, are imported only when a sweep is launched.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Sequence

from hydra.core.utils import JobReturn, JobStatus
from hydra_plugins.hydra_submitit_launcher.submitit_launcher import LocalLauncher, SlurmLauncher

from hydra_plugins.samtune_launcher.nodes import check_request, partition_nodes

log = logging.getLogger(__name__)


def summary(err: BaseException) -> str:
    """An error in one line; a job's error arrives with its traceback: its first and last lines."""
    lines = [line.strip() for line in str(err).splitlines() if line.strip()] or [""]
    text = lines[0] if len(lines) == 1 else f"{lines[0]} ... {lines[-1]}"
    return f"{type(err).__name__}: {text}"[:5000]


class EndsTheSweepRun:
    """`launch` that ends the sweep's parent run FAILED (KILLED on Ctrl-C) with the reason, instead of
    leaving it RUNNING, when the launch raises or a job fails; `check` runs before anything is submitted."""

    def check(self) -> None:
        """Refuse (SamtuneError) a launch that cannot work; nothing to check by default."""

    def launch(self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int) -> Sequence[JobReturn]:
        from src.errors import SamtuneError
        from src.tracking.sweeps import end_sweep_run

        try:
            self.check()
            returns = super().launch(job_overrides, initial_job_idx)  # type: ignore[misc]
        except KeyboardInterrupt:
            end_sweep_run(self.config, "KILLED", "interrupted while launching or waiting for the jobs")
            raise
        except SamtuneError as err:  # the request cannot run: one line, nothing submitted
            end_sweep_run(self.config, "FAILED", str(err))
            log.error("%s: %s", type(err).__name__, err)
            sys.exit(1)
        except Exception as err:
            end_sweep_run(self.config, "FAILED", summary(err))
            raise
        failed = [(n, r._return_value) for n, r in enumerate(returns, initial_job_idx) if r.status == JobStatus.FAILED]
        if failed:  # Hydra's sweeper raises the first job's error next, before any end-of-sweep callback
            number, error = failed[0]
            end_sweep_run(self.config, "FAILED", f"{len(failed)} of {len(returns)} jobs failed; job {number}: "
                          + summary(error))  # fmt: skip
        return returns


class CheckedLocalLauncher(EndsTheSweepRun, LocalLauncher):
    """submitit's local launcher (`launcher=local`)."""


class CheckedSlurmLauncher(EndsTheSweepRun, SlurmLauncher):
    """submitit's SLURM launcher (`launcher=slurm`), checked against `sinfo` first."""

    def check(self) -> None:
        nodes = partition_nodes(self.params.get("partition"))
        if nodes is not None:
            check_request(self.params, nodes)
