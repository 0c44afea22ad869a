"""Camera colour: published XYZ -> camera matrices and white-balance gains on a Bayer mosaic.

The matrices are Adobe DNG Converter's D65 ColorMatrix values as dcraw's and LibRaw's
`adobe_coeff` tables carry them (divided by 10,000). Training renders scenes through random
mixtures of `TRAINING_CAMERAS`; the evaluation renders through `HELD_OUT_CAMERAS`, which training
never sees, so cross-camera scores measure generalisation and not memory.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np

from toolkit.errors import InputError

from .bayer import bayer_channel_index

log = logging.getLogger(__name__)


def _matrix(*values: int) -> np.ndarray:
    return np.array(values, np.float64).reshape(3, 3) / 10000.0


CAMERA_MATRICES: dict[str, np.ndarray] = {
    # the SID camera: what the paper's data and the old default weights were made of
    "Sony ILCE-7SM2": _matrix(5838, -1430, -246, -3497, 11477, 2297, -748, 1885, 5778),
    "Canon EOS 5D Mark III": _matrix(6722, -635, -963, -4287, 12460, 2028, -908, 2162, 5668),
    "Canon EOS 6D": _matrix(7034, -804, -1014, -4420, 12564, 2058, -851, 1994, 5758),
    "Nikon 1 J5": _matrix(7520, -2518, -645, -3844, 12102, 1945, -913, 2249, 6835),
    "Olympus E-M1": _matrix(7687, -1984, -606, -4327, 11928, 2721, -1381, 2339, 6452),
    "Panasonic DMC-GH4": _matrix(7122, -2108, -512, -3155, 11201, 2231, -541, 1423, 5045),
    "Pentax K-5": _matrix(8713, -2833, -743, -4342, 11900, 2772, -722, 1543, 6247),
    # held out: never used to make training data
    "Canon EOS 5D Mark II": _matrix(4716, 603, -830, -7798, 15474, 2480, -1496, 1937, 6651),
    "Olympus E-M5MarkII": _matrix(9422, -3258, -711, -2655, 10898, 2015, -512, 1354, 5512),
    "Panasonic DMC-GX8": _matrix(7564, -2263, -606, -3148, 11239, 2177, -540, 1435, 4853),
    "Ricoh GR II": _matrix(4630, -834, -423, -4977, 12805, 2417, -638, 1467, 6115),
}
TRAINING_CAMERAS = ("Sony ILCE-7SM2", "Canon EOS 5D Mark III", "Canon EOS 6D", "Nikon 1 J5", "Olympus E-M1",
                    "Panasonic DMC-GH4", "Pentax K-5")
HELD_OUT_CAMERAS = ("Canon EOS 5D Mark II", "Olympus E-M5MarkII", "Panasonic DMC-GX8", "Ricoh GR II")
SONY_A7S2_XYZ_TO_CAM = CAMERA_MATRICES["Sony ILCE-7SM2"]


def mixed_camera_matrix(rng: np.random.Generator, cameras: tuple[str, ...] = TRAINING_CAMERAS) -> np.ndarray:
    """A random convex mixture of cameras' XYZ -> camera matrices (Brooks et al., CVPR 2019): a
    plausible camera that no real one exactly is, so the network learns no single camera's colour."""
    weights = rng.dirichlet(np.ones(len(cameras)))
    return sum(w * CAMERA_MATRICES[name] for w, name in zip(weights, cameras))


def normalise_gains(gains) -> tuple[float, float, float]:
    """(R, G, B) multipliers scaled so green is 1; refuses anything but three positive finite numbers."""
    values = np.asarray(gains, np.float64).reshape(-1)
    if values.size != 3 or not np.all(np.isfinite(values)) or np.any(values <= 0):
        raise InputError(f"white-balance gains {tuple(values.tolist())} are not three positive numbers",
                         "give --white-balance R,G,B, for example 2.0,1,1.6")
    values = values / values[1]
    return float(values[0]), 1.0, float(values[2])


def gray_world_gains(mosaic: np.ndarray, pattern_index: np.ndarray, clip: float = 0.95) -> tuple[float, float, float]:
    """Estimate white-balance gains from the mosaic itself (grey world on unclipped pixels): the
    fallback for files with no usable white-balance metadata."""
    means = []
    for channel in range(3):
        values = []
        for dy in range(2):
            for dx in range(2):
                if pattern_index[dy, dx] == channel:
                    plane = mosaic[dy::2, dx::2]
                    values.append(plane[plane < clip])
        data = np.concatenate([v.reshape(-1) for v in values]) if values else np.zeros(0)
        means.append(float(data.mean()) if data.size else 0.0)
    if min(means) <= 0:
        return 1.0, 1.0, 1.0
    return normalise_gains([means[1] / means[0], 1.0, means[1] / means[2]])


@dataclass(frozen=True)
class WhiteBalance:
    """The (R, G, B) multipliers applied to a mosaic before packing, and where they came from."""

    gains: tuple[float, float, float]
    source: str  # "file (as shot)", "file (daylight)", "user", "grey world (...)", "sensor profile NAME"

    def as_dict(self) -> dict:
        return {"gains": [round(g, 6) for g in self.gains], "source": self.source}


WHITE_BALANCE_CHOICES = "file (default), auto (grey world), or R,G,B gains such as 2.1,1,1.6"


def parse_white_balance(value: str | None) -> str | tuple[float, float, float]:
    """`--white-balance`: "file", "auto", or three gains "R,G,B"."""
    if value is None or value == "file":
        return "file"
    if value == "auto":
        return "auto"
    try:
        numbers = [float(v) for v in str(value).split(",")]
    except ValueError:
        numbers = []
    if len(numbers) != 3:
        raise InputError(f"--white-balance must be {WHITE_BALANCE_CHOICES}, not '{value}'", "for example --white-balance 2.1,1,1.6")
    return normalise_gains(numbers)


def choose_white_balance(mosaic, request: str | tuple[float, float, float] = "file") -> WhiteBalance:
    """The white balance for a `Mosaic`: the user's gains, the grey-world estimate, or the file's own
    (its as-shot balance, else its daylight one); a file with none falls back to grey world, and
    says so once in the log."""
    if isinstance(request, tuple):
        return WhiteBalance(normalise_gains(request), "user")
    if request == "file" and mosaic.white_balance is not None:
        return WhiteBalance(normalise_gains(mosaic.white_balance), "file (" + mosaic.extras.get("white_balance_source", "as shot") + ")")
    if request == "file":
        log.warning("%s has no white-balance metadata: using the grey-world estimate (give --white-balance R,G,B to set it)",
                    mosaic.source or "the mosaic")
    gains = gray_world_gains(mosaic.data, bayer_channel_index(mosaic.pattern))
    return WhiteBalance(gains, "grey world (no metadata)" if request == "file" else "grey world")
