"""MLflow tracking: one run per training run, metrics sent in batches, resumable by run id.

The default store is a SQLite file under `outputs/` (no server needed); a `http://host:port`
tracking URI sends everything to a tracking server instead.
"""

from __future__ import annotations

import atexit
import json
import logging
import os
import platform
import queue
import subprocess
import threading
import time
import urllib.error
import urllib.request
from collections import defaultdict
from importlib import metadata
from pathlib import Path
from typing import Any

import mlflow
from mlflow.entities import Dataset, DatasetInput, InputTag, Metric, Param, RunTag
from mlflow.exceptions import MlflowException
from mlflow.models import Model
from mlflow.system_metrics.system_metrics_monitor import SystemMetricsMonitor
from mlflow.tracking import MlflowClient
from torch import nn

from src.errors import TrackingError, first_line
from src.tracking import registered_model
from src.utils.atomic import file_lock
from src.utils.folders import folder_digest

log = logging.getLogger(__name__)

EXPERIMENT_KIND, MODEL_TRAINING = "mlflow.experimentKind", "custom_model_development"  # MLflow 3's UI mode
MAX_PARAM_LENGTH = 6000  # MLflow's limit on a param value
MAX_BATCH = 100  # params or tags per log_batch call
STORE_CHECK_TIMEOUT_S = 5
SQLITE = "sqlite:///"
PROCESS_HOST, PROCESS_PID = "process.host", "process.pid"  # who holds a run open, to see it was killed hard
KILLED_TAG = "killed_hard"
VERSIONED = ("torch", "torchvision", "sam2", "hydra-core", "omegaconf", "mlflow", "numpy", "schedulefree")
SLURM_TAGS = {
    "SLURM_JOB_ID": "slurm.job_id",
    "SLURM_ARRAY_JOB_ID": "slurm.array_job_id",
    "SLURM_ARRAY_TASK_ID": "slurm.array_task_id",
    "SLURM_RESTART_COUNT": "slurm.restart_count",  # how often the job was requeued
    "SLURM_JOB_NODELIST": "slurm.nodes",
    "SLURM_JOB_PARTITION": "slurm.partition",
}


def flatten(tree: Any, prefix: str = "") -> dict[str, str]:
    """Nested config -> {"a.b.c": "value"}; lists are written as JSON."""
    if isinstance(tree, dict):
        out: dict[str, str] = {}
        for key, value in tree.items():
            out.update(flatten(value, f"{prefix}{key}."))
        return out
    value = json.dumps(tree) if isinstance(tree, list | tuple) else str(tree)
    return {prefix[:-1]: value[:MAX_PARAM_LENGTH]}


def git_state(root: str | Path) -> dict[str, str]:
    """Commit and dirty flag of the repository at `root` (or 'unknown' outside git)."""

    def git(*args: str) -> str:
        return subprocess.run(["git", *args], cwd=root, capture_output=True, text=True, check=True, timeout=10).stdout

    try:
        commit = git("rev-parse", "HEAD").strip()
        dirty = bool(git("status", "--porcelain", "--untracked-files=no").strip())
    except (OSError, subprocess.SubprocessError):
        return {"git.commit": "unknown", "git.dirty": "unknown"}
    return {"git.commit": commit, "git.dirty": str(dirty).lower(), "mlflow.source.git.commit": commit}


def cluster_tags() -> dict[str, str]:
    """The SLURM job a run belongs to (empty outside SLURM), to find its logs and accounting."""
    return {tag: os.environ[var] for var, tag in SLURM_TAGS.items() if var in os.environ}


def library_versions() -> dict[str, str]:
    versions = {"version.python": platform.python_version()}
    for name in VERSIONED:
        try:
            versions[f"version.{name}"] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return versions


