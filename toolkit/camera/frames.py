"""Raw camera frames in memory (a Raspberry Pi camera's picamera2 buffer) to the same normalised
`Mosaic` a RAW file gives, so a capture loop needs no file in between.

picamera2's `capture_array("raw")` hands over rows of `stride` bytes (padding included) in one of
libcamera's Bayer formats: S{RGGB,GRBG,GBRG,BGGR}{8,10,12,16}, unpacked (2 bytes a pixel above 8
bits) or CSI-2 packed (`_CSI2P`: 10-bit, 4 pixels in 5 bytes; 12-bit, 2 pixels in 3 bytes; the
last byte holds the low bits, the first pixel's in its lowest bits). Unpacked values sit in the low
bits on a Raspberry Pi 4 and at the top of 16 bits on a Pi 5. Pi 5's compressed `_PISP_COMP1`
formats are not read here: capture the unpacked format instead.
"""
from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np

from toolkit.errors import InputError
from toolkit.parallel import in_row_blocks

from .bayer import normalise_pattern
from .raw import Mosaic, _check_size, normalise_by_lookup

FORMAT = re.compile(r"S(RGGB|GRBG|GBRG|BGGR)(8|10|12|16)(_CSI2P)?")
ALIGNMENTS = ("auto", "low", "high")
SHIFTS_10 = np.array([0, 2, 4, 6], np.uint8)  # where each of 4 pixels keeps its 2 low bits in the 5th byte
SHIFTS_12 = np.array([0, 4], np.uint8)


