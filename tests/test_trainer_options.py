"""Trainer options end to end: Schedule-Free, gradient accumulation, early stopping, cyclic lr."""

import pytest
import torch
from mlflow.tracking import MlflowClient


def history(tmp_path, key: str) -> list[tuple[int, float]]:
    client = MlflowClient(f"sqlite:///{tmp_path / 'outputs' / 'mlflow.db'}")
    (run,) = client.search_runs([client.get_experiment_by_name("synthetic").experiment_id])
    return [(m.step, m.value) for m in client.get_metric_history(run.info.run_id, key)]


def check(result) -> str:
    text = result.stdout + result.stderr
    assert result.returncode == 0, text[-4000:]
    return text


def test_schedule_free_runs_at_a_fixed_lr_and_saves_its_evaluation_weights(train_run, tmp_path):
    text = check(train_run("optimizer=schedulefree", "optimizer.lr=1e-3", "optimizer.warmup_steps=2",
                           "trainer.max_steps=4"))  # fmt: skip
    assert "trainer.scheduler is not used" in text
    assert [round(v, 8) for _, v in history(tmp_path, "train/lr")] == [5e-4, 1e-3, 1e-3, 1e-3]
    state = torch.load(tmp_path / "run" / "checkpoints" / "last_state.pt", weights_only=True)
    # written in eval mode: the weights beside it are the averaged ones Schedule-Free evaluates
    assert all(group["train_mode"] is False for group in state["optimizer"]["param_groups"])
    assert state["scheduler"] is None
    resumed = check(train_run("optimizer=schedulefree", "optimizer.lr=1e-3", "optimizer.warmup_steps=2",
                              "trainer.max_steps=6"))  # fmt: skip
    assert "resuming from" in resumed
    assert [step for step, _ in history(tmp_path, "train/lr")] == [1, 2, 3, 4, 5, 6]


def test_gradient_accumulation_takes_one_step_per_k_batches(train_run, tmp_path):
    # 8 training images in batches of 2 = 4 micro-batches per epoch -> 2 optimizer steps
    check(train_run("trainer.accumulate_grad_batches=2", "trainer.max_epochs=1", "trainer.eval_every_steps=null"))
    assert [step for step, _ in history(tmp_path, "train/loss")] == [1, 2]
    assert torch.load(tmp_path / "run" / "checkpoints" / "last_state.pt", weights_only=True)["step"] == 2


def test_early_stopping_ends_a_run_that_stopped_improving(train_run, tmp_path):
    # lr 0 cannot improve the model: the step-0 evaluation is the best, the next one is stale
    text = check(train_run("optimizer.lr=0", "trainer.max_steps=20", "trainer.early_stopping.patience=1"))
    assert "early stopping: val/miou did not improve for 1 evaluations" in text
    assert [step for step, _ in history(tmp_path, "val/miou")] == [0, 2]
    assert "training never improved on the starting weights" in text
    assert torch.load(tmp_path / "run" / "checkpoints" / "best.pt", weights_only=True)["meta"]["step"] == 0


def test_cyclic_trainer_restarts_its_learning_rate(train_run, tmp_path):
    # 8 images, batch 2: 4 steps per epoch; two cycles over two epochs: a restart every epoch
    check(train_run("trainer=cyclic", "trainer.max_epochs=2", "trainer.scheduler.cycles=2", "optimizer.lr=1e-3"))
    lrs = [v for _, v in history(tmp_path, "train/lr")]
    assert len(lrs) == 8
    assert lrs[3] < lrs[0] and lrs[4] == pytest.approx(1e-3) and lrs[7] < lrs[4]


def test_a_time_budget_that_cuts_the_schedule_says_so(train_run, tmp_path):
    text = check(train_run("trainer.max_time=1", "trainer.max_steps=50", "optimizer.lr=1e-3"))
    assert "time budget trainer.max_time=1s used" in text
    assert "with the schedule cut where it stood" in text and "set trainer.max_steps=" in text
