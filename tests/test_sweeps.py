"""Sweeps: the lr x backbone preset as one MLflow parent run with a child per job, its summary, the
Optuna search, and the same runs read back through a real `mlflow server` over its REST API."""

from __future__ import annotations

import json
import multiprocessing
import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest
from hydra._internal.callbacks import Callbacks
from hydra._internal.config_loader_impl import ConfigLoaderImpl
from hydra._internal.utils import create_config_search_path
from hydra.core.plugins import Plugins
from hydra.core.utils import JobStatus
from hydra.types import HydraContext
from hydra_plugins.hydra_submitit_launcher.submitit_launcher import LocalLauncher, SlurmLauncher
from mlflow.tracking import MlflowClient
from omegaconf import OmegaConf
from PIL import Image

from hydra_plugins.samtune_launcher.nodes import Node, check_request, gpu_count
from src.cli import CONFIG_DIR, one_line_errors
from src.data import synthetic
from src.errors import ConfigError, DataError
from src.tracking.sweeps import PARENT_TAG, SWEEP_FILE, MlflowSweepCallback, check_direction
from tests.helpers import FAST_RUN, free_port, isolated_paths, run_module

# a job of a sweep: two optimizer steps on 4 images, then validation on 2
SWEEP_JOB = [*FAST_RUN, "dataset.generate.num_train=4", "dataset.generate.num_val=2", "trainer.max_steps=2"]
SWEEP_JOB += ["trainer.eval_at_start=false", "task.validation.num_sample_images=1"]


def output(result: subprocess.CompletedProcess) -> str:
    return result.stdout + result.stderr


def sweep(tmp: Path, *overrides: str) -> subprocess.CompletedProcess:
    args = ["-m", *SWEEP_JOB, *isolated_paths(tmp), f"hydra.sweep.dir={tmp / 'sweep'}", *overrides]
    result = run_module("src.train", args)
    assert result.returncode == 0, output(result)[-4000:]
    return result


def runs_of(client: MlflowClient, experiment: str = "synthetic"):
    runs = client.search_runs([client.get_experiment_by_name(experiment).experiment_id])
    parents = [run for run in runs if PARENT_TAG not in run.data.tags]
    children = sorted((run for run in runs if PARENT_TAG in run.data.tags), key=lambda r: int(r.data.tags["sweep.job"]))
    return parents, children


@pytest.fixture(scope="module")
def lr_backbone_sweep(tmp_path_factory):
    """The user's sweep preset as is: backbone tiny,small x lr 1e-5,1e-4 (4 jobs, Hydra's basic launcher)."""
    tmp = tmp_path_factory.mktemp("sweep")
    result = sweep(tmp, "experiment=lr_backbone_sweep")
    client = MlflowClient(f"sqlite:///{tmp / 'outputs' / 'mlflow.db'}")
    return tmp, result, client


def test_each_job_is_a_child_run_named_after_what_it_changes(lr_backbone_sweep):
    tmp, _, client = lr_backbone_sweep
    (parent,), children = runs_of(client)
    assert parent.info.status == "FINISHED"
    assert parent.data.params == {"sweep.model": "tiny,small", "sweep.optimizer.lr": "1e-5,1e-4"}
    assert (
        parent.data.tags["sweep.dir"] == str(tmp / "sweep")
        and "experiment=lr_backbone_sweep" in (parent.data.tags["sweep.overrides"])
    )
    assert [run.info.run_name for run in children] == [
        "model=tiny,optimizer.lr=1e-05",
        "model=tiny,optimizer.lr=0.0001",
        "model=small,optimizer.lr=1e-05",
        "model=small,optimizer.lr=0.0001",
    ]
    for run in children:
        assert run.data.tags[PARENT_TAG] == parent.info.run_id and run.info.status == "FINISHED"
        values = json.loads(run.data.tags["sweep.values"])
        assert run.data.params["model.name"] == run.data.params["choice.model"] == values["model"]
        assert run.data.tags["sweep.varied"] == parent.data.tags["sweep.varied"] == "model,optimizer.lr"
        assert float(run.data.params["optimizer.lr"]) == float(values["optimizer.lr"])
        assert [m.step for m in client.get_metric_history(run.info.run_id, "val/miou")] == [2]
        assert run.data.tags["run_dir"] == str(tmp / "sweep" / run.data.tags["sweep.job"])


