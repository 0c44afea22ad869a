"""Synthetic extreme low-light RAW pairs: unprocess sRGB, then add Sony A7S2 sensor noise.

Follows the recipe summarised, with its sources, in `docs/model-facts.md`: Brooks et al. (CVPR 2019)
unprocessing and the ELD noise model (Wei et al., CVPR 2020). Everything is numpy and takes an
explicit `numpy.random.Generator`, so a seed fixes every sample bit for bit.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from toolkit.camera.colour import SONY_A7S2_XYZ_TO_CAM

SRGB_TO_XYZ = np.array(
    [[0.4124564, 0.3575761, 0.1804375], [0.2126729, 0.7151522, 0.0721750], [0.0193339, 0.1191920, 0.9503041]]
)
RATIOS = (100, 250, 300)  # the SID exposure ratios


@dataclass(frozen=True)
class SensorProfile:
    """Noise and level parameters of a RAW sensor (defaults: Sony A7S II, from ELD)."""

    name: str = "sony-a7s2"
    black_level: int = 512
    white_level: int = 16383
    gain_range: tuple[float, float] = (0.094, 6.01)  # system gain K, sampled log-uniformly
    tukey_read: tuple[float, float, float] = (0.462, 0.566, 0.263)  # slope, bias, sigma of log(scale)
    tukey_lambda: tuple[float, float] = (-0.14, 0.13)
    row_noise: tuple[float, float, float] = (0.528, -0.592, 0.294)
    xyz_to_cam: np.ndarray = field(default_factory=lambda: SONY_A7S2_XYZ_TO_CAM.copy(), compare=False)

    def srgb_to_cam(self) -> np.ndarray:
        """Linear sRGB -> camera RGB, rows normalised to 1 so white stays white (Brooks et al.)."""
        return srgb_to_cam(self.xyz_to_cam)


def srgb_to_cam(xyz_to_cam: np.ndarray) -> np.ndarray:
    """Linear sRGB -> a camera's RGB, rows normalised to 1 so white stays white (Brooks et al.)."""
    m = np.asarray(xyz_to_cam, np.float64) @ SRGB_TO_XYZ
    return m / m.sum(axis=1, keepdims=True)


A7S2 = SensorProfile()


# ---------------------------------------------------------------- image sources
def dead_leaves(size: tuple[int, int], rng: np.random.Generator, r_min: float = 2.0, r_max: float = 120.0) -> np.ndarray:
    """A dead-leaves image (occluding discs, radii with density ~ r^-3): natural-image statistics.

    Discs are painted front to back until every pixel is covered; each disc gets a colour and a
    gentle linear shading so the scene is not piecewise flat. Returns sRGB float32 H x W x 3.
    """
    height, width = size
    image = np.zeros((height, width, 3), np.float32)
    covered = np.zeros((height, width), bool)
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    remaining = height * width
    # Inverse-CDF sampling of p(r) ~ r^-3 on [r_min, r_max].
    a, b = r_min ** -2, r_max ** -2
    for _ in range(20000):
        if remaining == 0:
            break
        r = (a - rng.random() * (a - b)) ** -0.5
        cy, cx = rng.uniform(-r, height + r), rng.uniform(-r, width + r)
        y0, y1 = max(int(cy - r), 0), min(int(cy + r) + 1, height)
        x0, x1 = max(int(cx - r), 0), min(int(cx + r) + 1, width)
        if y0 >= y1 or x0 >= x1:
            continue
        dy, dx = yy[y0:y1, x0:x1] - cy, xx[y0:y1, x0:x1] - cx
        inside = (dy * dy + dx * dx <= r * r) & ~covered[y0:y1, x0:x1]
        count = int(inside.sum())
        if not count:
            continue
        base = rng.random(3) ** 1.6  # sRGB colours leaning dark, as in natural scenes
        slope = rng.normal(0, 0.25, 2) / max(r, 1.0)
        shade = np.clip(1.0 + slope[0] * dy[inside] + slope[1] * dx[inside], 0.4, 1.6)
        image[y0:y1, x0:x1][inside] = np.clip(base[None, :] * shade[:, None], 0, 1)
        covered[y0:y1, x0:x1] |= inside
        remaining -= count
    if remaining:
        image[~covered] = rng.random(3)
    return image


# ---------------------------------------------------------------- unprocessing
def inverse_tone(srgb: np.ndarray) -> np.ndarray:
    """Invert the smoothstep tone curve 3x^2 - 2x^3."""
    y = np.clip(srgb, 0.0, 1.0)
    return 0.5 - np.sin(np.arcsin(1.0 - 2.0 * y) / 3.0)


def gamma_expand(x: np.ndarray) -> np.ndarray:
    return np.maximum(x, 1e-8) ** 2.2