class MlflowTracker:
    """A thin, explicit MLflow client wrapper (no global `mlflow.start_run` state).

    Metrics and artifacts go through a background sender, so training never waits on the store: when
    the store cannot be reached the sender says so once, keeps what it could not send (up to
    `queue_size` items, the rest in `unsent_file`) and retries every `retry_every_s` seconds. What is
    still unsent when the run ends is left in `unsent_file`, with the command that uploads it.
    """

    def __init__(
        self,
        tracking_uri: str,
        experiment_name: str,
        artifact_location: str | None,
        flush_every: int,
        queue_size: int,
        retry_every_s: float,
        drain_timeout_s: float,
        system_metrics: bool,
        log_checkpoint: bool,
        register_as: str | None,
    ):
        self.tracking_uri = tracking_uri
        check_store(tracking_uri)
        if tracking_uri.startswith(("http://", "https://")):
            # the sender retries on its own; MLflow's retries (minutes) would only delay saying so
            os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
            os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "30")
        self.client = open_client(tracking_uri)
        self.experiment_name = experiment_name
        self.artifact_location = artifact_location
        self.flush_every = flush_every
        self.drain_timeout_s = drain_timeout_s
        self.system_metrics = system_metrics
        self.log_checkpoint = log_checkpoint  # whether best.pt is uploaded, read by the trainer
        self.register_as = register_as  # a Model Registry name for the best model, or None
        self._monitor: SystemMetricsMonitor | None = None
        self.run_id: str | None = None
        self.unsent_file = Path("mlflow_unsent.jsonl")  # the trainer puts it in the run folder
        self._pending: list[Metric] = []
        self._logged_up_to: dict[str, int] = {}  # resumed run: the last step the store holds per key
        self._history: dict[str, list[tuple[int, float]]] = defaultdict(list)
        self._sender = Sender(self.client, tracking_uri, queue_size, retry_every_s, self._spill)

    def _experiment_id(self) -> str:
        experiment = self.client.get_experiment_by_name(self.experiment_name)
        if experiment is not None:
            if EXPERIMENT_KIND not in experiment.tags:  # made by an older version, or by hand
                self.client.set_experiment_tag(experiment.experiment_id, EXPERIMENT_KIND, MODEL_TRAINING)
            return experiment.experiment_id
        # a server chooses its own artifact root; a local store keeps artifacts beside the database
        location = None
        if self.artifact_location and not self.tracking_uri.startswith(("http://", "https://")):
            location = Path(self.artifact_location).resolve().as_uri()
        return self.client.create_experiment(
            self.experiment_name, artifact_location=location, tags={EXPERIMENT_KIND: MODEL_TRAINING}
        )

    def start(self, run_name: str, tags: dict[str, str], run_id: str | None = None) -> str:
        """Open a new run, or reopen `run_id` (a resumed training run continues its MLflow run)."""
        process = {PROCESS_HOST: platform.node(), PROCESS_PID: str(os.getpid())}
        if run_id is not None:
            run = self.client.get_run(run_id)  # fails loudly if the store no longer has it
            # a sweep's parent run, reopened at its end by the process that opened it, was not killed
            ours = all(run.data.tags.get(key) == value for key, value in process.items())
            if not ours and (run.info.status == "RUNNING" or run.data.tags.get(KILLED_TAG)):
                note = run.data.tags.get(KILLED_TAG) or "its process ended without closing the run (killed hard)"
                self.client.set_tag(run_id, KILLED_TAG, note)
                log.warning("MLflow run %s was not closed by its last process (killed hard); resuming it", run_id)
            self._logged_up_to = {
                key: max(m.step for m in self.client.get_metric_history(run_id, key)) for key in run.data.metrics
            }
            self.client.update_run(run_id, status="RUNNING")
            self.run_id = run_id
            log.info("continuing MLflow run %s (%s)", run_id, self.tracking_uri)
        else:
            experiment_id = self._experiment_id()
            self._mark_killed_runs(experiment_id)
            run = self.client.create_run(experiment_id, run_name=run_name, tags=tags)
            self.run_id = run.info.run_id
            log.info(
                "MLflow run %s '%s' in experiment '%s' (%s)",
                self.run_id,
                run_name,
                self.experiment_name,
                self.tracking_uri,
            )
        self.set_tags(process)
        if self.system_metrics:
            self._monitor = SystemMetricsMonitor(self.run_id, resume_logging=run_id is not None,
                                                 tracking_uri=self.tracking_uri)  # fmt: skip
            self._monitor.start()
        return self.run_id

    def log_dataset(self, name: str, root: Path, sizes: dict[str, int]) -> None:
        """The dataset as an MLflow input (the runs table's Dataset column): name, digest, split sizes."""
        dataset = Dataset(
            name=name,
            digest=folder_digest(root),
            source_type="local",
            source=json.dumps({"uri": root.resolve().as_uri()}),
            profile=json.dumps(sizes),
        )
        inputs = [DatasetInput(dataset, [InputTag("mlflow.data.context", "training")])]
        for attempt in range(3):
            try:
                self.client.log_inputs(self.run_id, inputs)
                return
            except MlflowException as err:
                # jobs of a sweep starting together race to add the same dataset row to a SQLite store;
                # the loser finds it there on the next try
                if "UNIQUE constraint failed: datasets" not in str(err) or attempt == 2:
                    raise

    def register_model(self, module: nn.Module, checkpoint: Path) -> str:
        """`module` and its `checkpoint` (best.pt) as an MLflow model of this run, registered as
        `register_as` (the Models page lists it): `mlflow.pytorch.load_model("models:/NAME/VERSION")`
        returns the module (pickled: load it from a registry you trust), and for segmentation
        `mlflow.pyfunc.load_model(...).predict(frame)` returns masks from the checkpoint's tensors
        (src.tracking.registered_model). Returns the new version."""
        mlflow.set_tracking_uri(self.tracking_uri)
        with mlflow.start_run(run_id=self.run_id):
            info = Model.log(
                artifact_path=None,
                name="model",
                flavor=registered_model,
                registered_model_name=self.register_as,
                module=module,
                checkpoint=str(checkpoint),
            )
        version = str(info.registered_model_version)
        log.info("registered the best model as %s version %s (%s)", self.register_as, version, info.model_uri)
        return version

    def _mark_killed_runs(self, experiment_id: str) -> None:
        """Runs of this machine still RUNNING although their process is gone were killed hard: say so."""
        host = platform.node().replace("'", "")
        query = f"attributes.status = 'RUNNING' and tags.`{PROCESS_HOST}` = '{host}'"
        for run in self.client.search_runs([experiment_id], filter_string=query, max_results=1000):
            pid = run.data.tags.get(PROCESS_PID, "")
            if not pid.isdigit() or process_alive(int(pid)):
                continue
            note = f"process {pid} on {host} ended without closing the run (killed hard)"
            self.client.set_tag(run.info.run_id, KILLED_TAG, note)
            self.client.set_terminated(run.info.run_id, status="KILLED")
            log.warning("MLflow run %s: %s; marked KILLED", run.info.run_id, note)

    def log_params(self, params: dict[str, str]) -> None:
        items = [Param(k, v) for k, v in params.items()]
        for i in range(0, len(items), MAX_BATCH):
            self.client.log_batch(self.run_id, params=items[i : i + MAX_BATCH])

    def set_tags(self, tags: dict[str, str]) -> None:
        items = [RunTag(k, str(v)) for k, v in tags.items()]
        for i in range(0, len(items), MAX_BATCH):
            self.client.log_batch(self.run_id, tags=items[i : i + MAX_BATCH])

    def log_metrics(self, metrics: dict[str, float], step: int) -> None:
        """Queue metrics; they are sent in one call every `flush_every` values and on `flush()`.

        A resumed run replays the steps after its checkpoint: values the store already holds are not sent twice.
        """
        now = int(time.time() * 1000)
        for key, value in metrics.items():
            self._history[key].append((step, float(value)))
            if step > self._logged_up_to.get(key, -1):
                self._pending.append(Metric(key, float(value), now, step))
        if len(self._pending) >= self.flush_every:
            self.flush()

    def flush(self) -> None:
        """Hand the queued metrics to the sender (it does not wait for them to arrive)."""
        while self._pending:
            batch, self._pending = self._pending[:1000], self._pending[1000:]
            self._sender.put(("metrics", self.run_id, batch))

    def sync(self) -> bool:
        """Flush and wait (at most `drain_timeout_s`, not at all during an outage) until the store has it all."""
        self.flush()
        return self._sender.wait(self.drain_timeout_s)

    def log_artifact(self, path: str | Path, artifact_path: str | None = None) -> None:
        self._sender.put(("artifact", self.run_id, (str(path), artifact_path)))

    def metric_history(self, key: str) -> list[tuple[int, float]]:
        """The store's history of `key`; this process's values alone while the store cannot be reached."""
        if self.sync():
            try:
                return [(m.step, m.value) for m in self.client.get_metric_history(self.run_id, key)]
            except Exception as err:  # any failure of the store: fall back to what was logged here
                log.warning("MLflow history of %s unavailable (%s)", key, first_line(err))
        return list(self._history[key])

    def finish(self, status: str = "FINISHED") -> None:
        if self.run_id is None:
            return
        if self._monitor is not None:
            self._monitor.finish()
            self._monitor = None
        self.flush()
        self._sender.put(("status", self.run_id, status))
        if not self._sender.wait(self.drain_timeout_s, even_in_outage=True):
            self._sender.stop_and_spill()

    def _spill(self, items: list[tuple[str, str, Any]]) -> None:
        """Append what cannot be sent to `unsent_file` (JSON lines) and say how to upload it."""
        self.unsent_file.parent.mkdir(parents=True, exist_ok=True)
        with open(self.unsent_file, "a") as handle:
            for kind, run_id, payload in items:
                if kind == "metrics":
                    payload = [[m.key, m.value, m.timestamp, m.step] for m in payload]
                handle.write(json.dumps({"kind": kind, "run_id": run_id, "payload": payload}) + "\n")
        log.warning(
            "MLflow at %s did not take %d items; they are kept in %s: upload them when it is back with "
            "python -m src.tracking.unsent %s %s",
            self.tracking_uri,
            len(items),
            self.unsent_file,
            self.unsent_file,
            self.tracking_uri,
        )


