"""The GAN option's losses: hinge losses over the hole, and the generator's adaptive adversarial weight.

Only the hole is generated, so only the hole is judged: each of the discriminator's patch logits
counts in proportion to the share of hole in its patch, for the real image and for the filled one
alike. The generator's adversarial term is scaled so that its gradient at the generator's last
layer is as large as the reconstruction loss's (taming-transformers' VQGAN, nunif's GAN trainers),
times a configured weight that warms up linearly from 0: the discriminator is untrained at first.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def hole_weights(mask: torch.Tensor, size: tuple[int, int] | torch.Size) -> torch.Tensor:
    """The share of hole pixels in each patch of a (B, 1, h, w) logit map of `size`."""
    return F.adaptive_avg_pool2d(mask.float(), tuple(size))


def hinge_discriminator_loss(real: torch.Tensor, fake: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """0.5 x (mean relu(1 - real) + mean relu(1 + fake)), each a mean weighted by `weights`."""
    total = weights.sum().clamp_min(1e-8)
    return 0.5 * ((F.relu(1 - real.float()) * weights).sum() + (F.relu(1 + fake.float()) * weights).sum()) / total


def hinge_generator_loss(fake: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """-mean(fake logits), weighted by `weights`: the generator pushes its fill's verdict towards real."""
    return -(fake.float() * weights).sum() / weights.sum().clamp_min(1e-8)


def adaptive_weight(
    reconstruction: torch.Tensor, adversarial: torch.Tensor, last_layer: torch.Tensor, max_weight: float
) -> torch.Tensor:
    """|d reconstruction / d last_layer| / (|d adversarial / d last_layer| + 1e-4), clamped to [0, max_weight]."""
    rec_grad = torch.autograd.grad(reconstruction, last_layer, retain_graph=True)[0]
    adv_grad = torch.autograd.grad(adversarial, last_layer, retain_graph=True)[0]
    return (rec_grad.float().norm() / (adv_grad.float().norm() + 1e-4)).clamp(0, max_weight).detach()


def warmup_factor(step: int, warmup_steps: int) -> float:
    """0 at step 0, rising linearly to 1 at `warmup_steps` (1 throughout with no warmup)."""
    return min(1.0, step / warmup_steps) if warmup_steps > 0 else 1.0
