"""Full fine-tuning (trainable image encoder): activation checkpointing saves memory, not correctness."""

from __future__ import annotations

import torch

from src.models.sam2.build import build_sam2_model
from src.models.sam2.model import TRAINABLE_PARTS, Sam2Model

TINY = "configs/sam2.1/sam2.1_hiera_t.yaml"


def gradients(checkpointing: bool) -> tuple[dict[str, torch.Tensor], int]:
    """Encoder gradients of one step, and how often the first Hiera block ran."""
    torch.manual_seed(0)
    model = Sam2Model(build_sam2_model(TINY, 128), TRAINABLE_PARTS, gradient_checkpointing=checkpointing).train()
    calls = []
    model.sam.image_encoder.trunk.blocks[0].attn.register_forward_hook(lambda *_: calls.append(1))
    images = torch.randint(0, 256, (2, 3, 128, 128), dtype=torch.uint8, generator=torch.Generator().manual_seed(1))
    features = model.encode(images)
    points = torch.tensor([[[40.0, 50.0]], [[90.0, 20.0]]])
    out = model.decode(features, torch.arange(2), points, torch.ones(2, 1, dtype=torch.int32), multimask=True)
    (out.low_res_logits.sigmoid().mean() + out.iou_pred.mean()).backward()
    grads = {name: p.grad.clone() for name, p in model.sam.image_encoder.named_parameters() if p.grad is not None}
    return grads, len(calls)


def test_gradient_checkpointing_recomputes_blocks_and_keeps_the_gradients():
    plain, plain_calls = gradients(checkpointing=False)
    checkpointed, checkpointed_calls = gradients(checkpointing=True)
    assert plain_calls == 1 and checkpointed_calls == 2  # the block ran again during backward
    assert plain.keys() == checkpointed.keys() and len(plain) > 100
    for name, grad in plain.items():
        assert torch.allclose(checkpointed[name], grad, rtol=1e-4, atol=1e-6), name
