"""Write Bayer mosaics as DNG files that LibRaw reads (for samples and tests; tifffile, no torch)."""
from __future__ import annotations

import os
from fractions import Fraction

import numpy as np

from toolkit.fileio import atomic_write_with

from .bayer import bayer_channel_index
from .colour import SONY_A7S2_XYZ_TO_CAM


def _srational(values, denominator: int = 10000) -> tuple[int, ...]:
    out: list[int] = []
    for v in np.asarray(values, dtype=np.float64).reshape(-1):
        out += [int(round(v * denominator)), denominator]
    return tuple(out)


def _rational(values) -> tuple[int, ...]:
    out: list[int] = []
    for v in np.asarray(values, dtype=np.float64).reshape(-1):
        frac = Fraction(float(v)).limit_denominator(1 << 20)
        out += [frac.numerator, frac.denominator]
    return tuple(out)


def write_dng(path: str | os.PathLike, mosaic: np.ndarray, *args, **kwargs) -> None:
    """Write an uncompressed 16-bit CFA DNG atomically (arguments as `write_dng_bytes`)."""
    data = write_dng_bytes(mosaic, *args, **kwargs)
    atomic_write_with(path, lambda tmp: tmp.write_bytes(data))


def write_dng_bytes(
    mosaic: np.ndarray,
    pattern: str = "RGGB",
    black_level: float | tuple[float, float, float, float] = 512,
    white_level: int = 16383,
    xyz_to_cam: np.ndarray = SONY_A7S2_XYZ_TO_CAM,
    as_shot_neutral: tuple[float, float, float] = (0.5, 1.0, 0.6),
    camera: str = "LLPackNet Edge synthetic A7S2",
    orientation: int = 1,
    captured: str | None = None,
) -> bytes:
    """An uncompressed 16-bit CFA DNG as bytes; `black_level` may be one value per 2x2 position;
    `orientation` (EXIF) and `captured` ("YYYY:MM:DD HH:MM:SS") as a camera records them."""
    import io

    import tifffile

    data = np.ascontiguousarray(mosaic, dtype=np.uint16)
    if data.ndim != 2:
        raise ValueError("a DNG mosaic is 2-D")
    blacks = np.broadcast_to(np.asarray(black_level, dtype=np.float64), (4,))
    cfa = tuple(int(c) for c in bayer_channel_index(pattern).reshape(-1))
    tags = [
        (271, "s", 0, "LLPackNet Edge", True),  # Make
        (272, "s", 0, camera, True),  # Model
        (33421, "H", 2, (2, 2), True),  # CFARepeatPatternDim
        (33422, "B", 4, cfa, True),  # CFAPattern
        (50706, "B", 4, (1, 4, 0, 0), True),  # DNGVersion
        (50707, "B", 4, (1, 1, 0, 0), True),  # DNGBackwardVersion
        (50708, "s", 0, camera, True),  # UniqueCameraModel
        (50713, "H", 2, (2, 2), True),  # BlackLevelRepeatDim
        (50714, "2I", 4, _rational(blacks), True),  # BlackLevel (RATIONAL)
        (50717, "I", 1, int(white_level), True),  # WhiteLevel
        (50721, "2i", 9, _srational(xyz_to_cam), True),  # ColorMatrix1
        (50778, "H", 1, 21, True),  # CalibrationIlluminant1 = D65
        (50728, "2I", 3, _rational(as_shot_neutral), True),  # AsShotNeutral
        (274, "H", 1, int(orientation), True),  # Orientation
    ]
    if captured:
        tags.append((306, "s", 0, captured, True))  # DateTime
    buffer = io.BytesIO()
    tifffile.imwrite(buffer, data, photometric=32803, extratags=tags)
    return buffer.getvalue()