def test_the_sweep_ends_with_a_summary_table_and_the_curves_of_all_jobs(lr_backbone_sweep, tmp_path):
    tmp, result, client = lr_backbone_sweep
    (parent,), children = runs_of(client)
    best_values = {run.info.run_id: run.data.metrics["best/val/miou"] for run in children}
    best_id = max(best_values, key=best_values.get)
    table = (tmp / "sweep" / "summary.md").read_text()
    assert table.strip() in output(result)  # printed at the end of the sweep
    rows = [line.split("|")[1:-1] for line in table.strip().splitlines()[2:]]
    assert [[cell.strip() for cell in row[2:4]] for row in rows] == [
        ["tiny", "1e-05"],
        ["tiny", "0.0001"],
        ["small", "1e-05"],
        ["small", "0.0001"],
    ]
    marked = [row for row in rows if row[0].strip() == "best"]
    assert len(marked) == 1 and marked[0][-1].strip() == best_id
    for row in rows:
        assert float(row[4]) == pytest.approx(best_values[row[-1].strip()], abs=5e-5)
    assert parent.data.tags["best.run_id"] == best_id
    assert parent.data.metrics["best/val/miou"] == pytest.approx(best_values[best_id])
    artifacts = {a.path for a in client.list_artifacts(parent.info.run_id, "summary")}
    assert artifacts == {"summary/summary.md", "summary/val_miou_curves.png"}
    plot = Path(client.download_artifacts(parent.info.run_id, "summary/val_miou_curves.png", str(tmp_path)))
    pixels = np.asarray(Image.open(plot).convert("RGB"))
    assert pixels.shape[0] > 200 and len(np.unique(pixels.reshape(-1, 3), axis=0)) > 20  # lines and a legend


def test_optuna_searches_lr_and_weight_decay_for_the_best_validation_miou(tmp_path):
    sweep(tmp_path, "hparams_search=lr_wd_optuna", "hydra.sweeper.n_trials=2")
    client = MlflowClient(f"sqlite:///{tmp_path / 'outputs' / 'mlflow.db'}")
    (parent,), trials = runs_of(client)
    assert parent.data.tags["sweep.sweeper"] == "OptunaSweeper" and len(trials) == 2
    for run in trials:
        assert 1e-6 <= float(run.data.params["optimizer.lr"]) <= 1e-3
        assert 1e-6 <= float(run.data.params["optimizer.weight_decay"]) <= 1e-2
        assert set(json.loads(run.data.tags["sweep.values"])) == {"optimizer.lr", "optimizer.weight_decay"}
    # Optuna maximised exactly what the jobs returned: their best val/miou
    results = OmegaConf.load(tmp_path / "sweep" / "optimization_results.yaml")
    best = max(trials, key=lambda run: run.data.metrics["best/val/miou"])
    assert results["best_value"] == pytest.approx(best.data.metrics["best/val/miou"])
    assert results["best_params"]["optimizer.lr"] == pytest.approx(float(best.data.params["optimizer.lr"]))
    assert parent.data.tags["best.run_id"] == best.info.run_id


def test_a_sweep_optimising_against_the_metric_is_refused(compose_cfg):
    cfg = compose_cfg(["hparams_search=lr_wd_optuna"], hydra_config=True)
    check_direction(cfg)
    wrong = compose_cfg(["hparams_search=lr_wd_optuna", "hydra.sweeper.direction=minimize"], hydra_config=True)
    with pytest.raises(ConfigError, match=r"set hydra\.sweeper\.direction=maximize"):
        check_direction(wrong)


def test_a_sweep_started_again_in_its_folder_continues_its_parent_run(compose_cfg, tmp_path):
    overrides = [*isolated_paths(tmp_path)[:3], f"hydra.sweep.dir={tmp_path / 'sweep'}", "experiment=lr_backbone_sweep"]
    config = compose_cfg(overrides, hydra_config=True)
    callback = MlflowSweepCallback()
    callback.on_multirun_start(config)
    first = json.loads((tmp_path / "sweep" / SWEEP_FILE).read_text())
    callback.on_multirun_start(config)  # e.g. after the launching process was killed
    assert json.loads((tmp_path / "sweep" / SWEEP_FILE).read_text()) == first
    assert first["swept"] == ["model", "optimizer.lr"]
    client = MlflowClient(f"sqlite:///{tmp_path / 'outputs' / 'mlflow.db'}")
    (parent,), _ = runs_of(client)
    assert parent.info.run_id == first["parent_run_id"] and parent.data.params["sweep.model"] == "tiny,small"


def test_parallel_jobs_generate_the_synthetic_dataset_once(tmp_path, monkeypatch):
    context = multiprocessing.get_context("fork")
    samples_drawn = context.Value("i", 0)
    draw = synthetic.make_sample

    def counted(*args, **kwargs):
        with samples_drawn.get_lock():
            samples_drawn.value += 1
        return draw(*args, **kwargs)

    monkeypatch.setattr(synthetic, "make_sample", counted)
    spec = {"num_train": 3, "num_val": 2, "image_size": 64}
    jobs = [context.Process(target=synthetic.ensure_synthetic_dataset, args=(tmp_path / "synthetic",), kwargs=spec)]
    jobs.append(context.Process(target=synthetic.ensure_synthetic_dataset, args=(tmp_path / "synthetic",), kwargs=spec))
    for job in jobs:
        job.start()
    for job in jobs:
        job.join(timeout=60)
    assert [job.exitcode for job in jobs] == [0, 0]
    assert samples_drawn.value == 5  # one job generated the 5 images, the other found them
    assert len(list((tmp_path / "synthetic" / "images").rglob("*.jpg"))) == 5


