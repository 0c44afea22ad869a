"""The stress set: fixed, seeded inputs that a quantized artifact must survive beyond its calibration.

The held-out validation scenes look like the calibration data (photos at their true ratio), so an
INT8 artifact can pass them and still collapse on what users bring. Each category here aims at one
way the network's activations leave the range that calibration saw:

- `bright_saturated`: fully saturated discs and hue gradients, brightly exposed;
- `clipped_highlights`: light sources that saturate the sensor in a dark scene (their amplified
  value is the ratio itself, x100 and more);
- `flat`: a uniform grey frame and a near-black frame;
- `over_amplified`: photos told a ratio 2-3x their true one, so the amplified mosaic exceeds 1;
- `mild_noise` / `harsh_noise`: x20 at the sensor's lowest gain; x300 at twice its highest gain
  with doubled read and row noise;
- `non_square`: photos of another aspect ratio, padded into the artifact's shape.

`split="validation"` draws from the evaluation photos and its own seeds; `split="calibration"`
draws the same categories from the training photos and other seeds, so calibration can cover every
category and still never see a validation image.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .synth import A7S2, DarkPair, NoiseParams, UnprocessParams, dead_leaves, make_dark_pair

STRESS_SEED = 4040
SPLITS = ("validation", "calibration")
CATEGORIES = {
    "bright_saturated": "saturated discs and hue gradients, brightly exposed, x100",
    "clipped_highlights": "a dark scene whose light sources saturate the sensor, x100 and x300",
    "flat": "a uniform grey frame at x100 and a near-black frame at x300",
    "over_amplified": "photos at x100 told x200 and x300: the amplified mosaic exceeds 1",
    "mild_noise": "photos at x20 at the sensor's lowest gain",
    "harsh_noise": "photos at x300 at twice the sensor's highest gain, read and row noise doubled",
    "non_square": "photos of another aspect ratio padded into the artifact's shape, x100 and x250",
}


@dataclass
class StressScene:
    """One stress input: a dark pair, the gain the network is given, and its category."""

    name: str
    category: str
    pair: DarkPair
    gain: float  # what the network is told: the true ratio, except for `over_amplified`

    @property
    def group(self) -> str:
        return self.category


def _hsv_to_rgb(h: np.ndarray, s: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Hue, saturation, value in [0, 1] (same shapes) -> RGB H x W x 3."""
    i = np.floor(h * 6.0) % 6
    f = h * 6.0 - np.floor(h * 6.0)
    p, q, t = v * (1 - s), v * (1 - s * f), v * (1 - s * (1 - f))
    choices = [(v, t, p), (q, v, p), (p, v, t), (p, q, v), (t, p, v), (v, p, q)]
    out = np.zeros((*h.shape, 3), np.float32)
    for k, (r, g, b) in enumerate(choices):
        where = i == k
        out[where] = np.stack([r[where], g[where], b[where]], axis=-1)
    return out


def saturated_discs(size: tuple[int, int], rng: np.random.Generator) -> np.ndarray:
    """Overlapping discs of fully saturated colours at high value on a saturated ground: the most
    colourful a scene gets. Radii 6-80 pixels in a 512x512 frame, scaled with the frame."""
    height, width = size
    scale = np.sqrt(height * width) / 512
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    hue = np.full(size, rng.random(), np.float32)
    value = np.full(size, rng.uniform(0.7, 1.0), np.float32)
    for _ in range(int(rng.integers(40, 80))):
        r = rng.uniform(6, 80) * scale
        cy, cx = rng.uniform(0, height), rng.uniform(0, width)
        inside = (yy - cy) ** 2 + (xx - cx) ** 2 <= r * r
        hue[inside], value[inside] = rng.random(), rng.uniform(0.7, 1.0)
    return _hsv_to_rgb(hue, rng.uniform(0.9, 1.0) * np.ones_like(hue), value)


def hue_gradient(size: tuple[int, int], rng: np.random.Generator) -> np.ndarray:
    """Every hue across, full saturation, value falling from white-hot to mid down the frame."""
    height, width = size
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    hue = (xx / width + rng.random()) % 1.0
    val = 1.0 - 0.5 * yy / height
    return _hsv_to_rgb(hue, np.ones_like(hue), val)


def _lamps(size: tuple[int, int], rng: np.random.Generator, count: int) -> np.ndarray:
    """A mask of `count` round light sources, radius 4-16 pixels in a 512x512 frame (scaled with the
    frame): street lights and lamps that cover about half a percent of a night scene."""
    height, width = size
    yy, xx = np.mgrid[0:height, 0:width]
    mask = np.zeros(size, bool)
    scale = np.sqrt(height * width) / 512
    for _ in range(count):
        r = rng.uniform(4, 16) * scale
        cy, cx = rng.uniform(0, height), rng.uniform(0, width)
        mask |= (yy - cy) ** 2 + (xx - cx) ** 2 <= r * r
    return mask


