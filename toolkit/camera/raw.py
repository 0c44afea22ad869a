"""Camera RAW and .npy mosaics in, normalised Bayer mosaic out (numpy + rawpy, no torch).

`read_mosaic(path)` is the one entry point: it picks LibRaw for camera files and a pickle-free
numpy reader for `.npy`, subtracts the per-channel black level, scales by the white level and
remembers the Bayer pattern, so the rest of the toolkit sees one `Mosaic` type.
"""
from __future__ import annotations

import contextlib
import os
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from tokenize import TokenError
from typing import Iterator

import numpy as np

from toolkit.errors import InputError
from toolkit.parallel import in_row_blocks
from toolkit.progress import STDERR_LOCK

from .bayer import MIN_SIZE, PATTERNS, histogram_counts, level_histogram, normalise_pattern

NPY_SUFFIX = ".npy"
# Camera RAW suffixes a folder of inputs is scanned for (LibRaw decides whether it can read each).
RAW_SUFFIXES = (
    ".dng", ".arw", ".srf", ".sr2", ".nef", ".nrw", ".cr2", ".cr3", ".crw", ".orf", ".rw2", ".rwl", ".raw",
    ".pef", ".ptx", ".srw", ".raf", ".3fr", ".fff", ".iiq", ".erf", ".kdc", ".dcr", ".mos", ".mrw", ".x3f",
)


@dataclass
class Mosaic:
    """A Bayer mosaic normalised to [0, 1] (black 0, white 1; values below black clipped to 0)."""

    data: np.ndarray  # float32, H x W; read-only when the reader counted its levels (copy it to edit)
    pattern: str  # colour layout of the top-left 2x2 cell, e.g. 'RGGB'
    black_level: tuple[float, float, float, float]  # per 2x2 position, row-major
    white_level: float
    source: str = ""
    camera: str = ""
    white_balance: tuple[float, float, float] | None = None  # R, G, B multipliers from the file, if it has them
    orientation: int = 1  # EXIF orientation the file asks viewers to apply (the data stays as the sensor read it)
    captured: str | None = None  # capture time from the file, "YYYY:MM:DD HH:MM:SS" on the camera's clock
    extras: dict = field(default_factory=dict)

    @property
    def shape(self) -> tuple[int, int]:
        return tuple(self.data.shape)  # type: ignore[return-value]

    def histogram(self, edges: np.ndarray) -> np.ndarray:
        """`np.histogram(self.data, bins=edges)[0]`; free for a camera RAW, whose reader counted its levels."""
        levels = self.extras.get("levels")
        if levels is not None:
            return level_histogram(levels[0], levels[1], edges)
        return histogram_counts(self.data, edges)


def normalise_levels(raw: np.ndarray, black: np.ndarray, white: float | np.ndarray) -> np.ndarray:
    """(raw - black) / (white - black), clipped at 0, in float32; levels are scalars or per-pixel maps."""
    raw = np.asarray(raw, dtype=np.float32)
    black = np.asarray(black, dtype=np.float32)
    white = np.asarray(white, dtype=np.float32)
    if np.any(white <= black):
        raise InputError("the white level must be above the black level", "check --white-level and --black-level")
    out = (raw - black) / (white - black)
    return np.maximum(out, 0.0, out=out)


def _check_size(height: int, width: int, source: str) -> None:
    if height < MIN_SIZE or width < MIN_SIZE:
        raise InputError(
            f"{source}: image is {width}x{height} pixels, smaller than the {MIN_SIZE}x{MIN_SIZE} minimum",
            "use a larger image",
        )


def _pattern_from_libraw(colors: np.ndarray, desc: str) -> str:
    """Name the 2x2 pattern from LibRaw's colour indices and description such as 'RGBG'."""
    return "".join(desc[int(c)] for c in colors[:2, :2].reshape(-1))


@contextlib.contextmanager
def _captured_c_stderr() -> Iterator[list[str]]:
    """Catch what LibRaw prints on file descriptor 2, so a bad file gives one clean error line. The
    descriptor is the process's, so the capture holds `STDERR_LOCK` (other threads' log lines and
    progress wait for it) and should span as little as possible."""
    lines: list[str] = []
    try:
        saved = os.dup(2)
    except OSError:  # no usable stderr: nothing to capture
        yield lines
        return
    with STDERR_LOCK, tempfile.TemporaryFile() as sink:
        for stream in (sys.stdout, sys.stderr):  # Python's own buffered lines go out before the capture
            stream.flush()
        os.dup2(sink.fileno(), 2)
        try:
            yield lines
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            sink.seek(0)
            lines.extend(sink.read().decode("utf-8", "replace").splitlines())


