"""Training batches and the fixed evaluation set, both synthesised deterministically from a seed."""
from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from toolkit.camera.colour import mixed_camera_matrix
from toolkit.errors import InputError

from .scenes import DETAIL_KINDS, colour_chart, detail_scene
from .sources import DATA_VERSION, EVAL_PHOTOS, SYSTEM_TRAIN_PHOTOS, TRAIN_PHOTOS, is_grey, random_tint, read_image_file
from .synth import A7S2, RATIOS, DarkPair, NoiseParams, SensorProfile, UnprocessParams, dead_leaves, make_clean_pair, make_dark_pair

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
    group: str = ""  # what the scene is reported under within its set (a ratio, a camera and light)

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
                scenes.append(EvalScene(f"{name}#{c}@x{ratio:g}", name, make_dark_pair(clean, ratio, pair_rng, sensor), f"x{ratio:g}"))
    return scenes


DETAIL_SEED = 7070
CAMERA_SEED = 8080
LIGHTS = {"tungsten": (1.2, 2.8), "fluorescent": (1.8, 2.0), "daylight": (2.5, 1.5)}  # raw R and B gains under each
EVAL_SETS = {
    "sid": "the 42-image held-out set: 7 photos x 2 crops x (x100, x250, x300), A7S II colour, daylight balance",
    "detail": "held-out procedural detail (stripes, text, textured leaves) at x20 and x50 at low sensor gain, and x100 and x300",
    "clean": "the sid set's crops with no noise at ratio 1: the ceiling, what the network loses on a perfect input",
    "cameras": "the held-out photos through 4 cameras training never saw, under tungsten, fluorescent and daylight "
               "balances, and through the A7S II with an already balanced raw (gains 1/1/1), at x100",
    "neutral": "a 24-patch colour chart with six exact greys through the A7S II with an already balanced raw and under "
               "tungsten, and through a held-out camera under tungsten and daylight, at x20 and x100: the greys' a* and b*",
}
NEUTRAL_SEED = 9090


def packed_input(pair: DarkPair, gain: float, white_balance: str = "none", size: tuple[int, int] | None = None):
    """(packed input, placement) of a synthetic pair at `gain`, as `llpack enhance` builds it for weights
    with this input contract: the mosaic as read ("none") or with its file's white balance ("file"),
    padded to `size` (or the 16-pixel grid), amplified and clipped where the sensor saturates."""
    from toolkit.camera.bayer import input_scaling, pack_network_input, to_network_grid

    multipliers, ceiling = input_scaling(gain, pair.unprocess.white_balance if white_balance == "file" else None)
    grid, place = to_network_grid(pair.normalised(), "RGGB", size=size)
    return pack_network_input(grid, multipliers, ceiling=ceiling), place


def detail_scenes(seed: int = DETAIL_SEED, size: tuple[int, int] = EVAL_CROP, per_kind: int = 2) -> list[EvalScene]:
    """Procedural scenes rich in detail, from seeds training never uses, at milder and SID noise:
    x20 and x50 at the low end of the sensor's gains (a well-lit night), x100 and x300 as sampled."""
    scenes = []
    for k, kind in enumerate(DETAIL_KINDS):
        for i in range(per_kind):
            clean = detail_scene(size, np.random.default_rng([seed, k, i]), kind)
            for ratio in (20, 50, 100, 300):
                rng = np.random.default_rng([seed, k, i, ratio])
                noise = NoiseParams.sample(rng, A7S2, gain=0.2) if ratio < 100 else None
                pair = make_dark_pair(clean, ratio, rng, A7S2, noise=noise)
                scenes.append(EvalScene(f"{kind}#{i}@x{ratio}", kind, pair, f"x{ratio}"))
    return scenes


def clean_scenes(seed: int = EVAL_SEED) -> list[EvalScene]:
    """The sid set's crops (one per photo and crop) as perfect inputs: ratio 1 and no noise."""
    scenes = []
    for scene in evaluation_scenes(seed, ratios=(100,)):
        pair = make_clean_pair(scene.pair.target, np.random.default_rng([seed, 6, len(scenes)]))
        scenes.append(EvalScene(scene.name.replace("@x100", "@clean"), scene.source, pair, "clean"))
    return scenes


