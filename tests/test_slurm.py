"""`launcher=slurm` on a real single-node SLURM cluster (scripts/slurm/local_cluster.sh), with preemption.

A 2-job sweep runs through submitit; job 0 is interrupted twice while it trains, once the way
submitit warns of a time limit (SIGUSR2: checkpoint, requeue through submitit) and once by
`scontrol requeue` (SIGTERM, requeued by SLURM). It must end as if nothing happened: one MLflow
run, every step logged once, the SLURM job id and restart count on the run.
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
import time
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from src.config import PROJECT_ROOT
from src.tracking.sweeps import PARENT_TAG
from tests.helpers import FAST_RUN, isolated_paths
from tests.system_packages import ensure_debian_packages

SCRIPTS = PROJECT_ROOT / "scripts" / "slurm"
PACKAGES = ["slurm-wlm", "slurmctld", "slurmd", "slurm-client", "munge"]
STEPS = 40  # long enough to interrupt job 0 twice while it trains (a step takes 0.1-1 s here)


@pytest.fixture(scope="module")
def slurm(tmp_path_factory):
    """A running local cluster; yields the environment that reaches it (SLURM_CONF, sacct stand-in)."""
    why = ensure_debian_packages(PACKAGES, ["slurmctld", "slurmd", "sbatch", "munged"])
    if why:
        pytest.skip(why)
    if os.geteuid() != 0:
        pytest.skip("slurmd must run as root to start jobs")
    state = tmp_path_factory.mktemp("slurm")
    started = subprocess.run([SCRIPTS / "local_cluster.sh", "start", state], capture_output=True, text=True)
    try:
        assert started.returncode == 0, started.stdout + started.stderr
        path = f"{SCRIPTS / 'bin'}:{os.environ['PATH']}"
        yield {**os.environ, "SLURM_CONF": str(state / "slurm.conf"), "PATH": path, "SAMTUNE_SLURM_STATE": str(state)}
    finally:
        subprocess.run([SCRIPTS / "local_cluster.sh", "stop", state], check=False)


def slurm_run(env: dict[str, str], *args: str) -> str:
    return subprocess.run(args, env=env, capture_output=True, text=True, check=True, timeout=60).stdout.strip()


def count_in(path: Path, text: str) -> int:
    return path.read_text().count(text) if path.is_file() else 0


def tail(path: Path, lines: int = 25) -> str:
    return "\n".join(path.read_text(errors="replace").splitlines()[-lines:]) if path.is_file() else "(no file)"


class SlurmJob:
    """One job of the sweep, watched through SLURM's own state (`scontrol show job`).

    A wait fails only when nothing moves for `idle_s`: not the job's state, restarts or log, and not
    the CPU time of its processes. A busy machine makes a job slow, not stuck, so the deadline
    follows what the job still has to do instead of a fixed number of seconds; when it does fail,
    the message holds what a person needs: the job's state and reason and the tails of its logs
    and of slurmctld's and slurmd's.
    """

    def __init__(self, env: dict[str, str], job_id: str, state_dir: Path, train_log: Path, submitit_dir: Path):
        self.env, self.job_id, self.state_dir = env, job_id, state_dir
        self.train_log, self.submitit_dir = train_log, submitit_dir
        self.idle_s = 180.0

    @property
    def logs(self) -> list[Path]:
        """The training log and submitit's stdout/stderr of every run of the job."""
        return [self.train_log, *sorted(self.submitit_dir.glob("*.out")), *sorted(self.submitit_dir.glob("*.err"))]

    def show(self) -> dict[str, str]:
        """JobState, Reason, Restarts, BeginTime, ...; empty when the controller did not answer in time."""
        result = subprocess.run(
            ["scontrol", "show", "job", "-o", self.job_id], env=self.env, capture_output=True, text=True, timeout=60
        )
        return dict(re.findall(r"(\w+)=(\S*)", result.stdout)) if result.returncode == 0 else {}

    def cpu_seconds(self) -> float:
        """CPU time of the job's processes on the node (0 when it runs none)."""
        result = subprocess.run(
            ["scontrol", "listpids", self.job_id], env=self.env, capture_output=True, text=True, timeout=60
        )
        total = 0.0
        for line in result.stdout.splitlines()[1:]:
            pid = line.split()[0]
            try:
                fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            except (FileNotFoundError, IndexError, ProcessLookupError):
                continue
            total += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
        return total

    def progress(self, info: dict[str, str]) -> tuple:
        sizes = tuple(path.stat().st_size if path.is_file() else -1 for path in self.logs)
        return info.get("JobState"), info.get("Restarts"), sizes, round(self.cpu_seconds(), 1)

    def wait(self, what: str, condition, on_poll=None) -> dict[str, str]:
        """Poll until `condition(info)` holds; `on_poll(info)` acts on the job meanwhile."""
        last, moved = None, time.monotonic()
        while True:
            info = self.show()
            if info and condition(info):
                return info
            if info and on_poll is not None:
                on_poll(info)
            now = self.progress(info) if info else last
            if now != last:
                last, moved = now, time.monotonic()
            elif time.monotonic() - moved > self.idle_s:
                pytest.fail(self.report(f"no progress for {self.idle_s:g} s waiting for {what}", info))
            time.sleep(0.5)

    def start_when_requeued(self, restarts: int) -> None:
        """SLURM holds a requeued job with a begin time about two minutes ahead, and may set it again
        after an update that came too early: move it to now until the job runs."""

        def release(info: dict[str, str]) -> None:
            if info.get("JobState") == "PENDING" and info.get("Reason") == "BeginTime":
                subprocess.run(
                    ["scontrol", "update", f"JobId={self.job_id}", "StartTime=now"], env=self.env, capture_output=True
                )

        self.wait(
            f"job {self.job_id} to run again after restart {restarts}",
            lambda info: info.get("JobState") == "RUNNING" and int(info.get("Restarts", 0)) >= restarts,
            release,
        )

    def report(self, problem: str, info: dict[str, str]) -> str:
        shown = " ".join(f"{k}={info.get(k)}" for k in ("JobState", "Reason", "Restarts", "BeginTime", "RunTime"))
        parts = [f"{problem}: job {self.job_id} {shown or '(the controller did not answer)'}"]
        for path in [*self.logs, self.state_dir / "slurmctld.log", self.state_dir / "slurmd.log"]:
            parts.append(f"--- tail of {path}\n{tail(path)}")
        return "\n".join(parts)


