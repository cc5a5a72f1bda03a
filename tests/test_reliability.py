"""Crashes at any moment, tracking outages and bad input: training keeps going, loses nothing, says why."""

from __future__ import annotations

import logging
import os
import re
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from mlflow.tracking import MlflowClient

from src.cli import user_message
from src.config import PROJECT_ROOT, check_training_numbers
from src.engine.checkpoints import CheckpointDir
from src.errors import CheckpointError, ConfigError, DataError
from src.tasks.segmentation.dataset import SegmentationDataset
from src.utils.atomic import atomic_dir, write_text_atomic
from src.utils.checkpoint_io import read_checkpoint, torch_save_atomic
from tests.helpers import FAST_RUN, free_port, isolated_paths, write_pair

# runs src.train with one function (module:name or module:Class.name) patched to die (os._exit, as
# kill -9: no cleanup) when the repr of its arguments matches a pattern
DYING_RUN = """
import importlib, os, re, runpy, sys
target, pattern = sys.argv[1], re.compile(sys.argv[2])
module, _, path = target.partition(":")
owner = importlib.import_module(module)
*parents, name = path.split(".")
for parent in parents:
    owner = getattr(owner, parent)
real = getattr(owner, name)
def dying(*args):
    if pattern.search(repr(args) if parents else "->".join(map(str, args))):
        os._exit(137)
    return real(*args)
setattr(owner, name, dying)
sys.argv = ["src.train", *sys.argv[3:]]
runpy.run_module("src.train", run_name="__main__")
"""


def output(result: subprocess.CompletedProcess) -> str:
    return result.stdout + result.stderr


def run_dying(tmp: Path, function: str, pattern: str, *overrides: str) -> subprocess.CompletedProcess:
    args = [*FAST_RUN, *isolated_paths(tmp), "trainer.cpu_threads=1", *overrides]
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "PYTHONPATH": str(PROJECT_ROOT)}
    command = [sys.executable, "-c", DYING_RUN, function, pattern, *args]
    return subprocess.run(command, cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=600, env=env)


@pytest.fixture(scope="module")
def straight_run(tmp_path_factory) -> Path:
    """Four steps without interruption: the weights every interrupted run must end with."""
    from tests.helpers import run_module

    tmp = tmp_path_factory.mktemp("straight")
    result = run_module("src.train", [*FAST_RUN, *isolated_paths(tmp), "trainer.max_steps=4", "trainer.cpu_threads=1"])
    assert result.returncode == 0, output(result)[-3000:]
    return tmp / "run" / "checkpoints"


@pytest.mark.parametrize(
    ("function", "pattern", "resumed_at"),
    [
        # the step-4 weights are written, its training state is not: step 2 stays the newest whole checkpoint
        ("src.engine.checkpoints:torch_save_atomic", r"\.step_000000004\.[^/]*\.tmp/last_state\.pt$", 2),
        # the step-4 folder is committed, the top-level last.pt still points at step 2
        ("src.engine.checkpoints:_link", r"step_000000004/last\.pt->.*checkpoints/last\.pt$", 4),
    ],
)
def test_a_kill_inside_the_checkpoint_commit_resumes_to_identical_weights(
    train_run, tmp_path, straight_run, function, pattern, resumed_at
):
    killed = run_dying(tmp_path, function, pattern, "trainer.max_steps=4")
    assert killed.returncode == 137, output(killed)[-3000:]
    ckpt = CheckpointDir(tmp_path / "run" / "checkpoints")
    if resumed_at == 2:
        assert [p.name for p in ckpt.directory.iterdir() if p.name.endswith(".tmp")]  # the killed write's leftovers
    else:  # the old code refused these two as "interrupted while saving"
        assert torch.load(ckpt.last, weights_only=True)["meta"]["step"] == 2
        assert torch.load(ckpt.state, weights_only=True)["step"] == 4

    resumed = train_run("trainer.max_steps=4", "trainer.cpu_threads=1")
    assert resumed.returncode == 0, output(resumed)[-3000:]
    assert f"at step {resumed_at}" in output(resumed)
    assert not [p.name for p in ckpt.directory.iterdir() if p.name.startswith(".")]  # leftovers removed
    assert [p.name for p in ckpt.step_folders()] == ["step_000000004"]
    assert os.path.samefile(ckpt.last, ckpt.step_folders()[-1] / "last.pt")
    weights, state = ckpt.load()
    assert state["step"] == 4 and torch.load(ckpt.state, weights_only=True)["step"] == 4
    straight = read_checkpoint(straight_run / "last.pt")["model"]
    assert weights["model"].keys() == straight.keys()
    for key, value in straight.items():
        assert torch.equal(weights["model"][key], value), key