def camera_scenes(seed: int = CAMERA_SEED, ratio: float = 100.0) -> list[EvalScene]:
    """Cross-camera held-out sets: one crop of each evaluation photo through each held-out camera under
    each light, and through the A7S II with an already balanced raw (all gains 1)."""
    from toolkit.camera.colour import CAMERA_MATRICES, HELD_OUT_CAMERAS

    photos = [(p.name, p.load()) for p in EVAL_PHOTOS]
    cases = [(camera, light, gains) for camera in HELD_OUT_CAMERAS for light, gains in LIGHTS.items()]
    cases += [("Sony ILCE-7SM2", "daylight", LIGHTS["daylight"]), ("Sony ILCE-7SM2", "balanced raw", (1.0, 1.0))]
    scenes = []
    for index, (name, image) in enumerate(photos):
        rng = np.random.default_rng([seed, index])
        y, x, ch, cw = next(_crop_positions(image.shape[:2], EVAL_CROP, 1, rng))
        clean = image[y : y + ch, x : x + cw]
        for c, (camera, light, (red, blue)) in enumerate(cases):
            pair_rng = np.random.default_rng([seed, index, c])
            params = UnprocessParams(red, blue, float(1.0 / max(pair_rng.normal(0.8, 0.1), 0.3)))
            pair = make_dark_pair(clean, ratio, pair_rng, A7S2, params=params, xyz_to_cam=CAMERA_MATRICES[camera])
            scenes.append(EvalScene(f"{name}@{camera}/{light}", name, pair, f"{camera} / {light}"))
    return scenes


def neutral_scenes(seed: int = NEUTRAL_SEED, size: tuple[int, int] = EVAL_CROP) -> list[EvalScene]:
    """The colour chart (`toolkit.data.scenes.colour_chart`) through an already balanced raw and warm
    and daylight balances, at a milder and at SID's exposure ratio (other seeds: other noise draws)."""
    from toolkit.camera.colour import CAMERA_MATRICES, HELD_OUT_CAMERAS

    chart = colour_chart(size)
    cases = [("Sony ILCE-7SM2", "balanced raw", (1.0, 1.0)), ("Sony ILCE-7SM2", "tungsten", LIGHTS["tungsten"]),
             (HELD_OUT_CAMERAS[0], "tungsten", LIGHTS["tungsten"]), (HELD_OUT_CAMERAS[0], "daylight", LIGHTS["daylight"])]
    scenes = []
    for c, (camera, light, (red, blue)) in enumerate(cases):
        for ratio in (20, 100):
            rng = np.random.default_rng([seed, c, ratio])
            noise = NoiseParams.sample(rng, A7S2, gain=0.2) if ratio < 100 else None
            pair = make_dark_pair(chart, ratio, rng, A7S2, params=UnprocessParams(red, blue, 1.25),
                                  xyz_to_cam=CAMERA_MATRICES[camera], noise=noise)
            scenes.append(EvalScene(f"chart@{camera}/{light}@x{ratio}", "chart", pair, f"{camera} / {light}"))
    return scenes


def evaluation_set(name: str) -> list[EvalScene]:
    """The scenes of a named held-out set (`EVAL_SETS`)."""
    makers = {"sid": evaluation_scenes, "detail": detail_scenes, "clean": clean_scenes, "cameras": camera_scenes,
              "neutral": neutral_scenes}
    if name not in makers:
        from toolkit.errors import UserError, closest_hint

        raise UserError(f"unknown evaluation set '{name}'", closest_hint(name, makers))
    return makers[name]()


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
@dataclass(frozen=True)
class DataMix:
    """What training batches are made of. The defaults are the first recipe's data (synth-v1):
    A7S II colour at daylight white balance, x100-x300, half dead leaves and half packaged photos.

    `white_balance`: "file" multiplies the input by the white balance a reader takes from the
    file (what `toolkit.camera` applies at run time for such weights), "none" leaves it as read.
    Ratio bands are (share, lowest, highest), each log-uniform; sources are (kind, share) with
    kinds 'leaves', 'photos' and those of `toolkit.data.scenes.SCENE_KINDS`."""

    white_balance: str = "none"
    ratio_bands: tuple[tuple[float, float, float], ...] = ((1.0, 100.0, 300.0),)
    sources: tuple[tuple[str, float], ...] = (("leaves", 0.5), ("photos", 0.5))
    cameras: str = "sensor"  # "sensor": the sensor's own matrix; "mixed": mixtures of the training cameras
    white_balance_error: float = 0.0  # std of the log error of each applied R and B gain (augmentation)
    wide_white_balance: bool = False  # white balances from sodium light to shade, not just daylight
    downscale: tuple[float, float] = (1.0, 1.0)  # photos are shrunk by a random factor in this range first
    highlights: str = "keep"  # `toolkit.data.synth.unprocess`: "clip" for white-balanced input
    clip_input: bool = False  # clip the amplified input at full scale in training, as every inference path does

    @property
    def legacy(self) -> bool:
        return self == DataMix()


