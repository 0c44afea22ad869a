"""Image quality metrics in numpy (shared by evaluation, export validation and the profiler)."""
from __future__ import annotations

import numpy as np


def psnr(a: np.ndarray, b: np.ndarray, peak: float = 1.0) -> float:
    """Peak signal-to-noise ratio in dB; identical images give +inf."""
    mse = float(np.mean((np.asarray(a, np.float64) - np.asarray(b, np.float64)) ** 2))
    return float("inf") if mse == 0 else 10.0 * np.log10(peak * peak / mse)


def _box_sum(x: np.ndarray, size: int) -> np.ndarray:
    """Sums over every size x size window fully inside x (valid positions only), per channel."""
    c = np.cumsum(np.cumsum(np.pad(x, ((1, 0), (1, 0)) + ((0, 0),) * (x.ndim - 2)), axis=0), axis=1)
    return c[size:, size:] - c[:-size, size:] - c[size:, :-size] + c[:-size, :-size]


def ssim(a: np.ndarray, b: np.ndarray, data_range: float = 1.0, win: int = 7) -> float:
    """Mean structural similarity with a uniform 7x7 window and sample covariance (scikit-image's
    defaults for `structural_similarity`), averaged over channels; border windows are excluded."""
    x, y = np.asarray(a, np.float64), np.asarray(b, np.float64)
    if x.shape != y.shape or min(x.shape[:2]) < win:
        raise ValueError(f"ssim needs two equal images of at least {win}x{win}")
    n = win * win
    mx, my = _box_sum(x, win) / n, _box_sum(y, win) / n
    cov_norm = n / (n - 1)
    vx = cov_norm * (_box_sum(x * x, win) / n - mx * mx)
    vy = cov_norm * (_box_sum(y * y, win) / n - my * my)
    vxy = cov_norm * (_box_sum(x * y, win) / n - mx * my)
    c1, c2 = (0.01 * data_range) ** 2, (0.03 * data_range) ** 2
    s = ((2 * mx * my + c1) * (2 * vxy + c2)) / ((mx * mx + my * my + c1) * (vx + vy + c2))
    return float(s.mean())