def metric_steps(client: MlflowClient, run_id: str, key: str) -> list[int]:
    return sorted(m.step for m in client.get_metric_history(run_id, key))


def test_metrics_survive_a_hard_kill_once_each_and_the_killed_run_is_marked(train_run, tmp_path):
    store = f"sqlite:///{tmp_path / 'outputs' / 'mlflow.db'}"
    # killed while logging step 3, after the step-2 checkpoint
    killed = run_dying(tmp_path, "src.tracking.runs:MlflowTracker.log_metrics", r", 3\)$", "trainer.max_steps=4")
    assert killed.returncode == 137, output(killed)[-3000:]
    client = MlflowClient(store)
    (run,) = client.search_runs([client.get_experiment_by_name("synthetic").experiment_id])
    run_id = run.info.run_id
    assert run.info.status == "RUNNING"
    assert metric_steps(client, run_id, "train/loss") == [1, 2]  # flushed with the checkpoint
    assert metric_steps(client, run_id, "val/miou") == [0, 2]

    other = train_run("trainer.max_steps=1", f"hydra.run.dir={tmp_path / 'other'}")  # the next run marks it
    assert other.returncode == 0, output(other)[-3000:]
    killed_run = client.get_run(run_id)
    assert killed_run.info.status == "KILLED" and "killed hard" in killed_run.data.tags["killed_hard"]

    resumed = train_run("trainer.max_steps=4", "trainer.cpu_threads=1")
    assert resumed.returncode == 0, output(resumed)[-3000:]
    assert "at step 2" in output(resumed)
    assert client.get_run(run_id).info.status == "FINISHED"
    assert metric_steps(client, run_id, "train/loss") == [1, 2, 3, 4]  # no gap, nothing twice
    assert metric_steps(client, run_id, "val/miou") == [0, 2, 4]
    assert metric_steps(client, run_id, "best/val/miou") == [4]


def test_an_unreachable_tracking_server_fails_in_seconds_in_one_line(train_run):
    uri = f"http://127.0.0.1:{free_port()}"
    started = time.monotonic()
    result = train_run(f"logger.tracking_uri={uri}")
    assert time.monotonic() - started < 30
    assert result.returncode == 1
    errors = [line for line in output(result).splitlines() if "TrackingError" in line]
    assert len(errors) == 1 and f"logger.tracking_uri={uri} cannot be reached" in errors[0], output(result)
    assert "Traceback" not in output(result) and "RANDOM weights" not in output(result)  # no model was built


class MlflowServer:
    """A real `mlflow server` on 127.0.0.1 that can be stopped and started again on the same store."""

    def __init__(self, root: Path):
        self.root, self.port = root, free_port()
        self.uri = f"http://127.0.0.1:{self.port}"
        self.process: subprocess.Popen | None = None

    def start(self) -> None:
        mlflow = Path(sys.executable).parent / "mlflow"
        command = [str(mlflow), "server", "--host", "127.0.0.1", "--port", str(self.port), "--workers", "1"]
        command += ["--backend-store-uri", f"sqlite:///{self.root / 'server.db'}"]
        command += ["--artifacts-destination", str(self.root / "server-artifacts")]
        log = open(self.root / "server.log", "a")  # noqa: SIM115 - open for the server's lifetime
        self.process = subprocess.Popen(command, stdout=log, stderr=log, start_new_session=True)
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            try:
                import urllib.request

                urllib.request.urlopen(f"{self.uri}/health", timeout=2).read()
                return
            except OSError:
                time.sleep(0.5)
        raise AssertionError((self.root / "server.log").read_text()[-3000:])

    def stop(self) -> None:
        if self.process is not None:
            os.killpg(self.process.pid, 9)
            self.process.wait()
            self.process = None


