"""Losses against values computed by hand from their formulas."""

import math

import pytest
import torch

from src.tasks.segmentation.losses import MaskLoss, bce_loss, dice_loss, mask_iou, sigmoid_focal_loss


def sigmoid(x: float) -> float:
    return 1 / (1 + math.exp(-x))


# one mask of four pixels: logits and target
LOGITS = [2.0, -1.0, 0.5, -3.0]
TARGET = [1.0, 0.0, 0.0, 1.0]


def as_mask(values):
    return torch.tensor(values).reshape(1, 1, 2, 2)


def test_focal_loss_matches_hand_computation():
    expected = 0.0
    for x, t in zip(LOGITS, TARGET, strict=True):
        p = sigmoid(x)
        ce = -math.log(p) if t else -math.log(1 - p)
        p_t = p if t else 1 - p
        alpha_t = 0.25 if t else 0.75
        expected += alpha_t * ce * (1 - p_t) ** 2
    expected /= 4
    got = sigmoid_focal_loss(as_mask(LOGITS), as_mask(TARGET), alpha=0.25, gamma=2.0)
    assert got.shape == (1, 1)
    assert got.item() == pytest.approx(expected, rel=1e-6)


def test_dice_loss_matches_hand_computation():
    probs = [sigmoid(x) for x in LOGITS]
    inter = sum(p * t for p, t in zip(probs, TARGET, strict=True))
    expected = 1 - (2 * inter + 1) / (sum(probs) + sum(TARGET) + 1)
    assert dice_loss(as_mask(LOGITS), as_mask(TARGET)).item() == pytest.approx(expected, rel=1e-6)


def test_bce_matches_seed_001_formula():
    # seed 001: -gt*log(p) - (1-gt)*log(1-p), averaged over pixels
    expected = (
        sum(
            -(t * math.log(sigmoid(x)) + (1 - t) * math.log(1 - sigmoid(x)))
            for x, t in zip(LOGITS, TARGET, strict=True)
        )
        / 4
    )
    assert bce_loss(as_mask(LOGITS), as_mask(TARGET)).item() == pytest.approx(expected, rel=1e-6)


def test_mask_iou_counts_pixels():
    pred = torch.tensor([[1, 1, 0, 0]], dtype=torch.bool).reshape(1, 2, 2)
    gt = torch.tensor([[1, 0, 1, 0]], dtype=torch.bool).reshape(1, 2, 2)
    assert mask_iou(pred, gt).item() == pytest.approx(1 / 3)
    assert mask_iou(torch.zeros(1, 2, 2, dtype=torch.bool), torch.zeros(1, 2, 2, dtype=torch.bool)).item() == 1.0


def test_bce_iou_total_is_bce_plus_005_iou_error():
    loss = MaskLoss(bce_weight=1.0, iou_weight=0.05)
    logits = as_mask(LOGITS)
    target = torch.tensor(TARGET, dtype=torch.bool).reshape(1, 2, 2)
    iou_pred = torch.tensor([[0.9]])
    out = loss(logits, iou_pred, target)
    true_iou = 1 / 3  # predicted pixels {0, 2} (logit > 0) vs target {0, 3}
    assert out["iou"].item() == pytest.approx(abs(0.9 - true_iou), rel=1e-6)
    assert out["loss"].item() == pytest.approx(out["bce"].item() + 0.05 * out["iou"].item(), rel=1e-6)
    assert set(out) == {"loss", "bce", "iou"}


def test_multimask_backpropagates_mask_terms_through_best_candidate_only():
    loss = MaskLoss(focal_weight=20.0, dice_weight=1.0, iou_weight=1.0)
    target = torch.zeros(1, 8, 8, dtype=torch.bool)
    target[0, 2:6, 2:6] = True
    perfect = torch.where(target, 10.0, -10.0)[0]
    logits = torch.stack([-perfect, perfect, torch.zeros(8, 8)])[None].clone().requires_grad_(True)
    iou_pred = torch.tensor([[0.3, 0.5, 0.7]], requires_grad=True)
    out = loss(logits, iou_pred, target)
    # the mask terms are those of candidate 1, the perfect one
    assert out["focal"].item() == pytest.approx(sigmoid_focal_loss(logits[:, 1:2], target[:, None].float()).item())
    assert out["dice"].item() < 0.01
    out["loss"].backward()
    grads = logits.grad.abs().flatten(2).sum(-1)[0]
    assert grads[0] == 0 and grads[2] == 0 and grads[1] > 0
    # the IoU head learns from all three candidates: true IoUs 0, 1 and 0 (an all-zero logit map is empty)
    assert out["iou"].item() == pytest.approx((0.3 + 0.5 + 0.7) / 3, rel=1e-6)
    assert (iou_pred.grad != 0).all()


def test_a_loss_needs_a_mask_term():
    from src.errors import ConfigError

    with pytest.raises(ConfigError, match="at least one"):
        MaskLoss(iou_weight=1.0)