def lit_scene(size: tuple[int, int], rng: np.random.Generator, ratio: float) -> DarkPair:
    """A dim scene with light sources that saturate the sensor: the dark RAW is at the white level
    there, and the target is white."""
    srgb = dead_leaves(size, rng, r_min=6.0) * 0.35
    lamps = _lamps(size, rng, int(rng.integers(2, 6)))
    srgb[lamps] = 1.0
    pair = make_dark_pair(srgb, ratio, rng)
    lamps = lamps[: pair.raw.shape[0], : pair.raw.shape[1]]
    pair.raw[lamps] = pair.sensor.white_level
    return pair


def _photo_crop(image: np.ndarray, shape: tuple[int, int], rng: np.random.Generator) -> np.ndarray:
    height, width = image.shape[:2]
    ch, cw = min(shape[0], height) // 2 * 2, min(shape[1], width) // 2 * 2
    y = int(rng.integers(0, height - ch + 1)) // 2 * 2
    x = int(rng.integers(0, width - cw + 1)) // 2 * 2
    return image[y : y + ch, x : x + cw]


def _photos(split: str) -> list[tuple[str, np.ndarray]]:
    from .sources import EVAL_PHOTOS, TRAIN_PHOTOS

    chosen = EVAL_PHOTOS if split == "validation" else TRAIN_PHOTOS
    photos = []
    for photo in chosen:
        image = photo.load()
        if image.ndim == 3 and not np.allclose(image[..., 0], image[..., 1]):  # colour photos only
            photos.append((photo.name, image))
    return photos


def stress_scenes(size: tuple[int, int], split: str = "validation", per_category: int = 2,
                  seed: int = STRESS_SEED) -> list[StressScene]:
    """`per_category` scenes of every category (`CATEGORIES`) at most `size` (H, W), bit-identical per
    seed; the non-square ones are smaller than `size` in one direction."""
    if split not in SPLITS:
        raise ValueError(f"split is one of {', '.join(SPLITS)}")
    height, width = (int(size[0]) // 2 * 2, int(size[1]) // 2 * 2)
    photos = _photos(split)
    scenes: list[StressScene] = []

    def add(category: str, i: int, label: str, pair: DarkPair, gain: float | None = None) -> None:
        scenes.append(StressScene(f"{category}#{i}:{label}", category, pair, float(gain or pair.ratio)))

    for c, category in enumerate(CATEGORIES):
        for i in range(per_category):
            rng = np.random.default_rng([seed, SPLITS.index(split), c, i])
            name, photo = photos[int(rng.integers(len(photos)))]
            if category == "bright_saturated":
                srgb = (saturated_discs if i % 2 == 0 else hue_gradient)((height, width), rng)
                params = UnprocessParams(float(rng.uniform(1.9, 2.4)), float(rng.uniform(1.5, 1.9)), 1.0)
                add(category, i, "discs" if i % 2 == 0 else "gradient", make_dark_pair(srgb, 100, rng, params=params))
            elif category == "clipped_highlights":
                add(category, i, "lamps", lit_scene((height, width), rng, 100 if i % 2 == 0 else 300))
            elif category == "flat":
                if i % 2 == 0:
                    srgb = np.full((height, width, 3), rng.uniform(0.4, 0.6), np.float32)
                    add(category, i, "grey", make_dark_pair(srgb, 100, rng))
                else:
                    srgb = dead_leaves((height, width), rng) * 0.04
                    add(category, i, "near-black", make_dark_pair(srgb, 300, rng))
            elif category == "over_amplified":
                pair = make_dark_pair(_photo_crop(photo, (height, width), rng), 100, rng)
                add(category, i, name, pair, gain=200.0 if i % 2 == 0 else 300.0)
            elif category == "mild_noise":
                noise = NoiseParams.sample(rng, A7S2, gain=A7S2.gain_range[0])
                add(category, i, name, make_dark_pair(_photo_crop(photo, (height, width), rng), 20, rng, noise=noise))
            elif category == "harsh_noise":
                drawn = NoiseParams.sample(rng, A7S2, gain=A7S2.gain_range[1] * 2)
                noise = NoiseParams(drawn.system_gain, drawn.read_scale * 2, drawn.read_lambda, drawn.row_scale * 2)
                add(category, i, name, make_dark_pair(_photo_crop(photo, (height, width), rng), 300, rng, noise=noise))
            elif category == "non_square":
                shape = (height, max(32, width * 5 // 8)) if i % 2 == 0 else (max(32, height * 5 // 8), width)
                add(category, i, name, make_dark_pair(_photo_crop(photo, shape, rng), 100 if i % 2 == 0 else 250, rng))
    return scenes