def test_a_sweep_runs_on_slurm_and_a_preempted_job_resumes_its_run(slurm, tmp_path):
    env = slurm
    sweep_dir = tmp_path / "sweep"
    args = [*FAST_RUN, *isolated_paths(tmp_path), f"hydra.sweep.dir={sweep_dir}"]
    args += ["trainer.batch_size=1", "prompts.correction_clicks=0", f"trainer.max_steps={STEPS}"]
    args += ["trainer.eval_every_steps=100", "optimizer.lr=1e-4,1e-3"]  # checkpoints only when stopped, and at the end
    args += ["launcher=slurm", "hydra.launcher.gpus_per_node=0", "hydra.launcher.cpus_per_task=1"]
    args += [
        "hydra.launcher.mem_gb=1",
        "hydra.launcher.timeout_min=20",
        "hydra.launcher.setup=['export OMP_NUM_THREADS=1']",
    ]
    launcher = subprocess.Popen(
        [sys.executable, "-m", "src.train", "-m", *args],
        cwd=PROJECT_ROOT,
        env={**env, "PYTHONUNBUFFERED": "1"},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        log = sweep_dir / "0" / "train.log"
        job_id = wait_until("job 0's SLURM id", lambda: _job_id(sweep_dir, 0), launcher)
        watched = SlurmJob(env, job_id, Path(env["SAMTUNE_SLURM_STATE"]), log, sweep_dir / ".submitit" / job_id)
        watched.wait("job 0 to train", lambda info: count_in(log, f"training {STEPS} steps"))
        # 1. submitit's warning before a time limit: checkpoint at the next step, requeue, resume
        slurm_run(env, "scancel", "--signal=USR2", job_id)
        watched.start_when_requeued(restarts=1)
        watched.wait("the first resume", lambda info: count_in(log, f"training {STEPS} steps") == 2)
        assert count_in(log, "resuming from") == 1
        # 2. preemption / an administrator's requeue: SIGTERM, checkpoint, requeued by SLURM, resume
        slurm_run(env, "scontrol", "requeue", job_id)
        watched.start_when_requeued(restarts=2)
        watched.wait("job 0 to finish", lambda info: info.get("JobState") in ("COMPLETED", "FAILED", "CANCELLED"))
        output, _ = launcher.communicate(timeout=600)
    finally:
        if launcher.poll() is None:
            launcher.kill()
            launcher.wait()
    assert launcher.returncode == 0, output[-5000:]
    text = log.read_text()
    assert "SIGUSR2: checkpoint saved after step" in text and "SIGTERM: checkpoint saved after step" in text
    assert text.count("resuming from") == 2

    client = MlflowClient(f"sqlite:///{tmp_path / 'outputs' / 'mlflow.db'}")
    runs = client.search_runs([client.get_experiment_by_name("synthetic").experiment_id])
    children = sorted((r for r in runs if PARENT_TAG in r.data.tags), key=lambda r: int(r.data.tags["sweep.job"]))
    assert len(runs) == 3 and len(children) == 2  # the parent and one run per job: the resumed job kept its run
    for job, run in enumerate(children):
        assert run.info.status == "FINISHED"
        # it ran under SLURM, as that task of the sweep's job array
        array_task = _job_id(sweep_dir, job)
        assert f"{run.data.tags['slurm.array_job_id']}_{run.data.tags['slurm.array_task_id']}" == array_task
        assert run.data.tags["slurm.job_id"] == slurm_run(
            env, "squeue", "-h", "-t", "all", "-j", array_task, "-o", "%A"
        )
        assert run.data.tags["slurm.partition"] == "local"
        # every step logged exactly once, across the interruptions
        assert [m.step for m in client.get_metric_history(run.info.run_id, "train/loss")] == list(range(1, STEPS + 1))
        assert run.data.metrics["best/step"] in (0, STEPS)  # validated at the start and the end; step 0 counts
    assert children[0].data.tags["slurm.restart_count"] == "2" and "slurm.restart_count" not in children[1].data.tags
    assert "| best |" in output and (sweep_dir / "summary.md").is_file()


def wait_until(what: str, condition, launcher: subprocess.Popen, timeout: float = 300):
    """Before SLURM knows the job: poll `condition`, failing at once if the sweep command ended."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if value := condition():
            return value
        if launcher.poll() is not None:
            pytest.fail(
                f"the sweep command ended (status {launcher.returncode}) before {what}:\n"
                + launcher.stdout.read()[-4000:]
            )
        time.sleep(0.2)
    pytest.fail(f"timed out waiting for {what}")


def _job_id(sweep_dir: Path, job: int) -> str | None:
    """The SLURM job id of a sweep job, from the submitit folder (array task `<array>_<job>`)."""
    for folder in (sweep_dir / ".submitit").glob(f"*_{job}"):
        return folder.name
    return None


def readme_example() -> list[str]:
    """The sweep of docs/clusters.md's "Try it without a cluster", as printed."""
    (line,) = [
        line
        for line in (PROJECT_ROOT / "docs" / "clusters.md").read_text().splitlines()
        if line.startswith("python -m src.train -m") and "launcher=slurm" in line and "experiment=demo" in line
    ]
    return shlex.split(line)[3:]


def test_the_readme_example_runs_as_printed_on_a_small_node(slurm, tmp_path):
    """Offline, at the demo's size, on a node as small as a 2-core laptop."""
    args = [*readme_example(), *isolated_paths(tmp_path), f"hydra.sweep.dir={tmp_path / 'sweep'}"]
    result = subprocess.run(
        [sys.executable, "-m", "src.train", *args], cwd=PROJECT_ROOT, env=slurm, capture_output=True, text=True,
        timeout=900,
    )  # fmt: skip
    assert result.returncode == 0, (result.stdout + result.stderr)[-5000:]
    client = MlflowClient(f"sqlite:///{tmp_path / 'outputs' / 'mlflow.db'}")
    runs = client.search_runs([client.get_experiment_by_name("synthetic").experiment_id])
    assert sorted(r.info.status for r in runs) == ["FINISHED"] * 3  # the parent and both jobs



def test_a_request_no_node_can_run_is_refused_before_submitting_and_fails_the_sweep_run(slurm, tmp_path):
    """More CPUs per task than the node has (the GPU-node defaults on a laptop): one line, no job."""
    args = ["-m", *FAST_RUN, *isolated_paths(tmp_path), f"hydra.sweep.dir={tmp_path / 'sweep'}"]
    args += ["optimizer.lr=1e-4,1e-3", "launcher=slurm", "hydra.launcher.gpus_per_node=0"]
    args += ["hydra.launcher.cpus_per_task=64", "hydra.launcher.mem_gb=1"]
    result = subprocess.run(
        [sys.executable, "-m", "src.train", *args], cwd=PROJECT_ROOT, env=slurm, capture_output=True, text=True,
        timeout=300,
    )  # fmt: skip
    text = result.stdout + result.stderr
    assert result.returncode == 1 and "Traceback" not in text, text[-3000:]
    (line,) = [line for line in text.splitlines() if "ConfigError" in line]
    found = re.search(r"its largest, \S+, has (\d+) CPUs.*: set hydra\.launcher\.cpus_per_task=(\d+) \(asked 64", line)
    assert found and found[1] == found[2], line
    client = MlflowClient(f"sqlite:///{tmp_path / 'outputs' / 'mlflow.db'}")
    (parent,) = client.search_runs([client.get_experiment_by_name("synthetic").experiment_id])
    assert parent.info.status == "FAILED" and "cpus_per_task" in parent.data.tags["sweep.failure"]
    assert f"cpus_per_task={found[2]} (asked 64)" in parent.data.tags["sweep.failure"]
    assert not (tmp_path / "sweep" / ".submitit").exists()  # nothing was submitted
