"""Data parallelism on the CPU (gloo, 2 processes): the same gradients and the same run as one process.

Also the pieces that make this hold: shards that together are the whole batch, prompts drawn per
object, rank and world size from torchrun's or SLURM's environment, and the stop-signal flag.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.multiprocessing as mp
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from mlflow.tracking import MlflowClient

from src.cli import CONFIG_DIR
from src.engine.sampler import EpochSampler
from src.engine.stop_signals import StopSignals
from src.engine.trainer import data_parallel_loss
from src.errors import TrainingInterrupted
from src.tasks.segmentation.prompts import BOX, POINT, ObjectGenerators, PromptSampler
from src.tasks.segmentation.task import SegmentationTask
from src.utils.checkpoint_io import read_checkpoint
from src.utils.distributed import World, data_parallel, first_host, process_group, world_from_environment
from src.utils.seeding import seed_everything, torch_generator
from tests.helpers import FAST_RUN, free_port, from_conf

GLOBAL_BATCH = 4


def test_shards_of_a_batch_together_are_the_batch_of_one_process():
    whole = EpochSampler(11, seed=5)  # 11 images, 2 processes: each gets 5 per epoch, in lockstep
    shards = [EpochSampler(11, seed=5, rank=r, world_size=2) for r in (0, 1)]
    for sampler in (whole, *shards):
        sampler.set_epoch(3)
    assert [len(s) for s in shards] == [5, 5] and [s.num_samples for s in shards] == [5, 5]
    whole_order, parts = list(whole), [list(s) for s in shards]
    for k in range(2):  # the k-th batch of 2 per process is part of the k-th batch of 4 of one process
        together = parts[0][2 * k : 2 * k + 2] + parts[1][2 * k : 2 * k + 2]
        assert sorted(together) == sorted(whole_order[4 * k : 4 * k + 4])  # same indices, same sample seeds
    assert not set(parts[0]) & set(parts[1])


def test_an_objects_prompts_do_not_depend_on_the_rest_of_its_batch():
    masks = torch.zeros(4, 48, 48, dtype=torch.bool)
    for i in range(4):
        masks[i, 4 + 8 * i : 20 + 8 * i, 5 + 6 * i : 30 + 4 * i] = True
    seeds = [11, 22, 33, 44]
    sampler = from_conf(PromptSampler, "prompts/default", positive_points=2, negative_points=1, box_noise=0.2)
    for mode in (POINT, BOX):
        whole = sampler.initial(masks, mode, ObjectGenerators(seeds))
        halves = [
            sampler.initial(masks[part], mode, ObjectGenerators(seeds[part])) for part in (slice(0, 1), slice(1, 4))
        ]
        assert torch.equal(whole.points, torch.cat([h.points for h in halves]))
        wrong = torch.zeros_like(masks)
        corrected = sampler.correct(masks, wrong, whole, ObjectGenerators(seeds))
        corrected_halves = [
            sampler.correct(masks[part], wrong[part], h, ObjectGenerators(seeds[part]))
            for part, h in zip((slice(0, 1), slice(1, 4)), halves, strict=True)
        ]
        assert torch.equal(corrected.points, torch.cat([h.points for h in corrected_halves]))
    # with one generator for the batch, splitting it changes the draws: why ObjectGenerators exist
    shared = sampler.initial(masks, POINT, torch_generator(0)).points
    assert not torch.equal(shared[1:], sampler.initial(masks[1:], POINT, torch_generator(0)).points)


def test_rank_and_world_size_come_from_torchrun_or_slurm(monkeypatch):
    for var in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT", "SLURM_STEP_NUM_TASKS"):
        monkeypatch.delenv(var, raising=False)
    assert world_from_environment() == World(0, 1, 0)
    monkeypatch.setenv("SLURM_JOB_ID", "77")
    monkeypatch.setenv("SLURM_STEP_NUM_TASKS", "1")
    assert world_from_environment() == World(0, 1, 0)  # one task: no process group
    # a SLURM step with 4 tasks on 2 nodes, seen from task 3 (the second task on gpu008)
    slurm = {"SLURM_STEP_NUM_TASKS": "4", "SLURM_PROCID": "3", "SLURM_LOCALID": "1"}
    slurm |= {"SLURM_STEP_NODELIST": "gpu[007-008],cpu01", "SLURM_JOB_NODELIST": "gpu[007-008],cpu01"}
    for var, value in slurm.items():
        monkeypatch.setenv(var, value)
    assert world_from_environment() == World(3, 4, 1)
    assert os.environ["MASTER_ADDR"] == "gpu007" and os.environ["MASTER_PORT"] == "20077"
    assert [first_host(nodes) for nodes in ("vm", "a1,a2", "n[3,5-6]")] == ["vm", "a1", "n3"]
    monkeypatch.setenv("RANK", "1")  # torchrun's variables win
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("LOCAL_RANK", "1")
    assert world_from_environment() == World(1, 2, 1)


def test_a_stop_signal_sets_a_flag_and_is_handed_on_after_the_checkpoint():
    seen = []
    previous = signal.signal(signal.SIGUSR1, lambda signum, frame: seen.append(signum))
    try:
        with StopSignals(["SIGUSR1", "TERM"]) as stop:
            os.kill(os.getpid(), signal.SIGUSR1)
            assert stop.received == signal.SIGUSR1 and seen == []  # only recorded: training goes on to the step's end
        assert seen == []  # a clean exit does not pass it on
        with pytest.raises(TrainingInterrupted), StopSignals(["SIGUSR1"]) as stop:
            os.kill(os.getpid(), signal.SIGUSR1)
            raise TrainingInterrupted("checkpoint saved")
        assert seen == [signal.SIGUSR1]  # e.g. submitit's handler, which requeues the job
        assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL
    finally:
        signal.signal(signal.SIGUSR1, previous)


# ---------------------------------------------------------------- two gloo processes


def _compose(overrides: list[str]):
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        return compose(config_name="train", overrides=overrides)


def _global_batch(task: SegmentationTask, rank: int, world_size: int):
    """This process's part of the run's first batch (GLOBAL_BATCH images over all processes)."""
    train_set, _ = task.datasets()
    sampler = EpochSampler(len(train_set), seed=1, rank=rank, world_size=world_size)
    sampler.set_epoch(0)
    return task.collate([train_set[key] for key in list(sampler)[: GLOBAL_BATCH // world_size]])


def _gradients(task: SegmentationTask, module: torch.nn.Module, batch, world: World) -> torch.Tensor:
    out = task.training_step(module, batch, torch_generator(7))
    data_parallel_loss(out, world, step=1).backward()
    # parameters outside this step's graph (e.g. the object-score head) have no gradient: zero
    return torch.cat(
        [(torch.zeros_like(p) if p.grad is None else p.grad).flatten() for p in task.trainable_parameters()]
    )


def _gradient_worker(rank: int, overrides: list[str], port: int, folder: Path) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE="2", LOCAL_RANK="0")
    torch.set_num_threads(1)
    seed_everything(0)
    task = SegmentationTask(_compose(overrides), torch.device("cpu"))
    with process_group(torch.device("cpu"), "gloo") as (world, device):
        module = data_parallel(task.module, device, find_unused_parameters=True)
        batch = _global_batch(task, world.rank, world.world_size)
        torch.save(
            {"grads": _gradients(task, module, batch, world), "objects": len(batch["masks"])}, folder / f"{rank}.pt"
        )


def test_two_processes_compute_the_gradient_of_the_whole_batch(tmp_path):
    overrides = [*FAST_RUN, f"paths.data_dir={tmp_path / 'data'}", f"paths.run_dir={tmp_path / 'run'}"]
    seed_everything(0)
    task = SegmentationTask(_compose(overrides), torch.device("cpu"))
    single = _gradients(task, task.module, _global_batch(task, 0, 1), World())  # also writes the dataset
    mp.spawn(_gradient_worker, args=(overrides, free_port(), tmp_path), nprocs=2, join=True)
    ranks = [torch.load(tmp_path / f"{rank}.pt", weights_only=True) for rank in (0, 1)]
    assert ranks[0]["objects"] != ranks[1]["objects"]  # uneven shares: the loss weighting matters here
    assert torch.equal(ranks[0]["grads"], ranks[1]["grads"])  # every process applies the same update
    assert single.abs().max() > 1e-3
    torch.testing.assert_close(ranks[0]["grads"], single, rtol=1e-4, atol=1e-6)


def test_torchrun_with_two_processes_trains_like_one_process_with_the_same_global_batch(tmp_path):
    common = [*FAST_RUN, "dataset.generate.num_train=4", "dataset.generate.num_val=2", "trainer.max_steps=2"]
    common += ["optimizer.lr=1e-3", "trainer.device=cpu", f"paths.data_dir={tmp_path / 'data'}"]  # gloo
    common += ["trainer.precision=fp32"]  # the same sums in another order agree to fp32's precision, not bf16's
    runs = {}
    for name, launch, batch in (
        ("single", [sys.executable, "-m", "src.train"], GLOBAL_BATCH),
        ("ddp", [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node=2", "-m",
                 "src.train"], 2),
    ):  # fmt: skip
        folder = tmp_path / name
        args = [*common, f"paths.output_dir={folder / 'outputs'}", f"hydra.run.dir={folder / 'run'}"]
        args.append(f"trainer.batch_size={batch}")
        result = subprocess.run(
            [*launch, *args], cwd=Path(CONFIG_DIR).parent, capture_output=True, text=True, timeout=600
        )
        assert result.returncode == 0, (result.stdout + result.stderr)[-4000:]
        client = MlflowClient(f"sqlite:///{folder / 'outputs' / 'mlflow.db'}")
        (run,) = client.search_runs([client.get_experiment_by_name("synthetic").experiment_id])  # rank 0 alone logs
        history = {key: [(m.step, m.value) for m in client.get_metric_history(run.info.run_id, key)]
                   for key in ("val/dice", "val/miou", "train/loss")}  # fmt: skip
        weights = read_checkpoint(folder / "run" / "checkpoints" / "last.pt")["model"]
        runs[name] = (run, history, weights)
    (single_run, single, single_weights), (ddp_run, ddp, ddp_weights) = runs["single"], runs["ddp"]
    assert ddp_run.data.tags["processes"] == "2" and single_run.data.tags["processes"] == "1"
    assert [step for step, _ in ddp["train/loss"]] == [1, 2]
    assert abs(single["train/loss"][0][1] - single["train/loss"][-1][1]) > 1e-4  # training moved the model
    for key in ("val/dice", "val/miou"):  # validation reduced over both processes' halves of the val set
        assert [s for s, _ in ddp[key]] == [s for s, _ in single[key]] == [0, 2]
        for (_, a), (_, b) in zip(ddp[key], single[key], strict=True):
            assert a == pytest.approx(b, rel=1e-4, abs=1e-6)
    for key, value in single_weights.items():
        torch.testing.assert_close(ddp_weights[key], value, rtol=1e-4, atol=1e-5)
