"""Schedules, Schedule-Free's evaluation weights, checkpoint files and MLflow batching."""

import math
import os

import pytest
import schedulefree
import torch

from src.engine.checkpoints import CheckpointDir, find_checkpoint_dir
from src.engine.optimizers import current_lr, eval_weights, is_schedule_free
from src.engine.schedules import Constant, CosineWarmRestarts, WarmupCosine
from src.errors import CheckpointError
from src.tracking.runs import flatten
from src.utils.checkpoint_io import read_checkpoint, torch_save_atomic, weights_file
from src.utils.folders import folder_size
from tests.helpers import mlflow_tracker


def test_warmup_cosine_rises_then_decays_to_the_floor():
    schedule = WarmupCosine(warmup_steps=10, min_lr_ratio=0.1, total_steps=110, steps_per_epoch=11)
    assert schedule(0) == pytest.approx(0.1) and schedule(9) == pytest.approx(1.0)
    assert schedule(10) == pytest.approx(1.0)
    assert schedule(60) == pytest.approx(0.1 + 0.9 * 0.5)
    assert schedule(110) == pytest.approx(0.1)
    assert all(schedule(s) >= schedule(s + 1) for s in range(10, 110))


def test_cyclic_schedule_restarts_every_cycle():
    schedule = CosineWarmRestarts(cycles=5, min_lr_ratio=0.0, warmup_steps=0, total_steps=2000, steps_per_epoch=10)
    assert schedule(0) == pytest.approx(1.0)
    assert schedule(200) == pytest.approx(0.5)
    assert schedule(399) < 0.01
    assert schedule(400) == pytest.approx(1.0)  # restart after 40 epochs of 10 steps
    assert schedule(800) == pytest.approx(1.0)


def test_constant_schedule_only_warms_up():
    schedule = Constant(warmup_steps=4, total_steps=100, steps_per_epoch=10)
    assert [schedule(s) for s in range(6)] == [0.25, 0.5, 0.75, 1.0, 1.0, 1.0]


def test_schedule_free_evaluates_on_its_averaged_weights():
    torch.manual_seed(0)
    model = torch.nn.Linear(4, 1)
    optimizer = schedulefree.AdamWScheduleFree(model.parameters(), lr=0.1, warmup_steps=2)
    assert is_schedule_free(optimizer) and not is_schedule_free(torch.optim.AdamW(model.parameters()))
    optimizer.train()
    for _ in range(5):
        loss = model(torch.randn(8, 4)).pow(2).mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    train_weights = model.weight.detach().clone()
    with eval_weights(optimizer):
        eval_weights_seen = model.weight.detach().clone()
        assert optimizer.param_groups[0]["train_mode"] is False
    # evaluating without the switch would use different (wrong) weights
    assert not torch.allclose(train_weights, eval_weights_seen)
    assert torch.allclose(model.weight, train_weights) and optimizer.param_groups[0]["train_mode"] is True
    assert current_lr(optimizer) == pytest.approx(0.1)  # past its warmup


def test_best_is_a_snapshot_and_last_moves_on(tmp_path):
    ckpt = CheckpointDir(tmp_path / "checkpoints")
    ckpt.save({"model": {"w": torch.ones(2)}, "meta": {"step": 1}}, {"step": 1}, is_best=True)
    ckpt.save({"model": {"w": torch.zeros(2)}, "meta": {"step": 2}}, {"step": 2}, is_best=False)
    assert torch.load(ckpt.best, weights_only=True)["meta"]["step"] == 1
    weights, state = ckpt.load()
    assert weights["meta"]["step"] == 2 and state["step"] == 2
    assert not [p for p in ckpt.directory.iterdir() if p.name.startswith(".")]  # no temp files left
    assert find_checkpoint_dir(tmp_path).directory == ckpt.directory
    assert weights_file(tmp_path) == ckpt.best