@dataclass(frozen=True)
class UnprocessParams:
    red_gain: float
    blue_gain: float
    brightness_gain: float

    @classmethod
    def sample(cls, rng: np.random.Generator) -> "UnprocessParams":
        return cls(
            red_gain=float(rng.uniform(1.9, 2.4)),
            blue_gain=float(rng.uniform(1.5, 1.9)),
            brightness_gain=float(1.0 / max(rng.normal(0.8, 0.1), 0.3)),
        )

    @classmethod
    def sample_wide(cls, rng: np.random.Generator, red: tuple[float, float] = (1.0, 3.2),
                    blue: tuple[float, float] = (1.1, 3.6)) -> "UnprocessParams":
        """White balances from sodium and tungsten light (red gain near 1, blue near 3) to shade
        (red near 3), log-uniform: for training on white-balanced input, where the gains matter
        only through the noise they amplify in each channel."""
        return cls(
            red_gain=float(np.exp(rng.uniform(*np.log(red)))),
            blue_gain=float(np.exp(rng.uniform(*np.log(blue)))),
            brightness_gain=float(1.0 / max(rng.normal(0.8, 0.1), 0.3)),
        )

    @property
    def as_shot_neutral(self) -> tuple[float, float, float]:
        """What the camera would store for this white balance (DNG AsShotNeutral)."""
        return (1.0 / self.red_gain, 1.0, 1.0 / self.blue_gain)

    @property
    def white_balance(self) -> tuple[float, float, float]:
        """The (R, G, B) multipliers that undo this white balance: what a reader takes from the file."""
        return (self.red_gain, 1.0, self.blue_gain)


HIGHLIGHTS = ("keep", "clip")


def unprocess(srgb: np.ndarray, params: UnprocessParams, sensor: SensorProfile = A7S2,
              xyz_to_cam: np.ndarray | None = None, highlights: str = "keep") -> np.ndarray:
    """sRGB H x W x 3 -> linear camera RGB (white balance and brightness undone).
    `xyz_to_cam` renders through another camera's matrix than the sensor's own.

    `highlights` "keep" is Brooks et al.'s: near-white pixels keep full scale in every channel
    instead of taking the inverse white balance. Right for a network that sees the mosaic as read;
    wrong for one that sees it white-balanced, which learns that a bright neutral arrives with red
    and blue well above green, and so tints true bright neutrals green-yellow. "clip" takes the
    inverse gains everywhere, clipped at full scale as the sensor would."""
    if highlights not in HIGHLIGHTS:
        raise ValueError(f"highlights must be one of {HIGHLIGHTS}, not {highlights!r}")
    linear = gamma_expand(inverse_tone(srgb))
    matrix = sensor.srgb_to_cam() if xyz_to_cam is None else srgb_to_cam(xyz_to_cam)
    cam = linear @ matrix.T
    gains = np.array([1.0 / params.red_gain, 1.0, 1.0 / params.blue_gain]) / params.brightness_gain
    if highlights == "keep":
        gray = cam.mean(axis=-1, keepdims=True)
        mask = (np.maximum(gray - 0.9, 0.0) / 0.1) ** 2  # keep saturated whites from turning grey
        gains = np.maximum(mask + (1.0 - mask) * gains, gains)
    return np.clip(cam * gains, 0.0, 1.0).astype(np.float32)


def mosaic_rggb(rgb: np.ndarray) -> np.ndarray:
    """H x W x 3 (even H, W) -> H x W RGGB mosaic."""
    out = np.empty(rgb.shape[:2], rgb.dtype)
    out[0::2, 0::2] = rgb[0::2, 0::2, 0]
    out[0::2, 1::2] = rgb[0::2, 1::2, 1]
    out[1::2, 0::2] = rgb[1::2, 0::2, 1]
    out[1::2, 1::2] = rgb[1::2, 1::2, 2]
    return out


# ---------------------------------------------------------------- noise
def tukey_lambda(rng: np.random.Generator, lam: float, size) -> np.ndarray:
    """Samples of the standard Tukey-lambda distribution via its quantile function."""
    u = rng.uniform(1e-6, 1 - 1e-6, size)
    if abs(lam) < 1e-6:
        return np.log(u / (1 - u))
    return (u ** lam - (1 - u) ** lam) / lam


@dataclass(frozen=True)
class NoiseParams:
    system_gain: float
    read_scale: float
    read_lambda: float
    row_scale: float

    @classmethod
    def sample(cls, rng: np.random.Generator, sensor: SensorProfile = A7S2, gain: float | None = None) -> "NoiseParams":
        """Parameters at a system gain drawn log-uniformly from the sensor's range, or at `gain`."""
        lo, hi = np.log(sensor.gain_range[0]), np.log(sensor.gain_range[1])
        log_k = rng.uniform(lo, hi) if gain is None else float(np.log(gain))

        def scale(params: tuple[float, float, float]) -> float:
            slope, bias, sigma = params
            return float(np.exp(slope * log_k + bias + rng.normal(0, sigma)))

        return cls(
            system_gain=float(np.exp(log_k)),
            read_scale=scale(sensor.tukey_read),
            read_lambda=float(rng.uniform(*sensor.tukey_lambda)),
            row_scale=scale(sensor.row_noise),
        )