def test_a_server_stopped_mid_run_neither_stops_training_nor_loses_metrics(tmp_path):
    server = MlflowServer(tmp_path)
    server.start()
    args = [*FAST_RUN, *isolated_paths(tmp_path), "trainer.cpu_threads=1", "trainer.max_steps=12"]
    args += [f"logger.tracking_uri={server.uri}", "logger.retry_every_s=1", "logger.drain_timeout_s=120"]
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false"}
    training = subprocess.Popen(
        [sys.executable, "-m", "src.train", *args],
        cwd=PROJECT_ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=env,
    )
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(training.stdout), daemon=True)
    reader.start()

    def wait_for(text: str) -> None:
        deadline = time.monotonic() + 300
        while not any(text in line for line in lines):
            assert training.poll() is None or any(text in line for line in lines), "".join(lines)[-3000:]
            assert time.monotonic() < deadline, "".join(lines)[-3000:]
            time.sleep(0.2)

    try:
        wait_for("step 2:")
        server.stop()
        wait_for("cannot be reached")  # said once, training goes on
        wait_for("step 6:")
        server.start()
        assert training.wait(timeout=400) == 0, "".join(lines)[-3000:]
    finally:
        training.kill()
        server.stop()
    reader.join(timeout=10)
    text = "".join(lines)
    assert text.count("cannot be reached") == 1 and "is back" in text, text[-3000:]
    assert (tmp_path / "run" / "checkpoints" / "step_000000012").is_dir()
    server.start()
    try:
        client = MlflowClient(server.uri)
        (run,) = client.search_runs([client.get_experiment_by_name("synthetic").experiment_id])
        assert run.info.status == "FINISHED"
        assert metric_steps(client, run.info.run_id, "train/loss") == list(range(1, 13))
        assert metric_steps(client, run.info.run_id, "val/miou") == list(range(0, 13, 2))
        artifacts = {a.path for a in client.list_artifacts(run.info.run_id, "samples")}
        assert "samples/step_000004.png" in artifacts
    finally:
        server.stop()


def test_unreadable_checkpoints_are_named_in_one_line(tmp_path, train_run):
    (tmp_path / "notes.pt").write_text("hello, not a checkpoint\n")
    (tmp_path / "empty.pt").write_bytes(b"")
    torch.save(torch.nn.Linear(2, 2), tmp_path / "model.pth")  # a whole model: pickled code, not tensors
    torch.save([1, 2], tmp_path / "list.pt")
    expected = {
        "notes.pt": "cannot be read as plain tensors",
        "empty.pt": "is empty (0 bytes)",
        "model.pth": "holds pickled Python objects",
        "list.pt": "holds a list",
    }
    for name, message in expected.items():
        with pytest.raises(CheckpointError, match=re.escape(f"{tmp_path / name} {message}")) as caught:
            read_checkpoint(tmp_path / name)
        assert "\n" not in str(caught.value)
    result = train_run(f"trainer.init_from={tmp_path / 'notes.pt'}", "trainer.max_steps=1")
    assert result.returncode == 1 and "Traceback" not in output(result), output(result)[-3000:]
    assert f"CheckpointError: checkpoint {tmp_path / 'notes.pt'} cannot be read" in output(result)


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("trainer.batch_size=abc", "trainer.batch_size='abc': expected an integer >= 1"),
        ("optimizer.lr=abc", "optimizer.lr='abc': expected a number >= 0"),
        ("trainer.max_steps=-5", "trainer.max_steps=-5: expected an integer >= 1 (or null)"),
        ("trainer.max_time=0", "trainer.max_time=0: expected a number > 0 (or null)"),
    ],
)
def test_training_numbers_are_checked_before_anything_is_built(compose_cfg, override, message):
    with pytest.raises(ConfigError, match=re.escape(message)):
        check_training_numbers(compose_cfg([override]))


