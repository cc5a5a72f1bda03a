"""Inpainting as a GAN: hinge losses over the hole, the adaptive weight, and two optimizers through the trainer
(resume to identical weights, hard-example losses kept, a checkpoint per epoch, pictures between validations)."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from hydra.utils import instantiate
from mlflow.tracking import MlflowClient

from src.engine.trainer import Trainer
from src.tasks.inpainting import adversarial as gan
from src.tasks.inpainting.discriminator import PatchDiscriminator
from src.tasks.inpainting.model import generator_from_meta
from src.tasks.inpainting.task import InpaintingTask
from src.utils.seeding import seed_everything
from tests.helpers import compose_config
from tests.inpaint_helpers import INPAINT_RUN

GAN_RUN = [
    *INPAINT_RUN,
    "discriminator=patch",
    "discriminator.network.channels=[8,16]",
    "discriminator.adversarial.warmup_steps=2",
    "trainer=constant",  # a schedule that does not depend on trainer.max_steps, which the resumed run raises
    "trainer.eval_every_steps=2",
    "trainer.eval_at_start=false",
    "trainer.save_every_epoch=true",
    "trainer.picture_every_steps=2",
    "logger.system_metrics=false",
    "logger.log_checkpoint=false",
]


def test_hinge_losses_count_each_patch_by_its_share_of_hole():
    mask = torch.zeros(1, 1, 4, 4)
    mask[..., :2, :2] = 1  # the top-left patch all hole
    mask[..., 0, 2] = 1  # a quarter of the top-right patch
    weights = gan.hole_weights(mask, (2, 2))
    assert weights.flatten().tolist() == [1.0, 0.25, 0.0, 0.0]
    real = torch.tensor([[[[0.5, 2.0], [-3.0, -3.0]]]])  # the bottom patches (no hole) do not count
    fake = torch.tensor([[[[0.0, -0.5], [9.0, 9.0]]]])
    d_loss = gan.hinge_discriminator_loss(real, fake, weights)
    # real: relu(1 - 0.5) = 0.5 at weight 1, relu(1 - 2) = 0; fake: relu(1 + 0) = 1 at 1, relu(1 - 0.5) = 0.5 at 0.25
    assert float(d_loss) == pytest.approx(0.5 * (0.5 + 1.0 + 0.25 * 0.5) / 1.25)
    assert float(gan.hinge_generator_loss(fake, weights)) == pytest.approx(-(0.0 + 0.25 * -0.5) / 1.25)


def test_adaptive_weight_is_the_ratio_of_gradient_norms_at_the_last_layer():
    torch.manual_seed(0)
    layer = torch.nn.Linear(3, 2)
    x = torch.randn(5, 3)
    out = layer(x)
    reconstruction, adversarial = out.pow(2).mean(), -out[:, 0].mean()
    # by hand: d/dW of mean(out^2) = 2/(5*2) * out^T x; of -mean(out[:, 0]) = -1/5 x summed into row 0
    rec_grad = (2 / 10) * out.detach().t() @ x
    adv_grad = torch.zeros(2, 3)
    adv_grad[0] = -x.sum(0) / 5
    expected = rec_grad.norm() / (adv_grad.norm() + 1e-4)
    weight = gan.adaptive_weight(reconstruction, adversarial, layer.weight, max_weight=1e4)
    assert float(weight) == pytest.approx(float(expected), rel=1e-5)
    assert float(gan.adaptive_weight(reconstruction, adversarial, layer.weight, max_weight=0.01)) == pytest.approx(0.01)
    assert [gan.warmup_factor(step, 4) for step in (0, 2, 4, 9)] == [0.0, 0.5, 1.0, 1.0]


def test_patch_discriminator_gives_one_logit_per_patch():
    discriminator = PatchDiscriminator([4, 8, 8], fourier=True)
    assert discriminator(torch.rand(2, 3, 40, 64)).shape == (2, 1, 5, 8)


def smooth_samples(root: Path, counts: dict[str, int], size: int = 80) -> Path:
    """Prepared-sample pairs (`_C.png`, `_M.png`) of blurred colour fields with a box hole each."""
    rng = np.random.default_rng(0)
    for split, count in counts.items():
        (root / split).mkdir(parents=True)
        for index in range(count):
            image = cv2.GaussianBlur((rng.random((size, size, 3)) * 255).astype(np.float32), (0, 0), 10)
            image = (image - image.min()) / max(float(np.ptp(image)), 1e-6) * 255
            mask = np.zeros((size, size), np.uint8)
            y, x = rng.integers(0, size - 40, 2)
            mask[y : y + 40, x : x + 40] = 255
            cv2.imwrite(str(root / split / f"t_box_{index:06d}_C.png"), image.astype(np.uint8))
            cv2.imwrite(str(root / split / f"t_box_{index:06d}_M.png"), mask)
    return root


def train(tmp: Path, root: Path, name: str, *overrides: str) -> Trainer:
    """One in-process `python -m src.train` run of GAN_RUN in tmp/name (resumed when it holds a checkpoint)."""
    cfg = compose_config(
        "train",
        [*GAN_RUN, f"dataset.root={root}", f"paths.run_dir={tmp / name}", f"paths.output_dir={tmp / 'outputs'}",
         f"paths.cache_dir={tmp / 'cache'}", *overrides],
    )  # fmt: skip
    (tmp / name).mkdir(exist_ok=True)  # as Hydra makes it
    seed_everything(int(cfg.trainer.seed))
    device = torch.device("cpu")
    trainer = Trainer(cfg, InpaintingTask(cfg, device), instantiate(cfg.logger), tmp / name, device, None)
    trainer.fit(name, {})
    return trainer


def test_a_resumed_gan_run_ends_with_the_weights_and_hard_examples_of_an_uninterrupted_one(tmp_path):
    root = smooth_samples(tmp_path / "data", {"train": 10, "eval": 2})  # 3 steps of 4 tiles per epoch
    straight = train(tmp_path, root, "straight", "trainer.max_steps=6")
    train(tmp_path, root, "resumed", "trainer.max_steps=2")  # stops inside the first epoch
    resumed = train(tmp_path, root, "resumed", "trainer.max_steps=6")
    assert resumed.resume_changes == "trainer.max_steps: 2 -> 6"

    def final(name: str) -> tuple[dict, dict]:
        folder = tmp_path / name / "checkpoints"
        return tuple(torch.load(folder / name, weights_only=True) for name in ("last.pt", "last_state.pt"))

    (weights, state), (resumed_weights, resumed_state) = final("straight"), final("resumed")
    assert state["step"] == resumed_state["step"] == 6
    for key, value in weights["model"].items():  # the generator
        assert torch.equal(resumed_weights["model"][key], value), key
    discriminator, resumed_discriminator = (s["parts"]["discriminator"] for s in (state, resumed_state))
    for key, value in discriminator["module"].items():
        assert torch.equal(resumed_discriminator["module"][key], value), key
    # its own optimizer and schedule: discriminator.optimizer.lr in trainer=constant's 10-step warmup
    assert resumed_discriminator["scheduler"]["last_epoch"] == 6
    assert resumed_discriminator["optimizer"]["param_groups"][0]["lr"] == pytest.approx(1e-4 * 7 / 10)
    losses = state["task"]["hard_examples"]["losses"]
    assert not torch.equal(losses, torch.ones(10))  # learnt from the losses seen, then restored on resume
    assert torch.equal(resumed_state["task"]["hard_examples"]["losses"], losses)
    assert torch.equal(resumed.task.hard.losses, losses)

    # seed 003's --save-epoch: one weights file per epoch, loadable as best.pt is; the last is the final weights
    for name in ("straight", "resumed"):
        assert sorted(p.name for p in (tmp_path / name / "checkpoints").glob("epoch_*.pt")) == [
            "epoch_001.pt", "epoch_002.pt",
        ]  # fmt: skip
    epoch = torch.load(tmp_path / "straight" / "checkpoints" / "epoch_002.pt", weights_only=True)
    assert epoch["meta"]["epoch"] == 2 and epoch["meta"]["step"] == 6
    generator_from_meta(epoch["meta"], "epoch_002.pt").load_state_dict(epoch["model"])
    assert all(torch.equal(epoch["model"][key], value) for key, value in weights["model"].items())

    # --save-eval-step: the task's picture every 2 steps; the GAN's terms in MLflow
    assert sorted(p.name for p in (tmp_path / "straight" / "pictures").iterdir()) == [
        "step_000002.png", "step_000004.png", "step_000006.png",
    ]  # fmt: skip
    client = MlflowClient(f"sqlite:///{tmp_path / 'outputs' / 'mlflow.db'}")
    run_id = straight.tracker.run_id
    assert [a.path for a in client.list_artifacts(run_id, "pictures")] == [
        f"pictures/step_00000{step}.png" for step in (2, 4, 6)
    ]
    ratio = [m.value for m in client.get_metric_history(run_id, "train/adaptive_weight")]
    applied = [m.value for m in client.get_metric_history(run_id, "train/adv_weight")]
    assert len(ratio) == 6 and all(r > 0 for r in ratio)
    assert applied[0] == 0.0 and applied[-1] == pytest.approx(0.1 * ratio[-1])  # warmed up over 2 steps
    for key in ("train/d_loss", "train/g_adv", "train/lr_discriminator", "train/grad_norm_discriminator"):
        assert client.get_metric_history(run_id, key), key
