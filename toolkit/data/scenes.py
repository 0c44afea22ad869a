"""Procedural scenes rich in fine detail: what the dead-leaves model alone does not teach.

Dead leaves give natural-image statistics but flat discs; a network trained on them (and on noise so
strong that detail is lost anyway) learns to blur. These scenes add what photos of the real world
have at every scale: textured surfaces, stripes and gratings near the sampling limit, and text.
All are numpy only and fully determined by the generator they are given; sRGB float32 H x W x 3.
"""
from __future__ import annotations

import numpy as np

from .synth import dead_leaves


def _grating(shape: tuple[int, int], rng: np.random.Generator, yy: np.ndarray, xx: np.ndarray) -> np.ndarray:
    """A sinusoidal or square-wave grating, period 2-24 pixels, any orientation, in [0, 1]."""
    period = float(np.exp(rng.uniform(np.log(2.2), np.log(24.0))))
    angle = rng.uniform(0, np.pi)
    phase = (np.cos(angle) * xx + np.sin(angle) * yy) * (2 * np.pi / period) + rng.uniform(0, 2 * np.pi)
    wave = np.sin(phase)
    if rng.random() < 0.4:
        wave = np.sign(wave)
    return 0.5 + 0.5 * wave


def _noise_texture(shape: tuple[int, int], rng: np.random.Generator) -> np.ndarray:
    """Band-limited random texture (like gravel, foliage, fabric) in [0, 1]."""
    height, width = shape
    white = rng.standard_normal((height, width))
    fy = np.fft.fftfreq(height)[:, None]
    fx = np.fft.rfftfreq(width)[None, :]
    radius = np.sqrt(fy * fy + fx * fx) + 1e-3
    spectrum = np.fft.rfft2(white) * radius ** -rng.uniform(0.3, 1.2)
    texture = np.fft.irfft2(spectrum, s=(height, width))
    texture = (texture - texture.mean()) / (texture.std() + 1e-8)
    return np.clip(0.5 + 0.18 * texture, 0.0, 1.0)


def textured_leaves(size: tuple[int, int], rng: np.random.Generator, r_min: float = 4.0, r_max: float = 100.0) -> np.ndarray:
    """Dead leaves whose discs carry gratings or random texture instead of a flat colour."""
    height, width = size
    base = dead_leaves(size, rng, r_min=r_min, r_max=r_max)
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    textures = [_grating(size, rng, yy, xx) for _ in range(3)] + [_noise_texture(size, rng) for _ in range(3)]
    # Label the discs by their colour: every pixel of one disc shares it, so each disc gets one texture.
    keys = np.round(base * 255).astype(np.int32)
    labels = (keys[..., 0] * 65536 + keys[..., 1] * 256 + keys[..., 2]) % 9973
    choice = rng.integers(0, len(textures) + 1, 9973)  # the extra index: this disc stays flat
    strength = rng.uniform(0.3, 1.0, 9973).astype(np.float32)
    picked = choice[labels]
    out = base.copy()
    for index, texture in enumerate(textures):
        mask = picked == index
        if mask.any():
            amount = strength[labels][mask][:, None]
            modulation = (0.35 + 1.3 * texture[mask])[:, None]
            out[mask] = np.clip(base[mask] * (1 - amount + amount * modulation), 0, 1)
    return out.astype(np.float32)


def stripes(size: tuple[int, int], rng: np.random.Generator) -> np.ndarray:
    """Patches of coloured gratings at periods down to about 2 pixels: the hardest detail to keep."""
    height, width = size
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    out = np.empty((height, width, 3), np.float32)
    cells = int(rng.integers(1, 4))
    ys = np.linspace(0, height, cells + 1).astype(int)
    xs = np.linspace(0, width, cells + 1).astype(int)
    for i in range(cells):
        for j in range(cells):
            sl = (slice(ys[i], ys[i + 1]), slice(xs[j], xs[j + 1]))
            wave = _grating((height, width), rng, yy, xx)[sl]
            dark, bright = rng.random(3) ** 1.5 * 0.5, 0.4 + 0.6 * rng.random(3)
            out[sl] = dark + (bright - dark) * wave[..., None]
    return np.clip(out, 0, 1)