def test_a_bad_number_on_the_command_line_is_one_line(train_run):
    result = train_run("trainer.batch_size=abc")
    assert result.returncode == 1 and "Traceback" not in output(result), output(result)[-3000:]
    assert "ConfigError: trainer.batch_size='abc': expected an integer >= 1" in output(result)
    assert "RANDOM weights" not in output(result)


class FailingImages(torch.utils.data.Dataset):
    def __len__(self) -> int:
        return 2

    def __getitem__(self, index: int):
        raise DataError(f"image {index}.png: unreadable")


def test_a_data_error_in_a_loader_worker_reads_as_its_own_message():
    loader = torch.utils.data.DataLoader(FailingImages(), num_workers=1)
    with pytest.raises(DataError) as caught:
        next(iter(loader))
    assert "Original Traceback" in str(caught.value)  # what torch hands back
    assert user_message(caught.value) == "image 0.png: unreadable"
    assert user_message(DataError("plain")) == "plain"


@pytest.mark.parametrize("umask", [0o022, 0o002])
def test_written_files_follow_the_umask(tmp_path, umask):
    previous = os.umask(umask)
    try:
        text = write_text_atomic("x", tmp_path / "shared" / "a.txt")
        weights = torch_save_atomic({"w": torch.ones(1)}, tmp_path / "shared" / "w.pt")
        with atomic_dir(tmp_path / "shared" / "folder") as folder:
            (folder / "inside.txt").write_text("y")
        ckpt = CheckpointDir(tmp_path / "checkpoints")
        ckpt.save({"model": {}, "meta": {"step": 1}}, {"step": 1}, is_best=True)
    finally:
        os.umask(previous)
    files = [text, weights, ckpt.last, ckpt.state, ckpt.best, ckpt.step_folders()[0] / "last.pt"]
    assert {oct(path.stat().st_mode & 0o777) for path in files} == {oct(0o666 & ~umask)}
    folders = [tmp_path / "shared" / "folder", ckpt.step_folders()[0]]
    assert {oct(path.stat().st_mode & 0o777) for path in folders} == {oct(0o777 & ~umask)}


def test_empty_masks_are_counted_and_a_split_without_objects_is_refused(train_run, tmp_path, shapes_image, caplog):
    image, ids = shapes_image
    root = tmp_path / "kv"
    for name in ("a", "b", "blank"):
        write_pair(root, "train", name, image, ids if name != "blank" else np.zeros_like(ids))
        write_pair(root, "val", name, image, np.zeros_like(ids))
    train = SegmentationDataset(root, "train", image_size=128, mask_type="auto")
    with caplog.at_level(logging.WARNING):
        assert train.skip_empty_masks() == 1
    assert len(train) == 2 and "blank.png is empty (no object)" in caplog.text and "1 of 3 images" in caplog.text
    with pytest.raises(DataError, match=r"split 'val' of .*kv: all 3 masks are empty"):
        SegmentationDataset(root, "val", image_size=128, mask_type="auto").skip_empty_masks()
    overrides = ["model.checkpoint=null", "model.image_size=128", "dataset=kvasir", f"dataset.root={root}"]
    result = train_run(*overrides, "data.num_workers=0", "trainer.max_steps=1", fast=False)
    assert result.returncode == 1 and "Traceback" not in output(result), output(result)[-3000:]
    assert "DataError: split 'val'" in output(result) and "blank.png is empty" in output(result)


def create_store_and_log(uri: str, start_at: float, failures) -> None:
    """One of several processes opening the same new store at the same moment."""
    from tests.helpers import mlflow_tracker

    time.sleep(max(0.0, start_at - time.time()))
    try:
        tracker = mlflow_tracker(uri, "race", artifact_location=uri.removeprefix("sqlite:///") + ".artifacts")
        tracker.start(f"run {os.getpid()}", {})
        tracker.log_metrics({"x": 1.0}, 1)
        tracker.finish()
    except Exception as err:  # reported to the test, which names it
        failures.put(f"{type(err).__name__}: {err}")


