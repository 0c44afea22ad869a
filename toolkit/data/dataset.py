"""Training batches and the fixed evaluation set, both synthesised deterministically from a seed."""
from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from toolkit.errors import InputError

from .sources import DATA_VERSION, EVAL_PHOTOS, TRAIN_PHOTOS, is_grey, random_tint, read_image_file
from .synth import A7S2, RATIOS, DarkPair, SensorProfile, dead_leaves, make_dark_pair

log = logging.getLogger(__name__)

EVAL_SEED = 2020
EVAL_CROP = (288, 384)
EVAL_CROPS_PER_PHOTO = 2
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp")


def load_photo_dir(folder: str | Path) -> list[tuple[str, np.ndarray]]:
    """Every readable image in a folder (sorted by name); unreadable ones are named and skipped."""
    root = Path(folder)
    if not root.is_dir():
        raise InputError(f"{root} is not a folder", "give a folder of PNG/JPEG/TIFF photos")
    photos, skipped = [], []
    for file in sorted(p for p in root.iterdir() if p.is_file()):
        if file.suffix.lower() not in IMAGE_SUFFIXES:
            skipped.append(f"{file.name} (not an image suffix)")
            continue
        try:
            image = read_image_file(file)
        except InputError as exc:
            skipped.append(f"{file.name} ({exc.message.split(': ', 1)[-1]})")
            continue
        if min(image.shape[:2]) < 64:
            skipped.append(f"{file.name} (smaller than 64 pixels)")
            continue
        photos.append((file.name, image))
    for item in skipped:
        log.warning("skipped %s/%s", root, item)
    if not photos:
        raise InputError(f"{root} has no usable photo ({len(skipped)} file(s) skipped)", "add PNG, JPEG or TIFF photos of at least 64x64")
    return photos


# ---------------------------------------------------------------- evaluation
@dataclass
class EvalScene:
    """One held-out image: a dark RAW at a known ratio and its clean target."""

    name: str
    source: str
    pair: DarkPair

    @property
    def ratio(self) -> float:
        return self.pair.ratio


def _crop_positions(shape: tuple[int, int], crop: tuple[int, int], count: int, rng: np.random.Generator):
    height, width = shape
    ch, cw = min(crop[0], height - height % 2), min(crop[1], width - width % 2)
    for _ in range(count):
        y = int(rng.integers(0, height - ch + 1)) // 2 * 2
        x = int(rng.integers(0, width - cw + 1)) // 2 * 2
        yield y, x, ch, cw


def evaluation_scenes(
    seed: int = EVAL_SEED,
    photos: Sequence[tuple[str, np.ndarray]] | None = None,
    ratios: Sequence[float] = RATIOS,
    crops_per_photo: int = EVAL_CROPS_PER_PHOTO,
    crop: tuple[int, int] = EVAL_CROP,
    sensor: SensorProfile = A7S2,
) -> list[EvalScene]:
    """The held-out set: crops of the evaluation photos at each SID ratio, bit-identical per seed."""
    if photos is None:
        photos = [(p.name, p.load()) for p in EVAL_PHOTOS]
    scenes = []
    for index, (name, image) in enumerate(photos):
        rng = np.random.default_rng([seed, index])
        for c, (y, x, ch, cw) in enumerate(_crop_positions(image.shape[:2], crop, crops_per_photo, rng)):
            clean = image[y : y + ch, x : x + cw]
            for ratio in ratios:
                pair_rng = np.random.default_rng([seed, index, c, int(ratio)])
                scenes.append(EvalScene(f"{name}#{c}@x{ratio:g}", name, make_dark_pair(clean, ratio, pair_rng, sensor)))
    return scenes


def evaluation_fingerprint() -> dict:
    """What the default evaluation set is made of, so recorded figures can be checked for comparability."""
    return {
        "data_version": DATA_VERSION,
        "seed": EVAL_SEED,
        "crop": list(EVAL_CROP),
        "crops_per_photo": EVAL_CROPS_PER_PHOTO,
        "ratios": list(RATIOS),
        "photos": {p.name: p.sha256() for p in EVAL_PHOTOS},
    }


# ---------------------------------------------------------------- training
class TrainingSampler:
    """Random (dark RAW, target) batches; batch `step` depends only on (seed, step)."""

    def __init__(
        self,
        seed: int = 0,
        crop: int = 256,
        batch_size: int = 8,
        pool_size: int = 256,
        photo_fraction: float = 0.5,
        extra_photos: Sequence[tuple[str, np.ndarray]] = (),
        ratio_range: tuple[float, float] = (100.0, 300.0),
        sensor: SensorProfile = A7S2,
        on_progress: Callable[[int], None] | None = None,
    ):
        if crop % 32:
            raise ValueError("the training crop must be a multiple of 32")
        self.seed, self.crop, self.batch_size = seed, crop, batch_size
        self.ratio_range, self.sensor = ratio_range, sensor
        self.photo_fraction = photo_fraction
        side = crop + crop // 4
        self.leaves = []
        for i in range(pool_size):
            self.leaves.append(dead_leaves((side, side), np.random.default_rng([seed, 1, i])))
            if on_progress:
                on_progress(i + 1)
        self.photos = [image for _, image in self._training_photos()] + [image for _, image in extra_photos]
        self.photos = [p for p in self.photos if min(p.shape[:2]) >= crop]
        self.grey = [is_grey(p) for p in self.photos]

    @staticmethod
    def _training_photos() -> list[tuple[str, np.ndarray]]:
        found = []
        for photo in TRAIN_PHOTOS:
            try:
                found.append((photo.name, photo.load()))
            except InputError as exc:
                log.warning("training photo skipped: %s", exc)
        return found

    def _clean_crop(self, rng: np.random.Generator) -> np.ndarray:
        use_photo = bool(self.photos) and rng.random() < self.photo_fraction
        pool = self.photos if use_photo else self.leaves
        index = int(rng.integers(len(pool)))
        image = pool[index]
        y = int(rng.integers(0, image.shape[0] - self.crop + 1))
        x = int(rng.integers(0, image.shape[1] - self.crop + 1))
        patch = image[y : y + self.crop, x : x + self.crop]
        if use_photo and self.grey[index]:
            patch = random_tint(patch, rng)
        if rng.random() < 0.5:
            patch = patch[:, ::-1]
        return np.rot90(patch, int(rng.integers(4)))

    def sample(self, rng: np.random.Generator) -> tuple[DarkPair, float]:
        """One random training pair and its ratio (log-uniform in `ratio_range`)."""
        lo, hi = np.log(self.ratio_range[0]), np.log(self.ratio_range[1])
        ratio = float(np.exp(rng.uniform(lo, hi)))
        return make_dark_pair(self._clean_crop(rng), ratio, rng, self.sensor), ratio

    def batch(self, step: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(inputs [B,1,H,W] normalised, targets [B,3,H,W] sRGB, ratios [B]) as float32."""
        rng = np.random.default_rng([self.seed, 2, step])
        inputs, targets, ratios = [], [], []
        for _ in range(self.batch_size):
            pair, ratio = self.sample(rng)
            inputs.append(pair.normalised()[None])
            targets.append(pair.target.transpose(2, 0, 1))
            ratios.append(ratio)
        return np.stack(inputs), np.ascontiguousarray(np.stack(targets)), np.array(ratios, np.float32)
