"""Training losses, by name, so a recipe can list its terms and weights.

No term needs downloaded weights (no VGG). `gradient` compares horizontal and vertical pixel
differences: L1 alone lets a network that cannot place an edge settle on blurring it, which is
what the first default weights did (their output matched the target's 8-pixel blur, not its detail).
"""
from __future__ import annotations

import torch


def l1(output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    return (output - target).abs().mean()


def gradient(output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """L1 between the images' horizontal and vertical differences."""
    dy = (output[..., 1:, :] - output[..., :-1, :]) - (target[..., 1:, :] - target[..., :-1, :])
    dx = (output[..., :, 1:] - output[..., :, :-1]) - (target[..., :, 1:] - target[..., :, :-1])
    return dy.abs().mean() + dx.abs().mean()


def spectrum(output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Mean absolute difference of the 2-D Fourier transforms, per pixel (weights every frequency
    alike, where pixel L1 lets small high-frequency errors hide under large smooth ones)."""
    size = output.shape[-1] * output.shape[-2]
    return (torch.fft.rfft2(output.float()) - torch.fft.rfft2(target.float())).abs().mean() / size ** 0.5


def ssim(output: torch.Tensor, target: torch.Tensor, win: int = 7) -> torch.Tensor:
    """1 - SSIM, with the window, covariance and constants that `toolkit.data.metrics.ssim` scores
    (uniform 7x7, sample covariance, valid windows, images in [0, 1]), so the loss is the score's own
    complement: L1 gives a flat region's small errors the weight of an edge's, SSIM weighs structure."""
    x, y = output.float(), target.float()
    channels, n = x.shape[1], win * win
    # the five local means in one grouped convolution: 1.7x faster than five average pools on a CPU
    window = torch.full((5 * channels, 1, win, win), 1 / n, device=x.device)
    means = torch.nn.functional.conv2d(torch.cat([x, y, x * x, y * y, x * y], 1), window, groups=5 * channels)
    mx, my, mxx, myy, mxy = means.split(channels, 1)
    cov = n / (n - 1)
    vx = cov * (mxx - mx * mx)
    vy = cov * (myy - my * my)
    vxy = cov * (mxy - mx * my)
    c1, c2 = 0.01 ** 2, 0.03 ** 2
    s = ((2 * mx * my + c1) * (2 * vxy + c2)) / ((mx * mx + my * my + c1) * (vx + vy + c2))
    return 1 - s.mean()


def local_mean(output: torch.Tensor, target: torch.Tensor, block: int = 16) -> torch.Tensor:
    """L1 between the images' 16x16 block means. Per-pixel L1 makes each pixel's error median-zero,
    and in a noisy dark region the median of a channel is not its mean, so a flat patch's mean
    colour (a grey's tint) can drift while L1 barely notices; block means weigh that colour directly."""
    pool = torch.nn.functional.avg_pool2d
    return (pool(output.float(), block) - pool(target.float(), block)).abs().mean()


LOSSES = {"l1": l1, "gradient": gradient, "spectrum": spectrum, "ssim": ssim, "local_mean": local_mean}


def combined_loss(terms: tuple[tuple[str, float], ...], output: torch.Tensor, target: torch.Tensor) -> tuple[torch.Tensor, dict]:
    """The weighted sum of the named terms, and each term's value (for the log)."""
    values = {name: LOSSES[name](output, target) for name, _ in terms}
    total = sum(weight * values[name] for name, weight in terms)
    return total, {name: float(v.detach()) for name, v in values.items()}