def is_subclass_by_name(cls: type, base: type) -> bool:
    """issubclass by qualified name: each Hydra plugin scan re-executes the plugin modules in place, so a
    class imported before a scan (another test's) is another object than the same class after it."""
    return any((k.__module__, k.__qualname__) == (base.__module__, base.__qualname__) for k in cls.__mro__)


def test_launcher_presets_wrap_submitit_with_every_cluster_setting_in_config(compose_cfg):
    slurm = compose_cfg(["launcher=slurm", "hydra.launcher.partition=gpu"], hydra_config=True).hydra.launcher
    assert slurm._target_ == "hydra_plugins.samtune_launcher.launcher.CheckedSlurmLauncher" and slurm.partition == "gpu"
    # Hydra instantiates only the launchers its plugin scan found: ours is one, and it is submitit's
    assert is_subclass_by_name(Plugins.instance().class_name_to_class[slurm._target_], SlurmLauncher)
    settings = {"account", "qos", "timeout_min", "nodes", "gpus_per_node", "tasks_per_node", "cpus_per_task", "mem_gb"}
    assert settings | {"array_parallelism", "setup", "max_num_timeout", "signal_delay_s"} <= set(slurm)
    local = compose_cfg(["launcher=local"], hydra_config=True).hydra.launcher
    assert local._target_ == "hydra_plugins.samtune_launcher.launcher.CheckedLocalLauncher"
    assert is_subclass_by_name(Plugins.instance().class_name_to_class[local._target_], LocalLauncher)
    assert compose_cfg([], hydra_config=True).hydra.launcher._target_.endswith("BasicLauncher")


def failing_job(cfg) -> None:
    raise DataError("a job's own error: data/x.png is unreadable")


def test_a_job_that_fails_ends_the_sweep_run_failed_with_the_reason(compose_cfg, tmp_path):
    """launcher=local: a real submitit job that raises; the sweep's parent run does not stay RUNNING.

    The job is guarded as every entry is: in a sweep its one-line error is raised, not an exit, so
    submitit gets the job's result (a job that exited would leave it waiting)."""
    sweep = [f"hydra.sweep.dir={tmp_path / 'sweep'}", "hydra.mode=MULTIRUN", "launcher=local"]
    overrides = [*isolated_paths(tmp_path)[:3], *sweep]
    config = compose_cfg(overrides, hydra_config=True)
    MlflowSweepCallback().on_multirun_start(config)  # the parent run, as `-m` opens it
    launcher = Plugins.instance().instantiate_launcher(
        hydra_context=HydraContext(ConfigLoaderImpl(create_config_search_path(CONFIG_DIR)), Callbacks()),
        task_function=one_line_errors(failing_job),
        config=config,
    )
    (job,) = launcher.launch([["optimizer.lr=0.1"]], initial_job_idx=0)
    assert job.status == JobStatus.FAILED  # Hydra's sweeper raises it next
    (parent,), _ = runs_of(MlflowClient(f"sqlite:///{tmp_path / 'outputs' / 'mlflow.db'}"))
    assert parent.info.status == "FAILED"
    reason = "1 of 1 jobs failed; job 0: DataError: a job's own error: data/x.png is unreadable"
    assert parent.data.tags["sweep.failure"] == reason
    assert "killed_hard" not in parent.data.tags  # reopened by the process that opened it


def test_a_request_is_checked_against_the_partition_nodes_naming_the_key_to_change():
    nodes = [Node("cpu1", 2, 1900, gpu_count("(null)")), Node("gpu1", 16, 64000, gpu_count("gpu:a100:4(S:0-1)"))]
    request = {"partition": None, "nodes": 1, "tasks_per_node": 1, "cpus_per_task": 8, "mem_gb": 64, "gpus_per_node": 1}
    check_request({**request, "mem_gb": 60}, nodes)  # fits gpu1
    with pytest.raises(ConfigError) as refused:
        check_request({**request, "cpus_per_task": 64}, nodes)
    message = str(refused.value)
    assert "\n" not in message and "its largest, gpu1, has 16 CPUs, 62.5 GB, 4 GPUs" in message
    assert "set hydra.launcher.cpus_per_task=16 (asked 64), hydra.launcher.mem_gb=62 (asked 64)" in message
    with pytest.raises(ConfigError, match=r"gpus_per_node=4 \(asked 8\)"):
        check_request({**request, "mem_gb": 1, "gpus_per_node": 8}, nodes)
    with pytest.raises(ConfigError, match=r"cpus_per_task=1 \(asked 4 x tasks_per_node=4\)"):
        check_request({**request, "mem_gb": 1, "tasks_per_node": 4, "cpus_per_task": 4, "gpus_per_node": 0}, nodes[:1])
    assert gpu_count("gpu:a100:2(S:0-1),gpu:v100:1,shard:8") == 3