def send(client: MlflowClient, item: tuple[str, str, Any]) -> None:
    """Send one queued item (metrics, an artifact or the final status) to the store."""
    kind, run_id, payload = item
    if kind == "metrics":
        client.log_batch(run_id, metrics=payload)
    elif kind == "artifact":
        client.log_artifact(run_id, payload[0], payload[1])
    else:
        client.set_terminated(run_id, status=payload)


class Sender:
    """A background thread that sends queued items in order, retrying through an outage.

    The queue is bounded: what does not fit is spilled to a file at once, so memory stays bounded
    and nothing is dropped.
    """

    def __init__(
        self,
        client: MlflowClient,
        tracking_uri: str,
        queue_size: int,
        retry_every_s: float,
        spill: Any,
    ):
        self.client, self.tracking_uri = client, tracking_uri
        self.queue: queue.Queue = queue.Queue(maxsize=queue_size)
        self.retry_every_s = retry_every_s
        self.spill = spill
        self.outage = False
        self._stopped = threading.Event()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self._current: tuple[str, str, Any] | None = None  # the item being sent

    def put(self, item: tuple[str, str, Any]) -> None:
        if self._stopped.is_set():
            self.spill([item])
            return
        with self._lock:
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="mlflow-sender", daemon=True)
                self._thread.start()
                atexit.register(self._at_exit)
        try:
            self.queue.put_nowait(item)
        except queue.Full:
            self.spill([item])

    def wait(self, timeout_s: float, even_in_outage: bool = False) -> bool:
        """Wait until everything queued was sent; False if it was not within `timeout_s` (or in an outage)."""
        deadline = time.monotonic() + timeout_s
        while self.queue.unfinished_tasks:
            if (self.outage and not even_in_outage) or time.monotonic() > deadline:
                return False
            time.sleep(0.05)
        return True

    def _at_exit(self) -> None:
        """A user of the tracker that never called `finish`: what is queued is sent or kept, not dropped."""
        if not self._stopped.is_set() and not self.wait(self.retry_every_s, even_in_outage=True):
            self.stop_and_spill()

    def stop_and_spill(self) -> None:
        """Give up on the store: everything still queued (and the item in flight) goes to the spill file."""
        self._stopped.set()
        left = [self._current] if self._current is not None else []
        while True:
            try:
                left.append(self.queue.get_nowait())
            except queue.Empty:
                break
        if left:
            self.spill(left)

    def _run(self) -> None:
        while not self._stopped.is_set():
            try:
                item = self.queue.get(timeout=0.5)
            except queue.Empty:
                continue
            self._current = item
            try:
                self._send_until_it_arrives(item)
            finally:
                self._current = None
                self.queue.task_done()

    def _send_until_it_arrives(self, item: tuple[str, str, Any]) -> None:
        while not self._stopped.is_set():
            try:
                send(self.client, item)
            except Exception as err:  # any failure of the store: keep the item, retry later
                if not self.outage:
                    log.warning(
                        "MLflow at %s cannot be reached (%s): training goes on; metrics and artifacts are kept "
                        "(up to %d items, the rest on disk) and sent when it is back",
                        self.tracking_uri,
                        first_line(err),
                        self.queue.maxsize,
                    )
                self.outage = True
                self._stopped.wait(self.retry_every_s)
                continue
            if self.outage:
                log.warning("MLflow at %s is back: sending the kept metrics and artifacts", self.tracking_uri)
                self.outage = False
            return


