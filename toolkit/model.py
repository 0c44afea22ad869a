"""LLPackNet (Lamba, Balaji, Mitra, BMVC 2020) in PyTorch, both published variants.

Module names follow the official state-dict keys (`RDBr`, `RDB1.dense_layers.0.conv`, ...) so an
official checkpoint loads as it is; see `../shared/llpacknet/checkpoint_keys.tsv`. Weight norm of
the 2022 revision is folded into plain convolutions when a checkpoint is loaded (`checkpoint.py`).
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .bayer import HISTOGRAM_EDGES
from .variants import DEFAULT_VARIANT, VARIANTS

BLOCK = 8  # Pack: space-to-depth by 8 inside each colour plane.
AMPLIFIER_FLOOR = 1e-4  # the paper's threshold: gamma <= 0 becomes this


class DenseLayer(nn.Module):
    """3x3 conv without bias + ReLU whose output is appended to the running features."""

    def __init__(self, in_channels: int, growth: int):
        super().__init__()
        self.conv = nn.Conv2d(in_channels, growth, 3, padding=1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.conv(x))


class ResidualDenseBlock(nn.Module):
    """Six dense layers (growth 32), 1x1 fusion back to the input width, plus the input."""

    def __init__(self, channels: int, growth: int = 32, layers: int = 6):
        super().__init__()
        self.dense_layers = nn.ModuleList(DenseLayer(channels + k * growth, growth) for k in range(layers))
        self.conv_1x1 = nn.Conv2d(channels + layers * growth, channels, 1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        features = [x]
        for layer in self.dense_layers:
            features.append(layer(torch.cat(features, dim=1)))
        return x + self.conv_1x1(torch.cat(features, dim=1))


class HistogramAmplifier(nn.Module):
    """Predicts the gain gamma from a 63-bin log histogram of the mosaic (the paper's amplifier)."""

    def __init__(self, bins: int = 63, hidden: int = 128):
        super().__init__()
        self.conv_post = nn.Sequential(nn.Linear(bins, hidden), nn.Linear(hidden, 1))
        self.register_buffer("edges", torch.from_numpy(HISTOGRAM_EDGES.astype(np.float64)), persistent=False)

    def histogram(self, mosaic: torch.Tensor) -> torch.Tensor:
        """[N, 1, H, W] -> [N, 63] fraction of pixels per bin (numpy.histogram edge rules)."""
        # Compare in float64 like numpy.histogram does, so a value on a bin edge lands in the same bin.
        flat = mosaic.reshape(mosaic.shape[0], -1).to(torch.float64)
        edges = self.edges
        bins = edges.numel() - 1
        index = torch.bucketize(flat, edges, right=True) - 1
        index = torch.where(flat == edges[-1], torch.full_like(index, bins - 1), index)
        valid = (index >= 0) & (index < bins)
        counts = torch.zeros(flat.shape[0], bins, dtype=torch.float32, device=flat.device)
        counts.scatter_add_(1, index.clamp(0, bins - 1), valid.to(torch.float32))
        return counts / flat.shape[1]

    def forward_histogram(self, hist: torch.Tensor) -> torch.Tensor:
        gamma = self.conv_post(hist)
        return torch.where(gamma <= 0, torch.full_like(gamma, AMPLIFIER_FLOOR), gamma)

    def forward(self, mosaic: torch.Tensor) -> torch.Tensor:
        """Gain per image, shape [N, 1]."""
        return self.forward_histogram(self.histogram(mosaic))


def pack(mosaic: torch.Tensor) -> torch.Tensor:
    """[N, 1, H, W] RGGB -> [N, 256, H/16, W/16]: planes R, G1, G2, B, each space-to-depth by 8."""
    planes = F.pixel_unshuffle(mosaic, 2)  # channels (0,0)=R, (0,1)=G1, (1,0)=G2, (1,1)=B
    return F.pixel_unshuffle(planes, BLOCK)  # plane-major, then 8*i + j


def unpack(features: torch.Tensor) -> torch.Tensor:
    """[N, 192, h, w] -> [N, 3, 8h, 8w]: channel 3*(8i+j)+k is colour k of pixel (8y+i, 8x+j)."""
    n, c, h, w = features.shape
    colour_major = features.reshape(n, BLOCK * BLOCK, 3, h, w).transpose(1, 2).reshape(n, c, h, w)
    return F.pixel_shuffle(colour_major, BLOCK)


class LLPackNet(nn.Module):
    """Dark Bayer mosaic [N, 1, H, W] in [0, 1] (H, W multiples of 16) -> sRGB [N, 3, H, W]."""

    def __init__(self, variant: str = DEFAULT_VARIANT):
        super().__init__()
        self.config = VARIANTS[variant]
        plane = BLOCK * BLOCK
        if self.config.amplifier:
            self.amplifier = HistogramAmplifier()
        self.RDBr = nn.Conv2d(plane, plane, 3, padding=1)
        self.RDBg1 = nn.Conv2d(plane, plane, 3, padding=1)
        self.RDBg2 = nn.Conv2d(plane, plane, 3, padding=1)
        self.RDBb = nn.Conv2d(plane, plane, 3, padding=1)
        self.before_identity = nn.Conv2d(4 * plane, 64, 1, bias=False)
        self.RDB1 = ResidualDenseBlock(64)
        self.RDB2 = ResidualDenseBlock(64)
        self.RDB3 = ResidualDenseBlock(64)
        self.after_rdb = nn.Conv2d(3 * 64, 64, 1, bias=False)
        self.final = nn.Sequential(
            nn.PixelShuffle(2), ResidualDenseBlock(16), nn.Conv2d(16, 3 * plane, 3, padding=1)
        )

    @property
    def variant(self) -> str:
        return self.config.name

    def gain(self, mosaic: torch.Tensor) -> torch.Tensor:
        """The paper's automatic gamma, [N, 1]; the 2022 variant has none."""
        if not self.config.amplifier:
            raise RuntimeError(f"{self.variant} has no amplifier: multiply the input by the exposure ratio")
        return self.amplifier(mosaic)

    def automatic_gain(self, mosaic: np.ndarray) -> float:
        """The amplifier's gain for one normalised 2-D mosaic (numpy in, float out)."""
        with torch.inference_mode():
            return float(self.gain(torch.from_numpy(np.ascontiguousarray(mosaic))[None, None]).reshape(()))

    def packed_body(self, packed: torch.Tensor, upsample: nn.Module | None = None) -> torch.Tensor:
        """Everything between Pack and UnPack: [N, 256, h, w] (gain applied) -> [N, 192, 2h, 2w].

        This is the part that deployment targets run; Pack, the gain and UnPack are exact data
        movement and scaling done in pre- and post-processing (see `toolkit.bayer`).
        """
        r, g1, g2, b = torch.split(packed, BLOCK * BLOCK, dim=1)
        planes = [F.relu(conv(p)) for conv, p in zip((self.RDBr, self.RDBg1, self.RDBg2, self.RDBb), (r, g1, g2, b))]
        f0 = self.before_identity(torch.cat(planes, dim=1))
        f1 = self.RDB1(f0)
        f2 = self.RDB2(f1)
        f3 = self.RDB3(f2)
        x = self.after_rdb(torch.cat([f1, f2, f3], dim=1)) + f0
        shuffle, block, conv = self.final
        out = conv(block((upsample or shuffle)(x)))
        return torch.sigmoid(out) if self.config.sigmoid else out  # elementwise: commutes with UnPack

    def forward(self, mosaic: torch.Tensor, gain: torch.Tensor | None = None) -> torch.Tensor:
        """`gain` ([N, 1] or scalar) overrides the amplifier, e.g. a known exposure ratio."""
        if gain is None and self.config.amplifier:
            gain = self.gain(mosaic)
        packed = pack(mosaic)
        if gain is not None:
            packed = packed * torch.as_tensor(gain, dtype=packed.dtype, device=packed.device).reshape(-1, 1, 1, 1)
        return unpack(self.packed_body(packed))


def create_model(variant: str = DEFAULT_VARIANT) -> LLPackNet:
    """A freshly initialised network of a named variant (see `VARIANTS`)."""
    if variant not in VARIANTS:
        from .errors import closest_hint

        raise ValueError(f"unknown LLPackNet variant '{variant}' ({closest_hint(variant, VARIANTS)})")
    return LLPackNet(variant)


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def macs_per_pixel() -> float:
    """Multiply-accumulates per input pixel of the convolutional body (amplifier excluded)."""
    model = LLPackNet("llpacknet-2022")
    total = 0
    for module in model.modules():
        if isinstance(module, nn.Conv2d):
            total += module.weight.numel()  # per low-resolution output pixel
    # Everything but the final RDB and conv runs at H/16 x W/16; those run at H/8 x W/8.
    final = sum(m.weight.numel() for m in model.final.modules() if isinstance(m, nn.Conv2d))
    return ((total - final) / 256.0) + final / 64.0


class DepthToSpaceConv(nn.Module):
    """PixelShuffle(r) as a stride-r transposed convolution with one-hot weights.

    The same numbers (every output is one input times 1.0), but converters emit one native
    TRANSPOSE_CONV / ConvolutionBackpropData instead of a 6-D reshape-transpose chain."""

    def __init__(self, channels: int, r: int = 2):
        super().__init__()
        weight = torch.zeros(channels, channels // (r * r), r, r)
        for c in range(channels):  # input channel c = out * r * r + i * r + j, as in pixel_shuffle
            weight[c, c // (r * r), (c % (r * r)) // r, c % r] = 1.0
        self.register_buffer("weight", weight)
        self.r = r

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.conv_transpose2d(x, self.weight, stride=self.r)


class PackedBody(nn.Module):
    """The exportable part of LLPackNet (`LLPackNet.packed_body`) as a module of its own, with the
    inner PixelShuffle as a transposed convolution so exported graphs carry no 6-D transposes."""

    def __init__(self, model: LLPackNet):
        super().__init__()
        self.model = model
        shuffle, block, _ = model.final
        self.upsample = DepthToSpaceConv(block.conv_1x1.out_channels * shuffle.upscale_factor ** 2, shuffle.upscale_factor)

    def forward(self, packed: torch.Tensor) -> torch.Tensor:
        return self.model.packed_body(packed, self.upsample)


def amplifier_affine(model: LLPackNet) -> tuple[list[float], float] | None:
    """The amplifier's two Linear layers collapsed into gain = coefficients . histogram + intercept."""
    if not model.config.amplifier:
        return None
    first, second = model.amplifier.conv_post
    w1, b1 = first.weight.detach().double(), first.bias.detach().double()
    w2, b2 = second.weight.detach().double(), second.bias.detach().double()
    return (w2 @ w1).reshape(-1).tolist(), float(w2 @ b1 + b2)
