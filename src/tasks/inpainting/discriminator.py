"""The GAN option's patch discriminator (`discriminator=patch`): real or filled, per patch of the tile.

Every layer is spectrally normalised, which bounds how fast the discriminator's verdict can change
with its input, so the generator gets usable gradients from it. An optional Fourier unit (LaMa's
fast Fourier convolution, its spectral branch) mixes the whole tile at once, so that a texture or a
line that the fill breaks is judged across the hole, not only inside a patch's view.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.parametrizations import spectral_norm


class FourierUnit(nn.Module):
    """x + a 1x1 convolution over the real and imaginary parts of x's 2-D spectrum."""

    def __init__(self, channels: int):
        super().__init__()
        self.conv = spectral_norm(nn.Conv2d(2 * channels, 2 * channels, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[-2:]
        spectrum = torch.fft.rfft2(x.float(), norm="ortho")  # FFTs in float32 (half precision is not general)
        mixed = F.leaky_relu(self.conv(torch.cat([spectrum.real, spectrum.imag], dim=1)), 0.2).float()
        real, imag = mixed.chunk(2, dim=1)
        return x + torch.fft.irfft2(torch.complex(real, imag), s=(h, w), norm="ortho").to(x.dtype)


class PatchDiscriminator(nn.Module):
    """Stride-2 4x4 convolutions, one per entry of `channels`: one logit per patch of 2**len(channels) px."""

    def __init__(self, channels: list[int], fourier: bool):
        super().__init__()
        layers: list[nn.Module] = []
        previous = 3
        for width in channels:
            layers += [spectral_norm(nn.Conv2d(previous, width, 4, stride=2, padding=1)), nn.LeakyReLU(0.2)]
            previous = width
        self.features = nn.Sequential(*layers)
        self.fourier = FourierUnit(previous) if fourier else nn.Identity()
        self.head = spectral_norm(nn.Conv2d(previous, 1, 3, padding=1))

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) in [0, 1] -> (B, 1, H / 2**n, W / 2**n) logits: high for real."""
        return self.head(self.fourier(self.features(image * 2 - 1)))
