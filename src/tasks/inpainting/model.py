"""A light inpainting generator: windowed gated-MLP blocks at 1/4 and 1/8 of the image resolution.

The image with its hole blanked and the mask enter as 4 channels, folded into 4x4 patches; a patch
that is hole everywhere carries no information, so its features are replaced by a learned token.
Blocks mix channels with an MLP and space with a learned linear map over the tokens of each
window (gMLP's spatial gating unit, per window, so any image size works). The output keeps the
input outside the hole and takes the prediction inside it.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from src.errors import CheckpointError

PATCH = 4  # the first stage works on 4x4 pixel patches (1/4 resolution)


class ChannelNorm(nn.Module):
    """LayerNorm over the channels of a (B, C, H, W) map."""

    def __init__(self, channels: int):
        super().__init__()
        self.norm = nn.LayerNorm(channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)


class WindowGatedMLP(nn.Module):
    """x + proj(u * spatial(v)), with [u, v] = expand(norm(x)) and `spatial` a linear map per window."""

    def __init__(self, channels: int, expansion: int, window: int):
        super().__init__()
        hidden = channels * expansion
        self.window = window
        self.norm = ChannelNorm(channels)
        self.expand = nn.Conv2d(channels, 2 * hidden, 1)
        self.gate_norm = ChannelNorm(hidden)
        tokens = window * window
        self.spatial = nn.Parameter(torch.zeros(tokens, tokens))  # starts as the identity gate (gMLP)
        self.spatial_bias = nn.Parameter(torch.ones(tokens))
        self.project = nn.Conv2d(hidden, channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        u, v = self.expand(self.norm(x)).chunk(2, dim=1)
        v = self.gate_norm(v)
        b, c, h, w = v.shape
        s = self.window
        pad_h, pad_w = (-h) % s, (-w) % s
        v = F.pad(v, (0, pad_w, 0, pad_h))
        hp, wp = h + pad_h, w + pad_w
        windows = v.view(b, c, hp // s, s, wp // s, s).permute(0, 1, 2, 4, 3, 5).reshape(b, c, -1, s * s)
        windows = windows @ self.spatial.t() + self.spatial_bias
        v = windows.view(b, c, hp // s, wp // s, s, s).permute(0, 1, 2, 4, 3, 5).reshape(b, c, hp, wp)
        return x + self.project(u * v[:, :, :h, :w])


class LightInpaintGenerator(nn.Module):
    def __init__(self, channels: list[int], depths: list[int], expansion: int, window: int):
        super().__init__()
        if len(channels) != 2 or len(depths) != 3:
            raise ValueError("channels: [1/4, 1/8]; depths: [encoder 1/4, middle 1/8, decoder 1/4]")
        c4, c8 = channels
        self.config = {"channels": list(channels), "depths": list(depths), "expansion": expansion, "window": window}
        self.stem = nn.Conv2d(4 * PATCH * PATCH, c4, 1)
        self.masked_token = nn.Parameter(torch.zeros(1, c4, 1, 1))
        self.encoder = nn.Sequential(*(WindowGatedMLP(c4, expansion, window) for _ in range(depths[0])))
        self.down = nn.Conv2d(c4, c8, 2, stride=2)
        self.middle = nn.Sequential(*(WindowGatedMLP(c8, expansion, window) for _ in range(depths[1])))
        self.up = nn.Sequential(nn.Conv2d(c8, c4 * 4, 1), nn.PixelShuffle(2))
        self.decoder = nn.Sequential(*(WindowGatedMLP(c4, expansion, window) for _ in range(depths[2])))
        self.head = nn.Sequential(
            ChannelNorm(c4), nn.Conv2d(c4, 3 * PATCH * PATCH, 3, padding=1), nn.PixelShuffle(PATCH)
        )

    def forward(self, image: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """image (B, 3, H, W) in [0, 1], mask (B, 1, H, W) 1 in the hole -> the filled image."""
        h, w = image.shape[-2:]
        pad_h, pad_w = (-h) % (2 * PATCH), (-w) % (2 * PATCH)
        known = image * (1 - mask)
        x = F.pad(torch.cat([known, mask], dim=1), (0, pad_w, 0, pad_h), mode="replicate")
        patches = F.pixel_unshuffle(x, PATCH)
        full_hole = F.avg_pool2d(F.pad(mask, (0, pad_w, 0, pad_h), mode="replicate"), PATCH) > 1 - 1e-6
        x = torch.where(full_hole, self.masked_token.to(patches.dtype), self.stem(patches))
        skip = self.encoder(x)
        x = self.decoder(skip + self.up(self.middle(self.down(skip))))
        predicted = self.head(x)[:, :, :h, :w] + 0.5  # around mid-grey at the start; losses clamp to [0, 1]
        return known + predicted * mask

    @property
    def last_layer(self) -> torch.Tensor:
        """The weight of the last layer (an adversarial loss is weighed by gradients here)."""
        return self.head[1].weight


GENERATORS = {"light_inpaint": LightInpaintGenerator}  # the keys checkpoint metadata may name


def build_generator(model_cfg: Any) -> LightInpaintGenerator:
    return LightInpaintGenerator(
        list(model_cfg.channels), list(model_cfg.depths), int(model_cfg.expansion), int(model_cfg.window)
    )


def generator_from_meta(meta: dict[str, Any], source: str) -> LightInpaintGenerator:
    """The generator a checkpoint's or export's metadata describes: a registered key and plain numbers."""
    key, config = meta.get("generator"), meta.get("generator_config")
    if key not in GENERATORS or not isinstance(config, dict):
        raise CheckpointError(f"{source}: meta.generator={key!r}; expected one of {list(GENERATORS)} with its config")
    try:
        return GENERATORS[key](
            [int(c) for c in config["channels"]], [int(d) for d in config["depths"]],
            int(config["expansion"]), int(config["window"]),
        )  # fmt: skip
    except (KeyError, TypeError, ValueError) as err:
        raise CheckpointError(f"{source}: meta.generator_config {config!r} does not describe {key} ({err})") from err
