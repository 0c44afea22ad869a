"""The SID U-Net (Chen et al., CVPR 2018): the network LLPackNet's paper measures itself against.

Built from the published description (summarised in `docs/model-facts.md`) with seeded random
weights: the profiler runs it only for speed, memory, parameters and GMACs, so one run on one
machine shows LLPackNet beside it. Its images mean nothing and are never scored.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

LEVELS = (32, 64, 128, 256, 512)
SEED = 2018


def _double_conv(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, padding=1), nn.LeakyReLU(0.2), nn.Conv2d(cout, cout, 3, padding=1), nn.LeakyReLU(0.2))


class SIDUNet(nn.Module):
    """Packed RGGB [N, 4, H/2, W/2] -> sRGB [N, 3, H, W]; H and W multiples of 32."""

    def __init__(self):
        super().__init__()
        self.down = nn.ModuleList()
        cin = 4
        for width in LEVELS:
            self.down.append(_double_conv(cin, width))
            cin = width
        self.up = nn.ModuleList(nn.ConvTranspose2d(w, w // 2, 2, stride=2) for w in reversed(LEVELS[1:]))
        self.merge = nn.ModuleList(_double_conv(w, w // 2) for w in reversed(LEVELS[1:]))
        self.to_rgb = nn.Conv2d(LEVELS[0], 12, 1)

    def forward(self, packed: torch.Tensor) -> torch.Tensor:
        skips = []
        x = packed
        for index, block in enumerate(self.down):
            x = block(x)
            if index < len(self.down) - 1:
                skips.append(x)
                x = F.max_pool2d(x, 2)
        for up, merge, skip in zip(self.up, self.merge, reversed(skips)):
            x = merge(torch.cat([up(x), skip], dim=1))
        return F.pixel_shuffle(self.to_rgb(x), 2)


def create_sid_unet(seed: int = SEED) -> SIDUNet:
    torch.manual_seed(seed)
    return SIDUNet().eval()


def sid_macs_per_pixel() -> float:
    """Multiply-accumulates per input (Bayer) pixel, counted with hooks on a small input."""
    model = SIDUNet()
    total = 0

    def count(module, inputs, output):
        nonlocal total
        if isinstance(module, nn.ConvTranspose2d):
            total += inputs[0].numel() * module.weight.numel() // module.in_channels
        else:
            total += output.numel() * module.weight[0].numel()

    hooks = [m.register_forward_hook(count) for m in model.modules() if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d))]
    height = width = 64
    with torch.inference_mode():
        model(torch.zeros(1, 4, height // 2, width // 2))
    for hook in hooks:
        hook.remove()
    return total / (height * width)


def pack_2x2(mosaic_rggb, gain: float):
    """SID's input: an RGGB mosaic [H, W] (numpy) -> [1, 4, H/2, W/2] float32 planes R, G1, G2, B, times the gain."""
    import numpy as np

    m = np.asarray(mosaic_rggb, np.float32)
    planes = np.stack([m[0::2, 0::2], m[0::2, 1::2], m[1::2, 0::2], m[1::2, 1::2]])
    return np.ascontiguousarray(planes[None] * np.float32(gain))
