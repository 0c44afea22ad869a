"""LLPackNet (Lamba, Balaji, Mitra, BMVC 2020) in PyTorch, both published variants.

Module names follow the official state-dict keys (`RDBr`, `RDB1.dense_layers.0.conv`, ...) so an
official checkpoint loads as it is; see `docs/model-facts.md`. Weight norm of
the 2022 revision is folded into plain convolutions when a checkpoint is loaded (`checkpoint.py`).
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from toolkit.camera.bayer import HISTOGRAM_EDGES, mosaic_histogram

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

    def forward_lean(self, x: torch.Tensor) -> torch.Tensor:
        """`forward`'s numbers for inference, without its growing concatenations: every layer writes
        into one preallocated buffer (a channel slice of a batch-1 tensor is contiguous), so the block
        holds one copy of its features instead of one per layer. Export traces `forward`."""
        channels = x.shape[1]
        growth = self.dense_layers[0].conv.out_channels
        features = x.new_empty((x.shape[0], channels + growth * len(self.dense_layers), *x.shape[2:]))
        features[:, :channels] = x
        for layer in self.dense_layers:
            features[:, channels : channels + growth] = layer(features[:, :channels])
            channels += growth
        return x + self.conv_1x1(features)


def _conv_rows(conv: nn.Conv2d, x: torch.Tensor, a: int, b: int, zero_above: bool, zero_below: bool) -> torch.Tensor:
    """A 3x3 convolution's output rows [a, b) of `x`: it reads rows a - 1 .. b, and where those fall
    off the image (`zero_above` / `zero_below` at a border, out of `x` otherwise) it reads zeros, as
    the whole-image convolution's padding does."""
    lo, hi = max(a - 1, 0), min(b + 1, x.shape[2])
    part = x[:, :, lo:hi]
    pad_top, pad_bottom = lo - (a - 1), (b + 1) - hi
    if pad_top or pad_bottom:
        if (pad_top and not zero_above) or (pad_bottom and not zero_below):
            raise ValueError("rows outside the given input are only zero at the image's borders")
        part = F.pad(part, (0, 0, pad_top, pad_bottom))
    return F.conv2d(part, conv.weight, conv.bias, padding=(0, 1))


