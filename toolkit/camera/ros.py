"""ROS 2 camera images (`sensor_msgs/msg/Image` with a Bayer encoding) to the normalised `Mosaic`
a RAW file gives, and the enhanced sRGB image back to an `rgb8` message's fields. No ROS install
and no bag library here: the message is read field by field (`toolkit.deploy.bags` reads bags).
"""
from __future__ import annotations

import numpy as np

from toolkit.errors import InputError

from .raw import Mosaic, _check_size, normalise_by_lookup

# ROS 2's Bayer encodings (sensor_msgs/image_encodings.hpp): pattern and bytes per pixel
BAYER_ENCODINGS = {f"bayer_{p.lower()}{bits}": (p, bits // 8) for p in ("RGGB", "BGGR", "GBRG", "GRBG") for bits in (8, 16)}


def mosaic_from_image(message, black_level: float | None = None, white_level: float | None = None,
                      source: str = "message") -> Mosaic:
    """An Image message's Bayer mosaic, normalised; `step` padding and `is_bigendian` honoured.

    ROS images carry no sensor levels: black defaults to 0 and white to the encoding's full scale
    (255 or 65535), both in the message's own counts."""
    encoding = str(message.encoding).strip().lower()
    if encoding not in BAYER_ENCODINGS:
        raise InputError(f"{source}: encoding '{message.encoding}' is not a Bayer mosaic",
                         f"LLPackNet reads {', '.join(sorted(BAYER_ENCODINGS))}")
    pattern, size = BAYER_ENCODINGS[encoding]
    height, width, step = int(message.height), int(message.width), int(message.step)
    _check_size(height, width, source)
    data = np.asarray(message.data, dtype=np.uint8).reshape(-1)
    if step < width * size or data.size != step * height:
        raise InputError(f"{source}: {data.size} bytes for {height} rows of step {step} ({width} pixels of {encoding} "
                         f"need a step of at least {width * size} and {step * height} bytes)",
                         "the message is damaged or its header does not fit its data")
    rows = data.reshape(height, step)[:, : width * size]
    if size == 1:
        values = rows.astype(np.uint16)
    else:
        values = rows.view(">u2" if message.is_bigendian else "<u2").astype(np.uint16)
    top = 255.0 if size == 1 else 65535.0
    black = 0.0 if black_level is None else float(black_level)
    white = top if white_level is None else float(white_level)
    if not (0 <= black < white):
        raise InputError(f"black level {black:g} and white level {white:g} do not fit {encoding}",
                         "check --black-level and --white-level (in the message's counts)")
    levels = np.full((2, 2), black, np.float32)
    normalised, counts = normalise_by_lookup(values, levels, np.full((2, 2), white, np.float32))
    return Mosaic(data=normalised, pattern=pattern, black_level=(black,) * 4, white_level=white, source=source,
                  extras={"levels": counts, "encoding": encoding})


def rgb8_fields(image: np.ndarray) -> dict:
    """The fields of an `rgb8` Image message holding an H x W x 3 uint8 image (header apart)."""
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        raise ValueError("an rgb8 message holds an H x W x 3 uint8 image")
    height, width, _ = image.shape
    return {"height": height, "width": width, "encoding": "rgb8", "is_bigendian": 0, "step": width * 3,
            "data": np.ascontiguousarray(image).reshape(-1)}