def read_camera_raw(path: str | os.PathLike) -> Mosaic:
    """Read a Bayer camera RAW (DNG, ARW, NEF, CR2, ...) through LibRaw."""
    import rawpy

    name = str(path)
    libraw_said: list[str] = []
    try:
        with _captured_c_stderr() as libraw_said:  # LibRaw speaks while it opens and unpacks
            raw = rawpy.imread(name)
            try:
                raw.unpack()
            except BaseException:
                raw.close()
                raise
        with raw:
            return _mosaic_from_libraw(raw, name)
    except InputError:
        raise
    except (rawpy.LibRawError, rawpy.NotSupportedError, OSError, ValueError, MemoryError) as exc:
        detail = exc.args[0] if exc.args else type(exc).__name__
        if isinstance(detail, bytes):
            detail = detail.decode("utf-8", "replace")
        if any("end of file" in line.lower() for line in libraw_said):
            detail = "the file is truncated"
        raise InputError(
            f"{name}: LibRaw cannot read this file ({str(detail).strip() or type(exc).__name__})",
            "check that it is a complete camera RAW file (DNG, ARW, NEF, CR2, ...)",
        ) from exc


# LibRaw's `flip` (bit 0: mirror left-right, 1: upside down, 2: transpose) as an EXIF Orientation value
EXIF_ORIENTATION = {0: 1, 1: 2, 3: 3, 2: 4, 4: 5, 6: 6, 7: 7, 5: 8}


def _capture_time(timestamp) -> str | None:
    """The capture time LibRaw read (rawpy: a local `datetime`; 0 or the epoch when the file has none), in EXIF form."""
    import datetime

    if isinstance(timestamp, (int, float)):
        timestamp = datetime.datetime.fromtimestamp(timestamp) if timestamp > 0 else None
    if not isinstance(timestamp, datetime.datetime) or timestamp.timestamp() <= 0:
        return None
    return timestamp.strftime("%Y:%m:%d %H:%M:%S")


def _mosaic_from_libraw(raw, name: str) -> Mosaic:
    import rawpy

    if raw.raw_type != rawpy.RawType.Flat or raw.raw_pattern is None:
        raise InputError(
            f"{name}: not a Bayer mosaic (linear DNG, Foveon or similar stacked sensor)",
            "LLPackNet needs a single-plane 2x2 Bayer RAW",
        )
    pattern = np.asarray(raw.raw_pattern)
    desc = raw.color_desc.decode("ascii", "replace")
    if pattern.shape != (2, 2):
        raise InputError(
            f"{name}: colour filter repeats every {pattern.shape[0]}x{pattern.shape[1]} pixels (X-Trans or similar)",
            "LLPackNet needs a 2x2 Bayer RAW",
        )
    colors = np.asarray(raw.raw_colors_visible)
    data = np.asarray(raw.raw_image_visible)
    _check_size(data.shape[0], data.shape[1], name)
    letters = _pattern_from_libraw(colors, desc)
    if letters not in PATTERNS:  # the two greens must sit on a diagonal ('GRGB' has them in one column)
        raise InputError(f"{name}: colour filter '{letters}' is not an RGB Bayer pattern", "use an RGGB-family RAW")
    black_per_colour = np.asarray(raw.black_level_per_channel, dtype=np.float32)
    white_per_colour = raw.camera_white_level_per_channel
    if white_per_colour is not None and min(white_per_colour) > 0:
        white = np.asarray(white_per_colour, dtype=np.float32)
    else:
        white = np.full(len(black_per_colour), raw.white_level, dtype=np.float32)
    normalised, levels = normalise_by_lookup(data, black_per_colour[colors[:2, :2]], white[colors[:2, :2]])
    white_balance, white_balance_source = None, None
    for source, wb in (("as shot", raw.camera_whitebalance), ("daylight", raw.daylight_whitebalance)):
        values = np.asarray(wb if wb is not None else [], np.float64)[:3]
        if values.size == 3 and np.all(np.isfinite(values)) and np.all(values > 0):
            white_balance, white_balance_source = (float(values[0] / values[1]), 1.0, float(values[2] / values[1])), source
            break
    return Mosaic(
        data=normalised,
        pattern=letters,
        black_level=tuple(float(b) for b in black_per_colour[colors[:2, :2]].reshape(-1)),
        white_level=float(np.max(white)),
        source=name,
        white_balance=white_balance,
        orientation=EXIF_ORIENTATION.get(int(raw.sizes.flip), 1),
        captured=_capture_time(raw.other.timestamp),
        extras={"levels": levels, **({"white_balance_source": white_balance_source} if white_balance_source else {})},
    )


