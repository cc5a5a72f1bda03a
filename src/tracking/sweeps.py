"""Sweeps in MLflow: a parent run per multirun, a child run per job, a summary of all jobs at the end.

`MlflowSweepCallback` (a Hydra callback, `hydra.callbacks.mlflow_sweep` in conf/hydra/default.yaml)
runs where the sweep is launched, which with `launcher=slurm` is not where the jobs run. At the
start it opens the parent run and writes `mlflow_sweep.json` into the sweep folder; each job,
wherever it runs (the same process, a local subprocess, a SLURM node sharing the folder), reads
it in `sweep_job()` to tag its run as a child and to name it after what it changes. At the end it
gathers every child's best validation value and curve from MLflow into a table and a plot on the
parent run. A sweep started again in the same folder (`hydra.sweep.dir=...`, after an
interruption) continues its parent run, as its jobs continue theirs from their checkpoints.
"""

from __future__ import annotations

import json
import logging
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hydra.core.hydra_config import HydraConfig
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.experimental.callback import Callback
from hydra.types import RunMode
from hydra.utils import instantiate
from mlflow.entities import Run
from omegaconf import DictConfig, OmegaConf

from src.config import PROJECT_ROOT
from src.errors import ConfigError
from src.tracking.runs import MlflowTracker, git_state
from src.utils.atomic import write_text_atomic
from src.utils.pictures import plot_curves, save_png

log = logging.getLogger(__name__)

SWEEP_FILE = "mlflow_sweep.json"
PARENT_TAG = "mlflow.parentRunId"  # what the MLflow UI nests child runs under


def _split(overrides: list[str]) -> list[tuple[str, str, bool]]:
    """(key, value as written, whether it is a sweep) for each command-line override."""
    parsed = OverridesParser.create().parse_overrides(overrides)
    return [(o.key_or_group, o.input_line.split("=", 1)[-1], o.is_sweep_override()) for o in parsed]


def check_direction(config: DictConfig) -> None:
    """An optimizing sweeper (Optuna) must seek the same direction as the metric the jobs return."""
    direction = OmegaConf.select(config, "hydra.sweeper.direction")
    if direction is None:
        return
    mode = config.trainer.early_stopping.mode
    expected = {"max": "maximize", "min": "minimize"}[mode]
    if getattr(direction, "name", str(direction)) != expected:
        raise ConfigError(
            f"hydra.sweeper.direction={direction} but the jobs return {config.trainer.early_stopping.monitor}, "
            f"which is better when {'higher' if mode == 'max' else 'lower'} (task.monitor_mode={mode}); "
            f"set hydra.sweeper.direction={expected}"
        )


def search_space(config: DictConfig) -> dict[str, str]:
    """What a sweep varies: sweep overrides (`model=tiny,small`) and the sweeper's `params`."""
    params = OmegaConf.select(config, "hydra.sweeper.params") or {}
    space = {str(key): str(value) for key, value in params.items()}
    space.update({key: value for key, value, sweep in _split(list(config.hydra.overrides.task)) if sweep})
    return space


@dataclass
class SweepJob:
    """One job of a tracked sweep: its parent run and what it sets of what the sweep varies."""

    parent_run_id: str
    job_num: int
    values: dict[str, str]  # swept key -> this job's value

    @property
    def run_name(self) -> str:
        return ",".join(f"{key}={value}" for key, value in self.values.items())

    @property
    def tags(self) -> dict[str, str]:
        return {
            PARENT_TAG: self.parent_run_id,
            "sweep.job": str(self.job_num),
            "sweep.values": json.dumps(self.values),
            "sweep.varied": ",".join(self.values),  # the params to compare the sweep's runs by
        }


def sweep_job() -> SweepJob | None:
    """This job's place in a sweep the callback tracks; None outside one."""
    if not HydraConfig.initialized():
        return None
    hydra_cfg = HydraConfig.get()
    record_file = Path(hydra_cfg.sweep.dir) / SWEEP_FILE
    if hydra_cfg.mode != RunMode.MULTIRUN or not record_file.is_file():
        return None
    record = json.loads(record_file.read_text())
    mine = {key: value for key, value, _ in _split(list(hydra_cfg.overrides.task))}
    values = {key: mine[key] for key in record["swept"] if key in mine}
    return SweepJob(record["parent_run_id"], int(hydra_cfg.job.num), values)