def _chain(blocks: list[ResidualDenseBlock], x: torch.Tensor, lean: bool) -> list[torch.Tensor]:
    """Each block's output, each fed to the next."""
    outputs = []
    for block in blocks:
        x = block.forward_lean(x) if lean else block(x)
        outputs.append(x)
    return outputs


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
        self._require_amplifier()
        return self.amplifier(mosaic)

    def _require_amplifier(self) -> None:
        if not self.config.amplifier:
            raise RuntimeError(f"{self.variant} has no amplifier: multiply the input by the exposure ratio")

    @property
    def plane_convs(self) -> tuple[nn.Conv2d, ...]:
        """The per-plane 3x3 convolutions of R, G1, G2, B, in packed-channel order."""
        return self.RDBr, self.RDBg1, self.RDBg2, self.RDBb

    def automatic_gain(self, mosaic, white_balance=None) -> float:
        """The amplifier's gain for one normalised mosaic (numpy in, float out), from its histogram
        over `HISTOGRAM_EDGES` (numpy's rules, as `gain` counts them). `mosaic`: a 2-D array, or a
        `Mosaic` (whose reader may have counted its levels already); `white_balance`: the (R, G, B)
        gains it is multiplied by first, for weights that expect white-balanced input."""
        self._require_amplifier()
        counts, size = mosaic_histogram(mosaic, HISTOGRAM_EDGES, white_balance)
        with torch.inference_mode():
            hist = torch.from_numpy(np.asarray(counts, np.float32))[None] / size
            return float(self.amplifier.forward_histogram(hist).reshape(()))

    def packed_body(self, packed: torch.Tensor, upsample: nn.Module | None = None, lean: bool = False) -> torch.Tensor:
        """Everything between Pack and UnPack: [N, 256, h, w] (gain applied) -> [N, 192, 2h, 2w].

        This is the part that deployment targets run; Pack, the gain and UnPack are exact data
        movement and scaling done in pre- and post-processing (see `toolkit.camera.bayer`). `lean` runs the
        dense blocks without concatenation copies (same numbers, for inference; export traces the default).
        """
        return self.head(self.trunk(packed, lean), upsample, lean)

    def trunk(self, packed: torch.Tensor, lean: bool = False) -> torch.Tensor:
        """The low-resolution part: packed input [N, 256, h, w] -> features [N, 64, h, w]. Its reach is
        19 cells and its output small (256 bytes a cell), so tiled inference keeps it for the whole photo."""
        r, g1, g2, b = torch.split(packed, BLOCK * BLOCK, dim=1)
        planes = [F.relu(conv(p)) for conv, p in zip(self.plane_convs, (r, g1, g2, b))]
        f0 = self.before_identity(torch.cat(planes, dim=1))
        del planes
        blocks = [self.RDB1, self.RDB2, self.RDB3]
        f1, f2, f3 = _chain(blocks, f0, lean)
        return self.after_rdb(torch.cat([f1, f2, f3], dim=1)) + f0

    def trunk_by_rows(self, packed_rows, height: int, step: int = 16) -> torch.Tensor:
        """`trunk` computed layer by layer in strips of `step` rows: the same numbers (each 3x3 layer
        reads one row above and below its strip, zero at the borders), nothing computed twice, and
        every layer's working set small enough to stay in cache: faster than one whole-image call,
        with only 512 bytes a cell held for the photo. `packed_rows(r0, r1)` gives the packed input's
        rows [r0, r1) as [1, 256, r1 - r0, w], so the input is never built whole."""
        spans = [(a, min(a + step, height)) for a in range(0, height, step)]
        first = packed_rows(0, min(step, height))
        width = first.shape[3]
        f0 = first.new_empty((1, 64, height, width))
        for a, b in spans:
            lo, hi = max(a - 1, 0), min(b + 1, height)
            rows = packed_rows(lo, hi)
            parts = [F.relu(_conv_rows(conv, rows[:, BLOCK * BLOCK * i : BLOCK * BLOCK * (i + 1)], a - lo, b - lo, a == 0, b == height))
                     for i, conv in enumerate(self.plane_convs)]
            f0[:, :, a:b] = self.before_identity(torch.cat(parts, dim=1))
        growth = self.RDB1.dense_layers[0].conv.out_channels
        blocks = (self.RDB1, self.RDB2, self.RDB3)
        outputs = f0.new_empty((1, 64 * len(blocks), height, width))  # f1, f2, f3: what after_rdb reads
        features = f0.new_empty((1, 64 + growth * len(self.RDB1.dense_layers), height, width))
        previous = f0
        for k, block in enumerate(blocks):
            features[:, :64] = previous
            channels = 64
            for layer in block.dense_layers:
                for a, b in spans:
                    features[:, channels : channels + growth, a:b] = F.relu(
                        _conv_rows(layer.conv, features[:, :channels], a, b, True, True))
                channels += growth
            for a, b in spans:
                outputs[:, 64 * k : 64 * (k + 1), a:b] = previous[:, :, a:b] + block.conv_1x1(features[:, :, a:b])
            previous = outputs[:, 64 * k : 64 * (k + 1)]
        del features
        for a, b in spans:  # x = after_rdb(f1, f2, f3) + f0, written over f0 row by row
            f0[:, :, a:b] = self.after_rdb(outputs[:, :, a:b]) + f0[:, :, a:b]
        return f0

    def head(self, x: torch.Tensor, upsample: nn.Module | None = None, lean: bool = False) -> torch.Tensor:
        """The part at twice the cell resolution: [N, 64, h, w] -> [N, 192, 2h, 2w] (UnPack's input).
        Its reach is 7 of its own rows (3.5 cells), so it can be cut into strips exactly."""
        shuffle, block, conv = self.final
        (features,) = _chain([block], (upsample or shuffle)(x), lean)
        out = conv(features)
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
        from toolkit.errors import closest_hint

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