# ---------------------------------------------------------------- a real MLflow server


@pytest.fixture(scope="module")
def mlflow_server(lr_backbone_sweep, tmp_path_factory):
    """`mlflow server` on 127.0.0.1 over the sweep's store, serving new experiments' artifacts itself."""
    tmp, _, _ = lr_backbone_sweep
    served = tmp_path_factory.mktemp("served")
    port = free_port()
    command = [sys.executable, "-m", "mlflow", "server", "--host", "127.0.0.1", "--port", str(port), "--workers", "1"]
    command += ["--backend-store-uri", f"sqlite:///{tmp / 'outputs' / 'mlflow.db'}"]
    command += ["--artifacts-destination", str(served / "artifacts")]
    log = open(served / "server.log", "w")  # noqa: SIM115 (open for the server's lifetime)
    server = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                with urllib.request.urlopen(f"{url}/health", timeout=2) as response:
                    if response.status == 200:
                        break
            except OSError:
                if server.poll() is not None or time.monotonic() > deadline:
                    pytest.fail(f"mlflow server did not start: {(served / 'server.log').read_text()[-3000:]}")
                time.sleep(0.3)
        yield url, served
    finally:
        os.killpg(server.pid, signal.SIGTERM)  # the server and its workers, nothing else
        try:
            server.wait(timeout=5)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)
            server.wait()
        log.close()


def rest(url: str, endpoint: str, body: dict | None = None) -> dict:
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(f"{url}/api/2.0/mlflow/{endpoint}", data=data)
    request.add_header("Content-Type", "application/json")
    with urllib.request.urlopen(request, timeout=30) as response:
        return json.loads(response.read())


def test_the_server_returns_the_sweeps_runs_with_params_and_metrics(mlflow_server, lr_backbone_sweep):
    url, _ = mlflow_server
    _, _, client = lr_backbone_sweep
    (parent,), _ = runs_of(client)
    experiment = rest(url, "experiments/get-by-name?experiment_name=synthetic")["experiment"]
    found = rest(
        url,
        "runs/search",
        {"experiment_ids": [experiment["experiment_id"]], "filter": f"tags.`{PARENT_TAG}` = '{parent.info.run_id}'"},
    )["runs"]
    assert sorted(run["info"]["run_name"] for run in found) == sorted(
        f"model={m},optimizer.lr={lr}" for m in ("tiny", "small") for lr in ("1e-05", "0.0001")
    )
    for run in found:
        params = {p["key"]: p["value"] for p in run["data"]["params"]}
        metrics = {m["key"]: m["value"] for m in run["data"]["metrics"]}
        assert params["model.name"] in run["info"]["run_name"] and "optimizer.lr" in params
        assert {"val/miou", "val/dice", "train/loss", "best/val/miou"} <= set(metrics)
        history = rest(url, f"metrics/get-history?run_id={run['info']['run_id']}&metric_key=val/miou")["metrics"]
        assert [m["step"] for m in history] == [2]


def test_training_against_the_server_logs_metrics_and_artifacts_through_it(mlflow_server, tmp_path):
    url, served = mlflow_server
    result = run_module(
        "src.train",
        [*SWEEP_JOB, *isolated_paths(tmp_path), f"logger.tracking_uri={url}", "logger.experiment_name=served"],
    )
    assert result.returncode == 0, output(result)[-4000:]
    assert not (tmp_path / "outputs" / "mlflow.db").exists()  # nothing went to a local store
    client = MlflowClient(url)
    (run,) = client.search_runs([client.get_experiment_by_name("served").experiment_id])
    assert run.info.status == "FINISHED" and run.info.artifact_uri.startswith("mlflow-artifacts:")
    assert [m.step for m in client.get_metric_history(run.info.run_id, "train/loss")] == [1, 2]
    assert "checkpoints/best.pt" in {a.path for a in client.list_artifacts(run.info.run_id, "checkpoints")}
    stored = next((served / "artifacts").rglob("best.pt"))  # uploaded through the server, stored where it keeps them
    assert stored.read_bytes() == (tmp_path / "run" / "checkpoints" / "best.pt").read_bytes()