def test_processes_creating_one_new_store_at_once_all_succeed(tmp_path):
    import multiprocessing

    uri = f"sqlite:///{tmp_path / 'new' / 'mlflow.db'}"
    context = multiprocessing.get_context("spawn")
    failures = context.Queue()
    start_at = time.time() + 25  # after every process has imported mlflow
    processes = [context.Process(target=create_store_and_log, args=(uri, start_at, failures)) for _ in range(4)]
    for process in processes:
        process.start()
    for process in processes:
        process.join(timeout=300)
    reported = [failures.get() for _ in range(failures.qsize())]
    assert not reported and all(p.exitcode == 0 for p in processes), reported
    client = MlflowClient(uri)
    runs = client.search_runs([client.get_experiment_by_name("race").experiment_id])
    assert len(runs) == 4 and all(run.info.status == "FINISHED" for run in runs)


def test_resuming_with_a_changed_config_names_the_keys_and_refuses_what_cannot_change(train_run, tmp_path):
    first = train_run("trainer.max_steps=2", "trainer.cpu_threads=1")
    assert first.returncode == 0, output(first)[-3000:]
    refused = train_run("trainer.max_steps=4", "optimizer.lr=1e-3", "trainer.cpu_threads=1")
    assert refused.returncode == 1 and "Traceback" not in output(refused), output(refused)[-3000:]
    line = next(line for line in output(refused).splitlines() if "ConfigError" in line)
    assert "optimizer.lr: 1e-05 -> 0.001" in line and "trainer.resume_changed=true" in line
    assert "trainer.max_steps: 2 -> 4" not in line  # a budget may change

    resumed = train_run(
        "trainer.max_steps=4", "optimizer.lr=1e-3", "trainer.resume_changed=true", "trainer.cpu_threads=1"
    )
    assert resumed.returncode == 0, output(resumed)[-3000:]
    assert "resuming with changed settings: optimizer.lr: 1e-05 -> 0.001; trainer.max_steps: 2 -> 4" in output(resumed)
    state = torch.load(tmp_path / "run" / "checkpoints" / "last_state.pt", weights_only=True)
    assert state["optimizer"]["param_groups"][0]["initial_lr"] == pytest.approx(1e-3)  # the new lr applies
    assert state["scheduler"]["base_lrs"] == [pytest.approx(1e-3)]
    client = MlflowClient(f"sqlite:///{tmp_path / 'outputs' / 'mlflow.db'}")
    (run,) = client.search_runs([client.get_experiment_by_name("synthetic").experiment_id])
    assert "optimizer.lr: 1e-05 -> 0.001" in run.data.tags["resume.changed.step_2"]


def test_what_a_store_never_took_is_left_in_the_run_folder_and_uploads_later(tmp_path, monkeypatch, caplog):
    from src.tracking.unsent import send_unsent
    from tests.helpers import mlflow_tracker

    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    store = f"sqlite:///{tmp_path / 'mlflow.db'}"
    tracker = mlflow_tracker(
        store, "exp", artifact_location=str(tmp_path / "art"), retry_every_s=0.2, drain_timeout_s=2
    )
    tracker.unsent_file = tmp_path / "run" / "mlflow_unsent.jsonl"
    run_id = tracker.start("run", {})
    tracker._sender.client = MlflowClient(f"http://127.0.0.1:{free_port()}")  # the store goes away
    for step in range(1, 4):
        tracker.log_metrics({"loss": 1.0 / step}, step)
    (tmp_path / "picture.txt").write_text("an artifact")
    tracker.log_artifact(tmp_path / "picture.txt", "samples")
    with caplog.at_level(logging.WARNING):
        tracker.finish()
    assert caplog.text.count("cannot be reached") == 1
    assert f"python -m src.tracking.unsent {tracker.unsent_file} {store}" in caplog.text
    client = MlflowClient(store)
    assert client.get_metric_history(run_id, "loss") == [] and client.get_run(run_id).info.status == "RUNNING"

    assert send_unsent(tracker.unsent_file, store) == 3  # metrics, artifact, status
    assert [m.step for m in client.get_metric_history(run_id, "loss")] == [1, 2, 3]
    assert client.get_run(run_id).info.status == "FINISHED"
    assert [a.path for a in client.list_artifacts(run_id, "samples")] == ["samples/picture.txt"]
    assert not tracker.unsent_file.exists() and tracker.unsent_file.with_suffix(".jsonl.sent").is_file()