@dataclass
class SampleSpec:
    """One training sample before its noise is drawn: the clean crop and every parameter."""

    clean: np.ndarray  # sRGB float32 H x W x 3
    ratio: float
    unprocess: UnprocessParams
    xyz_to_cam: np.ndarray
    noise: NoiseParams
    white_balance_error: tuple[float, float, float]


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
        mix: DataMix = DataMix(),
    ):
        if crop % 32:
            raise ValueError("the training crop must be a multiple of 32")
        self.seed, self.crop, self.batch_size = seed, crop, batch_size
        self.ratio_range, self.sensor, self.mix = ratio_range, sensor, mix
        self.photo_fraction = photo_fraction
        side = crop + crop // 4
        kinds = {kind for kind, _ in mix.sources} - {"photos"}
        self.pools: dict[str, list[np.ndarray]] = {kind: [] for kind in sorted(kinds)}
        made = 0
        for kind in sorted(kinds):  # leaves first for the legacy mix: its pool is seeded as it always was
            count = pool_size if kind == "leaves" else max(pool_size // 4, 1)
            for i in range(count):
                rng = np.random.default_rng([seed, 1, i] if kind == "leaves" else [seed, 4, sorted(kinds).index(kind), i])
                self.pools[kind].append(dead_leaves((side, side), rng) if kind == "leaves" else detail_scene((side, side), rng, kind))
                made += 1
                if on_progress:
                    on_progress(made)
        self.leaves = self.pools.get("leaves", [])
        self.photos = [image for _, image in self._training_photos(include_system=not mix.legacy)]
        self.photos += [image for _, image in extra_photos]
        self.photos = [p for p in self.photos if min(p.shape[:2]) >= crop]
        self.grey = [is_grey(p) for p in self.photos]

    @staticmethod
    def pool_count(pool_size: int, mix: DataMix) -> int:
        """How many scenes the constructor generates (for a progress bar)."""
        kinds = {kind for kind, _ in mix.sources} - {"photos"}
        return sum(pool_size if kind == "leaves" else max(pool_size // 4, 1) for kind in kinds)

    @staticmethod
    def _training_photos(include_system: bool = False) -> list[tuple[str, np.ndarray]]:
        found = []
        for photo in TRAIN_PHOTOS + (SYSTEM_TRAIN_PHOTOS if include_system else ()):
            try:
                found.append((photo.name, photo.load()))
            except InputError as exc:
                log.warning("training photo skipped: %s", exc)
        return found

    def _crop_of(self, image: np.ndarray, rng: np.random.Generator, grey: bool = False) -> np.ndarray:
        y = int(rng.integers(0, image.shape[0] - self.crop + 1))
        x = int(rng.integers(0, image.shape[1] - self.crop + 1))
        patch = image[y : y + self.crop, x : x + self.crop]
        if grey:
            patch = random_tint(patch, rng)
        if rng.random() < 0.5:
            patch = patch[:, ::-1]
        return np.rot90(patch, int(rng.integers(4)))

    def _clean_crop(self, rng: np.random.Generator) -> np.ndarray:
        if self.mix.legacy:
            use_photo = bool(self.photos) and rng.random() < self.photo_fraction
            pool = self.photos if use_photo else self.leaves
            index = int(rng.integers(len(pool)))
            return self._crop_of(pool[index], rng, use_photo and self.grey[index])
        kinds = [k for k, _ in self.mix.sources if k != "photos" or self.photos]
        shares = np.array([s for k, s in self.mix.sources if k in kinds], np.float64)
        kind = kinds[int(rng.choice(len(kinds), p=shares / shares.sum()))]
        if kind != "photos":
            pool = self.pools[kind]
            return self._crop_of(pool[int(rng.integers(len(pool)))], rng)
        index = int(rng.integers(len(self.photos)))
        image = self.photos[index]
        low, high = self.mix.downscale
        scale = float(np.exp(rng.uniform(np.log(max(low, self.crop / min(image.shape[:2]))), np.log(high)))) if high > low else high
        if scale < 0.999:  # shrink a region that becomes one crop, not the whole photo
            side = min(int(np.ceil(self.crop / scale)), *image.shape[:2])
            y = int(rng.integers(0, image.shape[0] - side + 1))
            x = int(rng.integers(0, image.shape[1] - side + 1))
            image = shrink(image[y : y + side, x : x + side], self.crop / side)
        return self._crop_of(image, rng, self.grey[index])

    def _ratio(self, rng: np.random.Generator) -> float:
        if self.mix.legacy:
            lo, hi = np.log(self.ratio_range[0]), np.log(self.ratio_range[1])
            return float(np.exp(rng.uniform(lo, hi)))
        shares = np.array([band[0] for band in self.mix.ratio_bands], np.float64)
        _, lo, hi = self.mix.ratio_bands[int(rng.choice(len(shares), p=shares / shares.sum()))]
        return float(np.exp(rng.uniform(np.log(lo), np.log(hi))))

    def sample(self, rng: np.random.Generator) -> tuple[DarkPair, float]:
        """One random training pair and its ratio."""
        ratio = self._ratio(rng)
        clean = self._clean_crop(rng)
        if self.mix.legacy:
            return make_dark_pair(clean, ratio, rng, self.sensor), ratio
        params = UnprocessParams.sample_wide(rng) if self.mix.wide_white_balance else UnprocessParams.sample(rng)
        matrix = mixed_camera_matrix(rng) if self.mix.cameras == "mixed" else None
        return make_dark_pair(clean, ratio, rng, self.sensor, params=params, xyz_to_cam=matrix,
                              highlights=self.mix.highlights), ratio

    def draw(self, rng: np.random.Generator) -> SampleSpec:
        """Everything `sample` draws except the noise itself, in the same order: what a synthesiser on
        another device (`toolkit.training.torch_synth`) needs to make the pair there."""
        ratio = self._ratio(rng)
        clean = np.ascontiguousarray(self._clean_crop(rng), np.float32)
        if self.mix.legacy:
            params, matrix = UnprocessParams.sample(rng), None
        else:
            params = UnprocessParams.sample_wide(rng) if self.mix.wide_white_balance else UnprocessParams.sample(rng)
            matrix = mixed_camera_matrix(rng) if self.mix.cameras == "mixed" else None
        noise = NoiseParams.sample(rng, self.sensor)
        sigma = self.mix.white_balance_error
        error = np.exp(rng.normal(0.0, sigma, 3)) if sigma else np.ones(3)
        error[1] = 1.0
        return SampleSpec(clean, ratio, params, self.sensor.xyz_to_cam if matrix is None else matrix, noise, tuple(error))

    def draw_batch(self, step: int) -> list[SampleSpec]:
        rng = np.random.default_rng([self.seed, 2, step])
        return [self.draw(rng) for _ in range(self.batch_size)]

    def network_input(self, pair: DarkPair, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        """The mosaic the network sees for this mix: as read, or white-balanced as a reader would
        from the file (with the mix's estimation error); and the (R, G, B) gains applied, which are
        also where each site saturates once amplified (`toolkit.camera.bayer.input_ceiling`)."""
        if self.mix.white_balance == "none":
            return pair.normalised(), np.ones(3, np.float32)
        sigma = self.mix.white_balance_error
        error = np.exp(rng.normal(0.0, sigma, 3)) if sigma else np.ones(3)
        error[1] = 1.0
        gains = np.asarray(pair.unprocess.white_balance, np.float32) * error.astype(np.float32)
        return pair.white_balanced(tuple(error)), gains

    def batch(self, step: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """(inputs [B,1,H,W] normalised, targets [B,3,H,W] sRGB, ratios [B], white-balance gains
        applied [B,3]) as float32."""
        rng = np.random.default_rng([self.seed, 2, step])
        return self.batch_of([rng] * self.batch_size)

    def batch_of(self, rngs) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """`batch`'s arrays for one sample drawn from each generator in turn (the same one repeated
        draws samples in sequence)."""
        inputs, targets, ratios, gains = [], [], [], []
        for rng in rngs:
            pair, ratio = self.sample(rng)
            mosaic, applied = self.network_input(pair, rng)
            inputs.append(mosaic[None])
            targets.append(pair.target.transpose(2, 0, 1))
            ratios.append(ratio)
            gains.append(applied)
        return (np.stack(inputs), np.ascontiguousarray(np.stack(targets)), np.array(ratios, np.float32),
                np.stack(gains).astype(np.float32))


def shrink(image: np.ndarray, scale: float) -> np.ndarray:
    """Downscale an sRGB float image by `scale` (< 1) with area averaging (needs Pillow)."""
    from PIL import Image

    height, width = image.shape[:2]
    size = (max(int(round(width * scale)), 1), max(int(round(height * scale)), 1))
    if size == (width, height):
        return image
    channels = [Image.fromarray(np.ascontiguousarray(image[..., c]), mode="F").resize(size, Image.BOX) for c in range(3)]
    return np.clip(np.stack([np.asarray(c) for c in channels], axis=-1), 0.0, 1.0).astype(np.float32)