@dataclass(frozen=True)
class PixelFormat:
    """One of libcamera's raw Bayer formats, e.g. SRGGB12_CSI2P."""

    name: str
    pattern: str
    bits: int
    packed: bool  # CSI-2 packed; else 1 (8-bit) or 2 bytes a pixel

    def row_bytes(self, width: int) -> int:
        """Bytes one row of `width` pixels needs, before any padding."""
        if self.packed:
            return -(-width // 4) * 5 if self.bits == 10 else -(-width // 2) * 3
        return width if self.bits == 8 else 2 * width


def parse_pixel_format(name: str) -> PixelFormat:
    """The format named as picamera2 and libcamera write it, or one line saying which ones work."""
    text = str(name).strip().upper()
    match = FORMAT.fullmatch(text)
    if "PISP_COMP" in text:
        raise InputError(f"{name} is the Raspberry Pi 5's compressed raw format, which is not read here",
                         "capture the unpacked format instead, e.g. raw={'format': 'SRGGB12'}")
    if match is None or (match.group(3) and match.group(2) not in ("10", "12")):
        raise InputError(f"unknown raw pixel format '{name}'",
                         "use S<pattern><bits> (8, 10, 12, 16) or S<pattern><10|12>_CSI2P, e.g. SRGGB12_CSI2P")
    return PixelFormat(text, match.group(1), int(match.group(2)), bool(match.group(3)))


def _bytes_of(buffer) -> np.ndarray:
    """Any buffer (bytes, a numpy array of any shape and type, a memoryview) as flat uint8."""
    try:
        array = np.asarray(buffer) if isinstance(buffer, np.ndarray) else np.frombuffer(buffer, np.uint8)
    except TypeError:
        raise InputError(f"a raw frame must be a bytes-like buffer or a numpy array, not {type(buffer).__name__}") from None
    return np.ascontiguousarray(array).reshape(-1).view(np.uint8)


def unpack(buffer, fmt: PixelFormat, shape: tuple[int, int], stride: int | None = None) -> np.ndarray:
    """The frame's pixel values as an H x W uint16 array, as they arrived (no alignment undone)."""
    height, width = shape
    need = fmt.row_bytes(width)
    stride = need if stride is None else int(stride)
    if stride < need:
        raise InputError(f"a stride of {stride} bytes is too small for {width} pixels of {fmt.name} ({need} bytes a row)",
                         f"give the buffer's stride (at least {need}), or leave it out for unpadded rows")
    data = _bytes_of(buffer)
    if data.size != stride * height:
        raise InputError(f"the frame holds {data.size} bytes; {height}x{width} {fmt.name} with a stride of {stride} "
                         f"needs {stride * height} ({height} rows of {stride})",
                         "check --size (HEIGHTxWIDTH), --stride and --pixel-format against the capture")
    rows = data.reshape(height, stride)[:, :need]
    if not fmt.packed:
        if fmt.bits == 8:
            return rows.astype(np.uint16)
        return rows.view("<u2").astype(np.uint16, copy=False)
    out = np.empty((height, fmt.row_bytes(width) // (5 if fmt.bits == 10 else 3) * (4 if fmt.bits == 10 else 2)), np.uint16)

    def work(r0: int, r1: int) -> None:  # row blocks on every core
        if fmt.bits == 10:  # 4 pixels: 4 high bytes, then their 2-bit remainders, first pixel lowest
            groups = rows[r0:r1].reshape(r1 - r0, -1, 5)
            high = out[r0:r1].reshape(r1 - r0, -1, 4)
            np.left_shift(groups[..., :4], 2, out=high, dtype=np.uint16)
            high |= (groups[..., 4:5] >> SHIFTS_10) & 3
        else:  # 12-bit: 2 pixels: 2 high bytes, then both 4-bit remainders, first pixel in the low nibble
            groups = rows[r0:r1].reshape(r1 - r0, -1, 3)
            high = out[r0:r1].reshape(r1 - r0, -1, 2)
            np.left_shift(groups[..., :2], 4, out=high, dtype=np.uint16)
            high |= (groups[..., 2:3] >> SHIFTS_12) & 0xF

    in_row_blocks(height, work)
    return out[:, :width]


def align(values: np.ndarray, fmt: PixelFormat, alignment: str = "auto") -> np.ndarray:
    """Unpacked values in the sensor's own bit scale: "low" (a Pi 4: as they are), "high" (a Pi 5:
    shifted to the top of 16 bits, shifted back), "auto" (high when a value exceeds the bit depth)."""
    if alignment not in ALIGNMENTS:
        raise InputError(f"--alignment must be one of {', '.join(ALIGNMENTS)}, not '{alignment}'")
    if fmt.packed or fmt.bits in (8, 16):
        return values
    shift, top = 16 - fmt.bits, (1 << fmt.bits) - 1
    peak = int(values.max()) if values.size else 0
    if alignment == "auto":
        alignment = "high" if peak > top else "low"
    if alignment == "low":
        if peak > top:
            raise InputError(f"{fmt.name} values reach {peak}, above the {fmt.bits}-bit maximum {top}",
                             "a Raspberry Pi 5 frame keeps them at the top of 16 bits: use --alignment high")
        return values
    if np.any(values & ((1 << shift) - 1)):
        raise InputError(f"{fmt.name} values have bits set below the top {fmt.bits} of 16, so they are not a Pi 5 frame",
                         "use --alignment low (a Raspberry Pi 4 frame)")
    return values >> shift


def _per_position(pattern: str, per_channel: tuple[float, float, float, float]) -> np.ndarray:
    """(R, Gr, Gb, B) values placed on the 2x2 cell of `pattern` (Gr: green on red rows)."""
    r, gr, gb, b = per_channel
    cell = np.array(list(pattern)).reshape(2, 2)
    red_row = 0 if "R" in cell[0] else 1
    out = np.empty((2, 2), np.float32)
    for y in range(2):
        for x in range(2):
            letter = cell[y, x]
            out[y, x] = {"R": r, "B": b}.get(letter, gr if y == red_row else gb)
    return out


def read_frame(
    buffer,
    format: str = "SRGGB12_CSI2P",
    shape: tuple[int, int] | None = None,
    stride: int | None = None,
    black_levels: tuple[float, float, float, float] | None = None,
    sensor: str | None = None,
    black_level: float | None = None,
    white_level: float | None = None,
    alignment: str = "auto",
    source: str = "frame",
    colour_gains: tuple[float, float] | None = None,
) -> Mosaic:
    """A raw camera frame as the normalised `Mosaic` that `read_mosaic` gives for a file.

    `shape` is (height, width) in pixels; `stride` the bytes a row takes in the buffer (default: no
    padding). Black levels: `black_levels` per channel (R, Gr, Gb, B) on libcamera's 16-bit scale
    (its SensorBlackLevels metadata), or `black_level` in the frame's own bit scale, or a `sensor`
    profile's (imx477, imx708, imx296); `white_level` (frame scale) defaults to the sensor's or the
    format's full scale. `colour_gains`: the frame's own white balance, picamera2's (red, blue)
    `ColourGains` metadata (what libcamera's AWB chose for it); weights trained on white-balanced
    input use it as a RAW file's as-shot balance."""
    fmt = parse_pixel_format(format)
    balance = None
    if colour_gains is not None:
        try:
            red, blue = (float(g) for g in colour_gains)
        except (TypeError, ValueError):
            raise InputError(f"{source}: colour gains must be two numbers (red, blue), not {colour_gains!r}",
                             "pass picamera2's ColourGains metadata as it is") from None
        if not (np.isfinite(red) and np.isfinite(blue) and red > 0 and blue > 0):
            raise InputError(f"{source}: colour gains ({red:g}, {blue:g}) must be positive", "pass picamera2's ColourGains metadata")
        balance = (red, 1.0, blue)
    if shape is None or len(shape) != 2 or min(int(n) for n in shape) <= 0:
        raise InputError("a raw frame needs its size", "give --size HEIGHTxWIDTH, e.g. --size 3040x4056")
    height, width = int(shape[0]), int(shape[1])
    _check_size(height, width, source)
    profile = None
    if sensor is not None:
        from profiles import load_sensor_profile

        profile = load_sensor_profile(sensor)
        if profile["bit_depth"] != fmt.bits:
            raise InputError(f"{fmt.name} is a {fmt.bits}-bit format; the {sensor} profile is {profile['bit_depth']}-bit",
                             "check --pixel-format and --sensor")
    values = align(unpack(buffer, fmt, (height, width), stride), fmt, alignment)
    top = (1 << fmt.bits) - 1
    if black_levels is not None:
        scale = float(1 << (16 - fmt.bits))
        black = _per_position(fmt.pattern, tuple(float(v) / scale for v in black_levels))
    elif black_level is not None:
        black = np.full((2, 2), float(black_level), np.float32)
    elif profile is not None:
        black = np.full((2, 2), float(profile["black_level"]), np.float32)
    else:
        raise InputError(f"{source}: a raw frame carries no black level",
                         "give --sensor (imx477, imx708, imx296) or --black-level in the frame's bit scale")
    white = float(white_level) if white_level is not None else float(profile["white_level"] if profile else top)
    if not np.all(np.isfinite(black)) or np.any(black < 0) or not np.isfinite(white) or white <= float(black.max()):
        raise InputError(f"{source}: black level {black.max():g} and white level {white:g} do not fit {fmt.bits}-bit data",
                         "check --black-level and --white-level (in the frame's bit scale)")
    data, levels = normalise_by_lookup(values, black, np.full((2, 2), white, np.float32))
    return Mosaic(
        data=data,
        pattern=normalise_pattern(fmt.pattern),
        black_level=tuple(float(v) for v in black.reshape(-1)),
        white_level=white,
        source=source,
        camera=sensor or "",
        white_balance=balance,
        extras={"levels": levels, "pixel_format": fmt.name, **({"white_balance_source": "ColourGains"} if balance else {})},
    )