def process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process
        return True
    return True


def open_client(tracking_uri: str) -> MlflowClient:
    """A client on `tracking_uri`; a SQLite store is created (or migrated) by one process at a time.

    Two processes creating the same new store at once (a parallel sweep's first jobs) would both run
    its schema migrations, which fails and can leave the database broken for good.
    """
    if not tracking_uri.startswith(SQLITE):
        return MlflowClient(tracking_uri=tracking_uri)
    database = Path(tracking_uri[len(SQLITE) :])
    with file_lock(database.with_name(database.name + ".lock")):
        client = MlflowClient(tracking_uri=tracking_uri)
        client.search_experiments(max_results=1)  # opens the store: creates and migrates it
    return client


def check_store(tracking_uri: str) -> None:
    """Fail in seconds, in one line, when the tracking server does not answer (before anything is built)."""
    if not tracking_uri.startswith(("http://", "https://")):
        return
    url = tracking_uri.rstrip("/") + "/health"
    try:
        with urllib.request.urlopen(url, timeout=STORE_CHECK_TIMEOUT_S) as response:
            response.read(100)
    except urllib.error.HTTPError:
        return  # it answers (a proxy or an older server without /health): MLflow's own calls say more
    except (OSError, ValueError) as err:
        reason = getattr(err, "reason", err)
        raise TrackingError(
            f"logger.tracking_uri={tracking_uri} cannot be reached ({reason}); start the tracking server "
            "(e.g. mlflow server --host 127.0.0.1 --port PORT), fix the address, or log to a local store with "
            "logger.tracking_uri=sqlite:///outputs/mlflow.db"
        ) from err