def add_sensor_noise(
    signal_dn: np.ndarray, noise: NoiseParams, rng: np.random.Generator, sensor: SensorProfile = A7S2
) -> np.ndarray:
    """Clean signal in digital numbers above black -> noisy uint16 RAW with black level, clipped."""
    k = noise.system_gain
    shot = rng.poisson(np.maximum(signal_dn, 0.0) / k).astype(np.float32) * k
    read = tukey_lambda(rng, noise.read_lambda, signal_dn.shape).astype(np.float32) * noise.read_scale
    rows = rng.normal(0.0, noise.row_scale, (signal_dn.shape[0], 1)).astype(np.float32)
    quant = rng.uniform(-0.5, 0.5, signal_dn.shape).astype(np.float32)
    raw = shot + read + rows + quant + sensor.black_level
    return np.clip(np.rint(raw), 0, sensor.white_level).astype(np.uint16)


@dataclass
class DarkPair:
    """One synthetic sample: the dark RAW a camera would record and the clean sRGB target."""

    raw: np.ndarray  # uint16 H x W RGGB with black level, sensor counts
    target: np.ndarray  # float32 H x W x 3 sRGB in [0, 1]
    ratio: float
    unprocess: UnprocessParams
    noise: NoiseParams
    sensor: SensorProfile = A7S2
    xyz_to_cam: np.ndarray | None = None  # the camera matrix rendered through (None: the sensor's)

    def normalised(self) -> np.ndarray:
        """The mosaic as read: (raw - black) / (white - black), clipped at 0."""
        s = self.sensor
        return np.maximum((self.raw.astype(np.float32) - s.black_level) / (s.white_level - s.black_level), 0.0)

    def white_balanced(self, error: tuple[float, float, float] = (1.0, 1.0, 1.0)) -> np.ndarray:
        """`normalised()` with the file's white balance applied per Bayer position (RGGB), each gain
        times `error` (training's augmentation: a reader's estimate is never exact)."""
        gains = np.asarray(self.unprocess.white_balance, np.float32) * np.asarray(error, np.float32)
        return apply_white_balance(self.normalised(), gains)


def apply_white_balance(mosaic: np.ndarray, gains) -> np.ndarray:
    """An RGGB mosaic with its R, G and B sites multiplied by `gains` (a new float32 array)."""
    out = np.array(mosaic, np.float32, copy=True)
    red, green, blue = (np.float32(g) for g in gains)
    out[0::2, 0::2] *= red
    out[0::2, 1::2] *= green
    out[1::2, 0::2] *= green
    out[1::2, 1::2] *= blue
    return out


def make_dark_pair(
    srgb: np.ndarray, ratio: float, rng: np.random.Generator, sensor: SensorProfile = A7S2,
    params: UnprocessParams | None = None, xyz_to_cam: np.ndarray | None = None, noise: NoiseParams | None = None,
    highlights: str = "keep",
) -> DarkPair:
    """Turn a clean sRGB image (even H, W) into a (dark noisy RAW, target) pair at an exposure ratio.
    With the defaults, white balance, brightness and noise are drawn from `rng` in a fixed order
    (the evaluation sets rely on it); `params`, `xyz_to_cam` and `noise` set them instead;
    `highlights` as `unprocess`."""
    srgb = np.asarray(srgb, np.float32)
    height, width = srgb.shape[:2]
    srgb = srgb[: height - height % 2, : width - width % 2]
    params = UnprocessParams.sample(rng) if params is None else params
    linear = mosaic_rggb(unprocess(srgb, params, sensor, xyz_to_cam, highlights))
    noise = NoiseParams.sample(rng, sensor) if noise is None else noise
    signal_dn = linear * (sensor.white_level - sensor.black_level) / float(ratio)
    raw = add_sensor_noise(signal_dn, noise, rng, sensor)
    return DarkPair(raw, np.clip(srgb, 0, 1), float(ratio), params, noise, sensor, xyz_to_cam)


def make_clean_pair(srgb: np.ndarray, rng: np.random.Generator, sensor: SensorProfile = A7S2) -> DarkPair:
    """A perfect exposure (ratio 1) with no noise beyond 14-bit quantisation: the network's ceiling."""
    srgb = np.asarray(srgb, np.float32)
    srgb = srgb[: srgb.shape[0] - srgb.shape[0] % 2, : srgb.shape[1] - srgb.shape[1] % 2]
    params = UnprocessParams.sample(rng)
    linear = mosaic_rggb(unprocess(srgb, params, sensor))
    raw = np.clip(np.rint(linear * (sensor.white_level - sensor.black_level) + sensor.black_level), 0, sensor.white_level)
    none = NoiseParams(system_gain=0.0, read_scale=0.0, read_lambda=0.0, row_scale=0.0)
    return DarkPair(raw.astype(np.uint16), np.clip(srgb, 0, 1), 1.0, params, none, sensor)


def sample_scene(seed: int, size: tuple[int, int] = (512, 768), ratio: float = 300.0, r_min: float = 8.0) -> DarkPair:
    """A deterministic dark dead-leaves scene (SID's darkest ratio, leaves no smaller than a
    typical photo's objects): the embedded sample of `make demo` and the tests."""
    rng = np.random.default_rng(seed)
    return make_dark_pair(dead_leaves(size, rng, r_min=r_min), ratio, rng)