def normalise_by_lookup(raw: np.ndarray, black: np.ndarray, white: np.ndarray) -> tuple[np.ndarray, tuple[np.ndarray, np.ndarray]]:
    """`normalise_levels` for 16-bit sensor counts with levels per 2x2 position (`black`, `white`:
    2x2), through one 65,536-entry table per position (the same float32 arithmetic, so the same
    values), counting each level on the way: the amplifier's histogram then needs no pass over the
    photo. Returns the read-only normalised mosaic and (distinct values, counts)."""
    raw = np.asarray(raw)
    if raw.dtype != np.uint16 or raw.ndim != 2 or raw.shape[0] % 2 or raw.shape[1] % 2:
        return normalise_levels(raw, _per_pixel(black, raw.shape), _per_pixel(white, raw.shape)), None
    keys = sorted({(float(black[y, x]), float(white[y, x])) for y in range(2) for x in range(2)})
    tables = np.stack([normalise_levels(np.arange(1 << 16, dtype=np.uint16), np.float32(b), np.float32(w)) for b, w in keys])
    which = np.array([[keys.index((float(black[y, x]), float(white[y, x]))) for x in range(2)] for y in range(2)])
    # each 2x2 position's table: an offset added to its counts, as a repeating pair of rows
    offsets = np.tile(which << 16, (1, raw.shape[1] // 2)) if len(keys) > 1 else None
    out = np.empty(raw.shape, np.float32)
    flat = tables.ravel()

    def work(a: int, b: int) -> np.ndarray:  # row pairs a..b, a few at a time: the index stays in cache
        counts = np.zeros(flat.size, np.int64)
        for s in range(a, b, 32):
            e = min(s + 32, b)
            index = raw[2 * s : 2 * e].astype(np.intp)
            if offsets is not None:
                index.reshape(e - s, 2, -1)[...] += offsets
            np.take(flat, index, out=out[2 * s : 2 * e])
            counts += np.bincount(index.ravel(), minlength=flat.size)
        return counts

    counts = sum(in_row_blocks(raw.shape[0] // 2, work))
    present = np.nonzero(counts)[0]
    out.flags.writeable = False  # the counts describe these values
    return out, (flat[present], counts[present])


def _per_pixel(levels: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """A 2x2 pattern of levels repeated over a mosaic."""
    return np.tile(levels, (-(-shape[0] // 2), -(-shape[1] // 2)))[: shape[0], : shape[1]]


def _first_line(exc: BaseException, limit: int = 160) -> str:
    text = next((line.strip() for line in str(exc).splitlines() if line.strip()), type(exc).__name__)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _check_npy_header(name: str) -> None:
    """Read the .npy header alone and refuse, before any data is read, what cannot be a mosaic.

    Object arrays (pickle), records, strings, other than 2-D, and headers that promise more
    data than the file holds are refused without allocating or unpickling anything.
    """
    fmt = np.lib.format
    if _peek(name, 4) == b"PK\x03\x04":
        raise InputError(f"{name}: is an .npz archive, not one .npy array", "save one 2-D array with numpy.save")
    try:
        with open(name, "rb") as fh:
            version = fmt.read_magic(fh)
            if version == (1, 0):
                shape, _, dtype = fmt.read_array_header_1_0(fh)
            elif version == (2, 0):
                shape, _, dtype = fmt.read_array_header_2_0(fh)
            else:
                raise InputError(f"{name}: .npy format version {version[0]}.{version[1]} is not supported",
                                 "save a plain numeric array with numpy.save")
            available = os.fstat(fh.fileno()).st_size - fh.tell()
    except InputError:
        raise
    except OSError as exc:
        raise InputError(f"{name}: cannot read this .npy file ({exc.strerror or exc})", "check the file's permissions") from exc
    except (ValueError, TypeError, SyntaxError, OverflowError, MemoryError, RecursionError, KeyError, TokenError) as exc:
        # numpy parses the header as a Python literal; a damaged one surfaces the tokenizer's and parser's errors
        raise InputError(f"{name}: not a readable .npy array ({_first_line(exc)})", "save it with numpy.save") from exc
    if dtype.hasobject:
        raise InputError(f"{name}: the array needs pickle to load, which is refused", "save a plain numeric array")
    if dtype.kind not in "uif" or dtype.shape:
        raise InputError(f"{name}: array dtype {dtype} is not a number type", "save uint16 counts or float32 values")
    if len(shape) != 2:
        raise InputError(f"{name}: array has shape {shape}, a Bayer mosaic is 2-D (H x W)", "save a single-plane mosaic")
    needed = int(shape[0]) * int(shape[1]) * dtype.itemsize
    if needed > available:
        raise InputError(f"{name}: cannot read {shape[0]}x{shape[1]} {dtype} values, the file is truncated",
                         "copy or save the .npy file again")


def _peek(name: str, count: int) -> bytes:
    try:
        with open(name, "rb") as fh:
            return fh.read(count)
    except OSError:
        return b""


def read_npy_mosaic(
    path: str | os.PathLike,
    black_level: float | None = None,
    white_level: float | None = None,
    pattern: str = "RGGB",
) -> Mosaic:
    """Read a 2-D mosaic from `.npy` without pickle.

    Integer arrays are sensor counts and need both levels; float arrays default to black 0 and
    white 1 (already normalised).
    """
    name = str(path)
    _check_npy_header(name)
    try:
        array = np.load(name, allow_pickle=False, mmap_mode=None)
    except ValueError as exc:
        if "pickle" in str(exc).lower() or "object" in str(exc).lower():
            raise InputError(f"{name}: the array needs pickle to load, which is refused", "save a plain numeric array") from exc
        raise InputError(f"{name}: not a readable .npy array ({_first_line(exc)})", "save it with numpy.save") from exc
    except (OSError, EOFError) as exc:
        raise InputError(f"{name}: cannot read this .npy file ({_first_line(exc)})", "save it again with numpy.save") from exc
    except (TypeError, SyntaxError, OverflowError, MemoryError, RecursionError) as exc:  # numpy's odd ones on damaged files
        raise InputError(f"{name}: not a readable .npy array ({type(exc).__name__})", "save it with numpy.save") from exc
    if not isinstance(array, np.ndarray):
        raise InputError(f"{name}: holds several arrays, not one mosaic", "save one 2-D array with numpy.save")
    if array.ndim != 2:
        raise InputError(f"{name}: array has shape {array.shape}, a Bayer mosaic is 2-D (H x W)", "save a single-plane mosaic")
    if array.dtype.kind not in "uif":
        raise InputError(f"{name}: array dtype {array.dtype} is not a number type", "save uint16 counts or float32 values")
    _check_size(array.shape[0], array.shape[1], name)
    if array.dtype.kind == "f" and not np.all(np.isfinite(array)):
        raise InputError(f"{name}: array contains NaN or Inf values", "replace them before enhancing")
    if array.dtype.kind in "ui":
        if black_level is None or white_level is None:
            raise InputError(
                f"{name}: integer sensor counts need --black-level and --white-level",
                "for a Sony A7S II use --black-level 512 --white-level 16383",
            )
    black = 0.0 if black_level is None else float(black_level)
    white = 1.0 if white_level is None else float(white_level)
    if not (np.isfinite(black) and np.isfinite(white)):
        raise InputError(f"the black and white levels must be finite numbers, not {black} and {white}",
                         "check --black-level and --white-level")
    with np.errstate(over="ignore"):  # float64 beyond the float32 range: refused just below
        data = normalise_levels(array, black, white)
    if not np.all(np.isfinite(data)):
        raise InputError(f"{name}: values beyond the float32 range", "save counts or values in [0, 1]")
    return Mosaic(
        data=data,
        pattern=normalise_pattern(pattern),
        black_level=(black,) * 4,
        white_level=white,
        source=name,
    )


def read_mosaic(
    path: str | os.PathLike,
    black_level: float | None = None,
    white_level: float | None = None,
    pattern: str | None = None,
) -> Mosaic:
    """Read a camera RAW file or a `.npy` mosaic; levels and pattern apply to `.npy` only."""
    p = Path(path)
    if not p.exists():
        raise InputError(f"{p}: no such file", "check the path")
    if p.is_dir():
        raise InputError(f"{p}: is a directory, not an image file", "give one RAW or .npy file")
    if p.stat().st_size == 0:
        raise InputError(f"{p}: file is empty", "copy the RAW file again")
    if p.suffix.lower() == NPY_SUFFIX:
        return read_npy_mosaic(p, black_level, white_level, pattern or "RGGB")
    if black_level is not None or white_level is not None or pattern is not None:
        raise InputError(
            f"{p}: --black-level, --white-level and --pattern apply to .npy mosaics only",
            "a camera RAW file carries its own levels and pattern",
        )
    return read_camera_raw(p)