def text(size: tuple[int, int], rng: np.random.Generator) -> np.ndarray:
    """Random characters in several sizes and colours on a textured ground (needs Pillow)."""
    from PIL import Image, ImageDraw, ImageFont

    height, width = size
    ground = (textured_leaves(size, rng, r_min=20.0, r_max=200.0) * 0.6 + 0.2 * rng.random()) * 255
    image = Image.fromarray(np.clip(ground, 0, 255).astype(np.uint8))
    draw = ImageDraw.Draw(image)
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789.,:;-+=/()%"
    for _ in range(int(rng.integers(20, 60))):
        font_size = int(np.exp(rng.uniform(np.log(8), np.log(64))))
        try:
            font = ImageFont.load_default(size=font_size)
        except (TypeError, OSError):  # Pillow without FreeType: one bitmap size
            font = ImageFont.load_default()
        line = "".join(rng.choice(list(alphabet), int(rng.integers(3, 16))))
        colour = tuple(int(v) for v in rng.integers(0, 256, 3))
        draw.text((int(rng.integers(-20, width)), int(rng.integers(-10, height))), line, fill=colour, font=font)
    return np.asarray(image, np.float32) / 255.0


def patches(size: tuple[int, int], rng: np.random.Generator) -> np.ndarray:
    """A random chart: a grid of flat patches on a flat or textured ground, about half of them exact
    greys from near black to full white. Photos seldom hold a large surface that is exactly neutral
    and bright; without such surfaces a network is never told that a bright grey stays grey."""
    height, width = size
    ground_level = rng.uniform(0.05, 0.6)
    if rng.random() < 0.5:
        out = np.full((height, width, 3), ground_level, np.float32)
    else:
        out = textured_leaves(size, rng, r_min=16.0, r_max=160.0) * ground_level / 0.5
    rows, cols = int(rng.integers(2, 7)), int(rng.integers(2, 9))
    ys = np.linspace(0, height, rows + 1).astype(int)
    xs = np.linspace(0, width, cols + 1).astype(int)
    for i in range(rows):
        for j in range(cols):
            gap_y = int(rng.integers(1, max((ys[i + 1] - ys[i]) // 5, 2)))
            gap_x = int(rng.integers(1, max((xs[j + 1] - xs[j]) // 5, 2)))
            if rng.random() < 0.5:
                colour = np.full(3, min(rng.uniform(0.05, 1.1) ** 0.7, 1.0))  # a grey, most of them bright; full white now and then
            else:
                colour = rng.random(3) ** 1.2
            out[ys[i] + gap_y : ys[i + 1] - gap_y, xs[j] + gap_x : xs[j + 1] - gap_x] = colour
    return np.clip(out, 0, 1).astype(np.float32)


SCENE_KINDS = {"textured_leaves": textured_leaves, "stripes": stripes, "text": text, "patches": patches}
DETAIL_KINDS = ("stripes", "text", "textured_leaves")  # the held-out detail set's kinds: fixed, so its seeds never move

# A colour chart in the layout of the 24-patch ColorChecker (its published 8-bit sRGB values): three
# rows of colours, then six neutral patches from white to black, made exactly grey here.
CHART_SRGB = (
    (115, 82, 68), (194, 150, 130), (98, 122, 157), (87, 108, 67), (133, 128, 177), (103, 189, 170),
    (214, 126, 44), (80, 91, 166), (193, 90, 99), (94, 60, 108), (157, 188, 64), (224, 163, 46),
    (56, 61, 150), (70, 148, 73), (175, 54, 60), (231, 199, 31), (187, 86, 149), (8, 133, 161),
    (243, 243, 243), (200, 200, 200), (160, 160, 160), (122, 122, 122), (85, 85, 85), (52, 52, 52),
)
CHART_NEUTRALS = range(18, 24)


def chart_patches(size: tuple[int, int]) -> list[tuple[int, int, int, int]]:
    """(top, left, bottom, right) of each of the 24 patches of `colour_chart(size)`, row by row."""
    height, width = size
    ph, pw = height // 4, width // 6
    gap_y, gap_x = max(ph // 8, 1), max(pw // 8, 1)
    return [(r * ph + gap_y, c * pw + gap_x, (r + 1) * ph - gap_y, (c + 1) * pw - gap_x) for r in range(4) for c in range(6)]


def colour_chart(size: tuple[int, int]) -> np.ndarray:
    """An H x W x 3 sRGB chart in [0, 1]: `CHART_SRGB`'s patches on a dark grey ground, to check that
    neutral greys stay neutral whatever the camera's white balance."""
    image = np.full((*size, 3), 0.2, np.float32)
    for (top, left, bottom, right), rgb in zip(chart_patches(size), CHART_SRGB):
        image[top:bottom, left:right] = np.asarray(rgb, np.float32) / 255.0
    return image


def detail_scene(size: tuple[int, int], rng: np.random.Generator, kind: str | None = None) -> np.ndarray:
    """One scene of a named kind, or of a random one."""
    name = kind or str(rng.choice(list(SCENE_KINDS)))
    return SCENE_KINDS[name](size, rng)