def test_weights_and_state_from_different_steps_are_refused(tmp_path):
    ckpt = CheckpointDir(tmp_path)
    ckpt.save({"model": {}, "meta": {"step": 3}}, {"step": 2}, is_best=False)
    with pytest.raises(CheckpointError, match="interrupted while saving"):
        ckpt.load()
    with pytest.raises(CheckpointError, match=r"trainer\.resume"):
        find_checkpoint_dir(tmp_path / "nowhere")


def test_config_is_flattened_into_params():
    flat = flatten({"optimizer": {"lr": 1e-4, "betas": [0.9, 0.99]}, "model": {"name": "tiny", "ckpt": None}})
    assert flat == {
        "optimizer.lr": "0.0001",
        "optimizer.betas": "[0.9, 0.99]",
        "model.name": "tiny",
        "model.ckpt": "None",
    }


def test_metrics_are_sent_in_batches(tmp_path):
    tracker = mlflow_tracker(
        f"sqlite:///{tmp_path / 'mlflow.db'}", "exp", artifact_location=str(tmp_path / "art"), flush_every=50
    )
    run_id = tracker.start("run", {"k": "v"})
    for step in range(10):
        tracker.log_metrics({"a": step, "b": math.sqrt(step)}, step)
    assert tracker.client.get_metric_history(run_id, "a") == []  # still queued: no call per value
    for step in range(10, 25):
        tracker.log_metrics({"a": step, "b": 0.0}, step)
    tracker.sync()
    assert len(tracker.client.get_metric_history(run_id, "a")) == 25  # 50 values reached: one batch sent
    tracker.log_metrics({"a": 99}, 99)
    tracker.finish()
    history = tracker.client.get_metric_history(run_id, "a")
    assert [m.step for m in history][-1] == 99
    run = tracker.client.get_run(run_id)
    assert run.info.status == "FINISHED" and run.data.tags["k"] == "v"
    assert run.info.artifact_uri.startswith((tmp_path / "art").as_uri())


def test_frozen_weights_are_stored_once_and_last_reads_whole(tmp_path):
    """A frozen encoder: last.pt keeps the trained decoder and a checked reference to best.pt's encoder."""
    model = {"encoder.weight": torch.randn(512, 1024), "encoder.norm": torch.ones(1024)}
    model["decoder.weight"] = torch.zeros(64)

    def weights(step: int) -> dict:
        return {"model": {k: v.clone() for k, v in model.items()}, "meta": {"step": step}}

    ckpt = CheckpointDir(tmp_path / "checkpoints")
    ckpt.save(weights(0), {"step": 0}, is_best=True)
    assert os.path.samefile(ckpt.best, ckpt.last)  # one file while last is the best
    model["decoder.weight"] += 0.01  # what training moves; the encoder stays
    ckpt.save(weights(2), {"step": 2}, is_best=False)
    best_bytes, last_bytes = ckpt.best.stat().st_size, ckpt.last.stat().st_size
    assert last_bytes < 0.05 * best_bytes
    assert folder_size(ckpt.directory) < 1.1 * best_bytes  # was best + a full last: twice the encoder
    assert torch.load(ckpt.best, weights_only=True)["meta"]["step"] == 0  # complete, as stock SAM2 reads it
    loaded, state = ckpt.load()
    assert state["step"] == 2 and loaded["meta"] == {"step": 2}
    assert loaded["model"].keys() == model.keys()
    for key, value in model.items():
        assert torch.equal(loaded["model"][key], value), key
    assert torch.equal(read_checkpoint(ckpt.last)["model"]["decoder.weight"], model["decoder.weight"])

    edited = weights(0)
    edited["model"]["encoder.norm"][0] = -1.0
    torch_save_atomic(edited, ckpt.best)  # best.pt replaced by hand: last.pt can no longer be completed
    with pytest.raises(CheckpointError, match=r"last\.pt holds only the weights that changed since .*best\.pt"):
        read_checkpoint(ckpt.last)