class MlflowSweepCallback(Callback):
    """Parent run at the start of a multirun, summary table and curves on it at the end."""

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        check_direction(config)
        space = search_space(config)
        sweep_dir = Path(str(config.hydra.sweep.dir))
        tracker: MlflowTracker = instantiate(config.logger)
        tags = {
            "sweep.dir": str(sweep_dir),
            "sweep.overrides": " ".join(config.hydra.overrides.task) or "(none)",
            "sweep.sweeper": str(config.hydra.sweeper._target_).rsplit(".", 1)[-1],
            "sweep.launcher": str(config.hydra.launcher._target_).rsplit(".", 1)[-1],
            "sweep.varied": ",".join(space),
            **git_state(PROJECT_ROOT),
            "mlflow.source.name": "src.train -m",
        }
        record_file = sweep_dir / SWEEP_FILE
        if record_file.is_file():  # the sweep runs again in its folder: its jobs resume, it continues its run
            tracker.start("", tags, run_id=json.loads(record_file.read_text())["parent_run_id"])
        else:
            tracker.start(" ".join(["sweep", *(f"{key}={value}" for key, value in space.items())]), tags)
            tracker.log_params({f"sweep.{key}": value for key, value in space.items()})
        record = {"parent_run_id": tracker.run_id, "swept": list(space)}
        write_text_atomic(json.dumps(record, indent=1), record_file)

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        sweep_dir = Path(str(config.hydra.sweep.dir))
        parent = parent_run(config)
        if parent is None:
            return
        tracker, record = parent
        monitor, mode = config.trainer.early_stopping.monitor, config.trainer.early_stopping.mode
        children = child_runs(tracker, record["parent_run_id"])
        summary = SweepSummary(children, record["swept"], monitor, mode)
        table = summary.table()
        log.info("sweep summary (%s, %s is best):\n%s", sweep_dir, mode, table)
        tracker.log_artifact(write_text_atomic(table + "\n", sweep_dir / "summary.md"), "summary")
        curves = plot_curves({monitor: {summary.label(run): history(tracker, run, monitor) for run in children}})
        if curves is not None:
            name = f"{monitor.replace('/', '_')}_curves.png"
            tracker.log_artifact(save_png(curves, sweep_dir / name), "summary")
        best = summary.best()
        if best is not None:
            tracker.set_tags({"best.run_id": best.info.run_id, "best.run_name": best.info.run_name})
            tracker.log_metrics({f"best/{monitor}": summary.value(best)}, step=0)
        tracker.finish("FINISHED")


def parent_run(config: DictConfig) -> tuple[MlflowTracker, dict[str, Any]] | None:
    """The sweep's parent run reopened, and its record (`mlflow_sweep.json`); None when it has none."""
    record_file = Path(str(config.hydra.sweep.dir)) / SWEEP_FILE
    if not record_file.is_file():
        return None
    record = json.loads(record_file.read_text())
    tracker: MlflowTracker = instantiate(config.logger)
    tracker.start("", {}, run_id=record["parent_run_id"])
    return tracker, record


def end_sweep_run(config: DictConfig, status: str, reason: str) -> None:
    """A launch that failed (a refused request, a failed submission or job): the sweep's parent run
    ends with `status` and the reason in its `sweep.failure` tag, instead of staying RUNNING."""
    parent = parent_run(config)
    if parent is None:
        return
    tracker, _ = parent
    tracker.set_tags({"sweep.failure": reason[:5000]})
    tracker.finish(status)
    log.error("the sweep's launch failed; its MLflow run %s is marked %s", tracker.run_id, status)


def child_runs(tracker: MlflowTracker, parent_run_id: str) -> list[Run]:
    """The sweep's jobs in job order, from every experiment (a sweep over datasets spans several)."""
    experiments = [e.experiment_id for e in tracker.client.search_experiments()]
    runs = tracker.client.search_runs(experiments, filter_string=f"tags.`{PARENT_TAG}` = '{parent_run_id}'")
    return sorted(runs, key=lambda run: int(run.data.tags.get("sweep.job", 0)))


def history(tracker: MlflowTracker, run: Run, key: str) -> list[tuple[int, float]]:
    return [(m.step, m.value) for m in tracker.client.get_metric_history(run.info.run_id, key)]


class SweepSummary:
    """The table of a sweep: what each job varied, its best monitored value and step, the best job marked."""

    def __init__(self, runs: list[Run], swept: list[str], monitor: str, mode: str):
        self.runs, self.swept, self.monitor, self.mode = runs, swept, monitor, mode

    @staticmethod
    def values(run: Run) -> dict[str, str]:
        return json.loads(run.data.tags.get("sweep.values", "{}"))

    def label(self, run: Run) -> str:
        """`job: what it changes`, short enough for a legend."""
        return f"{run.data.tags.get('sweep.job', '?')}: " + ",".join(f"{k}={v}" for k, v in self.values(run).items())

    def value(self, run: Run) -> float | None:
        value = run.data.metrics.get(f"best/{self.monitor}")
        return None if value is None or math.isnan(value) else value

    def best(self) -> Run | None:
        scored = [run for run in self.runs if self.value(run) is not None]
        if not scored:
            return None
        pick = max if self.mode == "max" else min
        return pick(scored, key=self.value)

    def table(self) -> str:
        """A Markdown table, readable printed and in the MLflow UI's artifact view."""
        best = self.best()
        header = ["", "job", *self.swept, f"best {self.monitor}", "at step", "status", "run id"]
        rows = [header, ["---"] * len(header)]
        for run in self.runs:
            values = self.values(run)
            value, step = self.value(run), run.data.metrics.get("best/step")
            rows.append(
                [
                    "best" if best is not None and run.info.run_id == best.info.run_id else "",
                    run.data.tags.get("sweep.job", "?"),
                    *(values.get(key, "") for key in self.swept),
                    "-" if value is None else f"{value:.4f}",
                    "-" if step is None else str(int(step)),
                    run.info.status,
                    run.info.run_id,
                ]
            )
        return "\n".join("| " + " | ".join(row) + " |" for row in rows)
