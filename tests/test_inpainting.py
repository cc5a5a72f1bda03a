"""The inpainting task: generator, losses, hard examples, training."""

from __future__ import annotations

import logging

import pytest
import torch

from src.tasks.inpainting.hard_examples import HardExamples
from src.tasks.inpainting.losses import InpaintLoss, hole_l1, lpips_network
from src.tasks.inpainting.metrics import InpaintMeter, hole_lpips_network
from src.tasks.inpainting.model import LightInpaintGenerator, generator_from_meta
from src.tasks.inpainting.task import InpaintingTask
from tests.helpers import from_conf
from tests.inpaint_helpers import INPAINT_RUN, alexnet_weights, logged_metric, output, prepared_samples


def small_generator() -> LightInpaintGenerator:
    torch.manual_seed(0)
    return LightInpaintGenerator([8, 16], [1, 1, 1], 2, 4)


def test_generator_keeps_every_pixel_outside_the_hole():
    generator = small_generator()
    image = torch.rand(2, 3, 37, 53)  # sizes the patches and windows do not divide
    mask = torch.zeros(2, 1, 37, 53)
    mask[:, :, 5:20, 10:40] = 1
    output = generator(image, mask)
    assert output.shape == image.shape
    assert torch.equal(output[(mask == 0).expand_as(image)], image[(mask == 0).expand_as(image)])
    assert not torch.equal(output[(mask == 1).expand_as(image)], image[(mask == 1).expand_as(image)])


def test_patches_that_are_all_hole_take_the_learned_token():
    generator = small_generator()
    image, mask = torch.rand(1, 3, 32, 32), torch.zeros(1, 1, 32, 32)
    mask[:, :, 8:24, 8:24] = 1  # 4x4 patches entirely inside the hole
    before = generator(image, mask)
    with torch.no_grad():
        generator.masked_token.add_(1.0)
    assert not torch.allclose(before, generator(image, mask))
    other = image.clone()
    other[:, :, 8:24, 8:24] = 0.9  # what lies under the hole cannot matter
    assert torch.equal(generator(image, mask), generator(other, mask))


def test_generator_rebuilds_from_checkpoint_metadata():
    generator = small_generator()
    rebuilt = generator_from_meta({"generator": "light_inpaint", "generator_config": generator.config}, "x.pt")
    rebuilt.load_state_dict(generator.state_dict())
    with pytest.raises(Exception, match=r"meta\.generator='os\.system'"):
        generator_from_meta({"generator": "os.system", "generator_config": {}}, "x.pt")


def test_clamped_hole_l1_matches_a_hand_computed_value():
    output = torch.tensor([1.5, 0.2, -0.3, 0.8]).view(1, 1, 2, 2).expand(1, 3, 2, 2)
    target = torch.tensor([1.0, 0.0, 0.1, 0.5]).view(1, 1, 2, 2).expand(1, 3, 2, 2)
    mask = torch.tensor([1.0, 1.0, 1.0, 0.0]).view(1, 1, 2, 2)
    # clamp: 1.0, 0.2, 0.0 against 1.0, 0.0, 0.1 in the hole -> (0 + 0.2 + 0.1) / 3 per channel
    assert float(hole_l1(output, target, mask)) == pytest.approx(0.1)


def test_lpips_is_off_loudly_without_weights(caplog):
    with caplog.at_level(logging.WARNING):
        loss = from_conf(InpaintLoss, "inpaint_loss/l1_lpips")
    assert "LPIPS IS OFF" in caplog.text
    image, mask = torch.rand(1, 3, 16, 16), torch.ones(1, 1, 16, 16)
    terms = loss(image * 0.5, image, mask)
    assert set(terms) == {"l1", "loss"} and torch.equal(terms["loss"], terms["l1"])


def test_l1_plus_weighted_lpips_with_local_alexnet_weights(tmp_path):
    weights = alexnet_weights(tmp_path / "alexnet.pth")
    torch.manual_seed(0)
    loss = from_conf(InpaintLoss, "inpaint_loss/l1_lpips", lpips_weights=str(weights))
    target, mask = torch.rand(2, 3, 64, 64), torch.ones(2, 1, 64, 64)
    output = (target + 0.2 * torch.randn_like(target)).clamp(0, 1)
    terms = loss(output, target, mask)
    lpips = lpips_network(str(weights))(output, target, normalize=True).mean()
    assert float(terms["lpips"]) == pytest.approx(float(lpips)) and float(lpips) > 0
    assert float(terms["loss"]) == pytest.approx(float(hole_l1(output, target, mask)) + 0.4 * float(lpips))
    assert float(loss(target, target, mask)["lpips"]) == pytest.approx(0.0, abs=1e-6)


def test_hole_lpips_grows_with_the_error_in_the_hole_and_is_skipped_without_weights(tmp_path, caplog):
    network = hole_lpips_network(str(alexnet_weights(tmp_path / "alexnet.pth")), "lpips_weights")
    torch.manual_seed(0)
    target, mask = torch.rand(2, 3, 64, 64), torch.zeros(2, 1, 64, 64)
    mask[..., 16:40, 16:40] = 1
    values = []
    for noise in (0.0, 0.1, 0.3):
        meter = InpaintMeter(network)
        meter.add((target + noise * torch.randn_like(target) * mask).clamp(0, 1), target, mask)
        values.append(meter.compute()["hole_lpips"])
    assert values[0] == pytest.approx(0.0, abs=1e-6) and values[0] < values[1] < values[2]
    with caplog.at_level(logging.WARNING):
        assert hole_lpips_network(None, "inpaint_loss.lpips_weights") is None
    assert "hole_lpips is skipped: inpaint_loss.lpips_weights is not set" in caplog.text
    meter = InpaintMeter()
    meter.add(target, target, mask)
    assert "hole_lpips" not in meter.compute()


def test_hard_example_weight_rises_for_a_sample_kept_at_high_loss():
    hard = HardExamples(size=4, ratio=1.0, momentum=0.5)
    start = hard.probabilities()[2].item()
    for _ in range(10):
        hard.update(torch.tensor([0, 1, 2, 3]), torch.tensor([0.05, 0.05, 0.9, 0.05]))
    assert hard.probabilities()[2].item() > 3 * start
    generator = torch.Generator().manual_seed(0)
    picks = [hard.pick(0, generator) for _ in range(200)]
    assert picks.count(2) > 150


def test_model_of_another_task_is_refused(compose_cfg):
    cfg = compose_cfg(["task=inpainting", "model=tiny", "dataset=inpaint"])
    with pytest.raises(Exception, match="model=tiny with task=inpainting"):
        InpaintingTask(cfg, torch.device("cpu"))


def test_short_training_raises_hole_psnr_above_the_untrained_model(tmp_path, train_run):
    root = prepared_samples(tmp_path)
    result = train_run(
        *INPAINT_RUN, f"dataset.root={root}", "trainer.max_epochs=12", "trainer.eval_every_steps=12", fast=False
    )
    assert result.returncode == 0, output(result)[-4000:]
    psnr = logged_metric(result, "hole_psnr")
    assert len(psnr) >= 2 and max(psnr[1:]) > psnr[0] + 1.0, psnr
    assert "LPIPS IS OFF" in output(result)
    assert output(result).count("hole_lpips is skipped") == 1 and "val/hole_lpips" not in output(result)
    assert (tmp_path / "run" / "checkpoints" / "best.pt").is_file()
    assert list((tmp_path / "run" / "samples").glob("step_*.png"))
