"""`launcher=slurm` on a real single-node SLURM cluster (scripts/slurm/local_cluster.sh), with preemption.

A 2-job sweep runs through submitit; job 0 is interrupted twice while it trains, once the way
submitit warns of a time limit (SIGUSR2: checkpoint, requeue through submitit) and once by
`scontrol requeue` (SIGTERM, requeued by SLURM). It must end as if nothing happened: one MLflow
run, every step logged once, the SLURM job id and restart count on the run.
"""

from __future__ import annotations

import os
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
        yield {**os.environ, "SLURM_CONF": str(state / "slurm.conf"), "PATH": f"{SCRIPTS / 'bin'}:{os.environ['PATH']}"}
    finally:
        subprocess.run([SCRIPTS / "local_cluster.sh", "stop", state], check=False)


def slurm_run(env: dict[str, str], *args: str) -> str:
    return subprocess.run(args, env=env, capture_output=True, text=True, check=True, timeout=60).stdout.strip()


def wait_for(what: str, condition, timeout: float = 180, poll: float = 0.2):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(poll)
    pytest.fail(f"timed out waiting for {what}")


def count_in(path: Path, text: str) -> int:
    return path.read_text().count(text) if path.is_file() else 0


def job_state(env: dict[str, str], job_id: str) -> str:
    return slurm_run(env, "squeue", "--noheader", "--states=all", f"--jobs={job_id}", "--format=%T")


def start_now_once_requeued(env: dict[str, str], job_id: str) -> None:
    """SLURM holds a requeued job for about two minutes; let it start right away."""
    wait_for(f"job {job_id} to be requeued", lambda: job_state(env, job_id) == "PENDING")
    slurm_run(env, "scontrol", "update", f"JobId={job_id}", "StartTime=now")


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
        wait_for("job 0 to train", lambda: count_in(log, f"training {STEPS} steps"))
        job_id = wait_for("job 0's SLURM id", lambda: _job_id(sweep_dir, 0))
        # 1. submitit's warning before a time limit: checkpoint at the next step, requeue, resume
        slurm_run(env, "scancel", "--signal=USR2", job_id)
        start_now_once_requeued(env, job_id)
        wait_for("the first resume", lambda: count_in(log, "resuming from"))
        wait_for("job 0 to train again", lambda: count_in(log, f"training {STEPS} steps") == 2)
        # 2. preemption / an administrator's requeue: SIGTERM, checkpoint, requeued by SLURM, resume
        slurm_run(env, "scontrol", "requeue", job_id)
        start_now_once_requeued(env, job_id)
        output, _ = launcher.communicate(timeout=300)
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
        assert run.data.metrics["best/step"] == STEPS
    assert children[0].data.tags["slurm.restart_count"] == "2" and "slurm.restart_count" not in children[1].data.tags
    assert "| best |" in output and (sweep_dir / "summary.md").is_file()


def _job_id(sweep_dir: Path, job: int) -> str | None:
    """The SLURM job id of a sweep job, from the submitit folder (array task `<array>_<job>`)."""
    for folder in (sweep_dir / ".submitit").glob(f"*_{job}"):
        return folder.name
    return None
