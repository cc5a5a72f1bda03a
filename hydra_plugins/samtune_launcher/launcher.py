"""`CheckedSlurmLauncher`: submitit's SLURM launcher that refuses, before submitting, a request no
node of the partition can run, and that ends the sweep's MLflow parent run when the launch fails.

Hydra imports this module whenever it scans for plugins (every command), so the project's own
modules, which pull in MLflow, are imported only when a launch fails.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Sequence

from hydra.core.utils import JobReturn
from hydra_plugins.hydra_submitit_launcher.submitit_launcher import SlurmLauncher

from hydra_plugins.samtune_launcher.nodes import check_request, partition_nodes

log = logging.getLogger(__name__)


class CheckedSlurmLauncher(SlurmLauncher):
    """submitit's SLURM launcher, checked against `sinfo` first; a failed launch fails the sweep's run."""

    def launch(self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int) -> Sequence[JobReturn]:
        from src.errors import SamtuneError, first_line
        from src.tracking.sweeps import end_sweep_run

        assert self.config is not None
        try:
            nodes = partition_nodes(self.params.get("partition"))
            if nodes is not None:
                check_request(self.params, nodes)
            return super().launch(job_overrides, initial_job_idx)
        except KeyboardInterrupt:
            end_sweep_run(self.config, "KILLED", "interrupted while launching or waiting for the jobs")
            raise
        except SamtuneError as err:  # the request cannot run: one line, nothing submitted
            end_sweep_run(self.config, "FAILED", str(err))
            log.error("%s: %s", type(err).__name__, err)
            sys.exit(1)
        except Exception as err:
            end_sweep_run(self.config, "FAILED", f"{type(err).__name__}: {first_line(err)}")
            raise
