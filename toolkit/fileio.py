"""Atomic file output, and the image formats the toolkit writes.

Everything the toolkit writes goes through `atomic_write`: the bytes land in a temporary file
beside the target and are renamed into place, so a crash leaves either the old file or the new
one, never half of one.
"""
from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

import numpy as np

from .errors import OutputError


def _check_output_dir(path: Path) -> None:
    parent = path.parent
    if path.is_dir():
        raise OutputError(f"output path {path} is a directory", "give a file name such as out.png")
    if parent.exists() and not parent.is_dir():
        raise OutputError(f"{parent} is a file, not a folder", "choose another -o path")
    if not parent.exists():
        raise OutputError(f"output folder {parent} does not exist", "create it first or choose another -o path")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise OutputError(f"output folder {parent} is not writable", "choose a folder you can write to")


def read_json_document(path: Path, schema: str, version: int, kind: str, redo: str, error=None) -> dict:
    """A JSON file this toolkit wrote (a report, a bundle's index): readable, an object, the right
    `schema` and `schema_version`; anything else is one `error` (a UserError class) naming the file."""
    from .errors import UserError

    error = error or UserError
    try:
        document = json.loads(Path(path).read_text())
    except (OSError, ValueError, RecursionError) as exc:  # JSONDecodeError and UnicodeDecodeError are ValueErrors
        raise error(f"{path} is missing or not valid JSON ({type(exc).__name__})", redo) from exc
    if not isinstance(document, dict) or document.get("schema") != schema:
        raise error(f"{path} is not an LLPackNet Edge {kind}", redo)
    if document.get("schema_version") != version:
        raise error(f"{path} has {kind} version {document.get('schema_version')}, this toolkit reads {version}", redo)
    return document


def user_cache_dir(*parts: str) -> Path:
    """A folder in the user's cache for state that outlives a run but not the machine (training's
    resume state, compiled models): $LLPACK_CACHE, else $XDG_CACHE_HOME/llpack, else ~/.cache/llpack."""
    root = os.environ.get("LLPACK_CACHE") or Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "llpack"
    return Path(root).joinpath(*parts)


def file_sha256(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    """Hex SHA-256 of a file, read in chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(chunk), b""):
            digest.update(block)
    return digest.hexdigest()


def _temp_beside(target: Path) -> Path:
    """Create an empty hidden temporary file in the target's folder (same file system: rename is atomic)."""
    _check_output_dir(target)
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".part", dir=target.parent)
    except OSError as exc:
        raise OutputError(f"cannot write in {target.parent} ({exc.strerror})", "choose a folder you can write to") from exc
    os.close(fd)
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes 0600; give the final file ordinary permissions
    return Path(tmp)


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside `path`; rename it onto `path` only if the block succeeds."""
    target = Path(path)
    tmp_path = _temp_beside(target)
    try:
        yield tmp_path
        os.replace(tmp_path, target)
    except BaseException as exc:
        with contextlib.suppress(FileNotFoundError):
            tmp_path.unlink()
        if isinstance(exc, OSError):
            raise OutputError(f"cannot write {target} ({exc.strerror or exc})", "check free space and permissions") from exc
        raise


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())


def atomic_write_json(path: str | os.PathLike, obj: object) -> None:
    atomic_write_bytes(path, (json.dumps(obj, indent=2, sort_keys=False) + "\n").encode())


def atomic_write_npz(path: str | os.PathLike, **arrays: np.ndarray) -> None:
    """Several arrays in one .npz (read back with allow_pickle=False), atomically."""
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as fh:
            np.savez(fh, **arrays)


def atomic_write_with(path: str | os.PathLike, writer: Callable[[Path], None]) -> None:
    """Let `writer` fill a temporary file, then move it into place."""
    with atomic_path(path) as tmp:
        writer(tmp)


def check_output_path(path: str | os.PathLike) -> Path:
    """Fail early, before any work, if a file cannot be created at `path` (probes the folder)."""
    target = Path(path)
    os.unlink(_temp_beside(target))
    return target


# ---------------------------------------------------------------- image formats
@dataclass(frozen=True)
class ImageMetadata:
    """What an output image carries over from its RAW file, in EXIF terms."""

    orientation: int = 1  # EXIF Orientation (1: as stored; 6: turn 90 degrees clockwise to view; ...)
    captured: str | None = None  # capture time as EXIF writes it, "YYYY:MM:DD HH:MM:SS" (the camera's clock)
    software: str = "LLPackNet Edge"


@dataclass(frozen=True)
class ImageFormat:
    """One output format: the CLI's `--format` choices, output suffixes and the profiler's encode
    stage all read this table."""

    name: str
    suffixes: tuple[str, ...]  # the first is what a folder run writes
    bits: tuple[int, ...]  # bits per channel it stores
    metadata: bool  # carries orientation and capture time
    encode: Callable[[np.ndarray, ImageMetadata, int], bytes]  # (uint8/uint16 H x W x 3, metadata, quality) -> file bytes
    summary: str


# zlib settings for PNG, chosen on full-size outputs of the network (docs/performance.md has the figures):
# level 1 with the run-length strategy (zlib's Z_RLE, meant for PNG's filtered rows) encodes faster than the
# default level 6 and than level 1 alone, in smaller files than level 1's. With OpenCV, every row also takes
# the Average filter instead of libpng's trial of all five: 1.6x faster again, the file no larger.
PNG_LEVEL, PNG_STRATEGY = 1, 3
DEFAULT_QUALITY = 95


@functools.lru_cache(maxsize=1)
def png_encoder() -> str:
    """Which library writes PNG here: OpenCV (libpng, about 3x faster than Pillow on a 12 MP photo;
    the `fast-png` install extra) when it is installed, else Pillow (8-bit) and pypng (16-bit). The
    pixels are the same either way: PNG is lossless."""
    import importlib.util

    return "opencv" if importlib.util.find_spec("cv2") is not None else "pillow/pypng"


def _pillow(image: np.ndarray):
    from PIL import Image

    return Image.fromarray(np.ascontiguousarray(image))


def _exif(metadata: ImageMetadata):
    from PIL import Image

    exif = Image.Exif()
    exif[0x0112] = metadata.orientation  # Orientation
    exif[0x0131] = metadata.software  # Software
    if metadata.captured:
        exif[0x0132] = metadata.captured  # DateTime
        exif.get_ifd(0x8769)[0x9003] = metadata.captured  # Exif IFD: DateTimeOriginal
    return exif


def _encode_png(image: np.ndarray, metadata: ImageMetadata, quality: int) -> bytes:
    import io

    if png_encoder() == "opencv":
        import cv2

        settings = [cv2.IMWRITE_PNG_COMPRESSION, PNG_LEVEL, cv2.IMWRITE_PNG_STRATEGY, PNG_STRATEGY]
        if hasattr(cv2, "IMWRITE_PNG_FILTER"):  # OpenCV 4.11+: one filter for every row, not libpng's trial of all five
            settings += [cv2.IMWRITE_PNG_FILTER, cv2.IMWRITE_PNG_FILTER_AVG]
        ok, data = cv2.imencode(".png", np.ascontiguousarray(image[..., ::-1]), settings)  # OpenCV takes BGR
        if not ok:
            raise OutputError("OpenCV could not encode the PNG image")
        return data.tobytes()
    buffer = io.BytesIO()
    if image.dtype == np.uint8:  # Pillow's PNG writer reads the strategy as `compress_type`
        _pillow(image).save(buffer, "PNG", compress_level=PNG_LEVEL, compress_type=PNG_STRATEGY)
    else:  # Pillow has no 16-bit RGB mode; pypng (pure Python) writes it
        import png

        height, width, _ = image.shape
        png.Writer(width, height, greyscale=False, bitdepth=16, compression=PNG_LEVEL).write_array(
            buffer, memoryview(np.ascontiguousarray(image).reshape(-1)))
    return buffer.getvalue()


def _encode_jpeg(image: np.ndarray, metadata: ImageMetadata, quality: int) -> bytes:
    import io

    buffer = io.BytesIO()
    _pillow(image).save(buffer, "JPEG", quality=quality, exif=_exif(metadata))
    return buffer.getvalue()


def _encode_tiff(image: np.ndarray, metadata: ImageMetadata, quality: int) -> bytes:
    import io

    import tifffile

    buffer = io.BytesIO()
    tifffile.imwrite(buffer, image, photometric="rgb", software=metadata.software, datetime=metadata.captured,
                     extratags=[(0x0112, "H", 1, metadata.orientation, True)])
    return buffer.getvalue()


IMAGE_FORMATS: dict[str, ImageFormat] = {
    f.name: f
    for f in (
        ImageFormat("png", (".png",), (8, 16), False, _encode_png, "lossless; OpenCV where installed, else Pillow and pypng"),
        ImageFormat("jpeg", (".jpg", ".jpeg"), (8,), True, _encode_jpeg, "what cameras keep; --quality (default 95)"),
        ImageFormat("tiff", (".tif", ".tiff"), (8, 16), True, _encode_tiff, "uncompressed, fastest to write; 8 or 16 bits"),
    )
}


def image_format(path: str | os.PathLike) -> str:
    """The `IMAGE_FORMATS` name for an output path, or explain which suffixes work."""
    if Path(path).is_dir():
        raise OutputError(f"output path {path} is a directory", "give a file name such as out.jpg")
    suffix = Path(path).suffix.lower()
    for fmt in IMAGE_FORMATS.values():
        if suffix in fmt.suffixes:
            return fmt.name
    names = ", ".join(s for f in IMAGE_FORMATS.values() for s in f.suffixes)
    raise OutputError(f"cannot write '{suffix or Path(path).name}' images", f"use an output name ending in {names}")


def check_image_options(fmt: str, bits: int, quality: int = DEFAULT_QUALITY) -> None:
    """Refuse a format, depth or quality that cannot be written, before any work."""
    if fmt not in IMAGE_FORMATS:
        raise OutputError(f"unknown output format '{fmt}'", f"choose from {', '.join(IMAGE_FORMATS)}")
    if bits not in IMAGE_FORMATS[fmt].bits:
        deep = [f.name for f in IMAGE_FORMATS.values() if bits in f.bits]
        raise OutputError(f"{fmt.upper()} stores {' or '.join(map(str, IMAGE_FORMATS[fmt].bits))} bits per channel, not {bits}",
                          f"write {' or '.join(deep)} for {bits}-bit output" if deep else "use --bits 8 or 16")
    if isinstance(quality, bool) or not isinstance(quality, int) or not 1 <= quality <= 100:
        raise OutputError(f"--quality must be a whole number from 1 to 100, not {quality}", "95 is the default")


def to_integer_image(rgb: np.ndarray, bits: int) -> np.ndarray:
    """Quantise a float image in [0, 1] (H x W x 3) to uint8 or uint16 with rounding."""
    if bits not in (8, 16):
        raise OutputError(f"--bits must be 8 or 16, not {bits}")
    peak = 255 if bits == 8 else 65535
    dtype = np.uint8 if bits == 8 else np.uint16
    rgb = np.asarray(rgb)
    if rgb.dtype == dtype:  # already rounded (Enhancer.enhance(..., bits=...))
        return rgb
    if rgb.dtype.kind in "ui":
        raise ValueError(f"a {rgb.dtype} image cannot be written with {bits} bits")
    out = np.empty(rgb.shape, dtype)

    def work(r0: int, r1: int) -> None:  # row blocks on every core, in place: a 12 MP frame is 145 MB of float32
        block = np.clip(rgb[r0:r1], 0.0, 1.0)
        block *= peak
        np.rint(block, out=block)
        out[r0:r1] = block

    from .parallel import in_row_blocks

    in_row_blocks(len(rgb), work)
    return out


def encode_image(image: np.ndarray, fmt: str, metadata: ImageMetadata | None = None, quality: int = DEFAULT_QUALITY) -> bytes:
    """The file bytes of an H x W x 3 uint8/uint16 image in format `fmt` (an `IMAGE_FORMATS` name)."""
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype not in (np.uint8, np.uint16):
        raise ValueError("encode_image takes an H x W x 3 uint8 or uint16 array")
    check_image_options(fmt, image.dtype.itemsize * 8, quality)
    return IMAGE_FORMATS[fmt].encode(image, metadata or ImageMetadata(), quality)


def write_image(path: str | os.PathLike, rgb: np.ndarray, bits: int = 8, quality: int = DEFAULT_QUALITY,
                metadata: ImageMetadata | None = None) -> Path:
    """Write an sRGB image (H x W x 3: float in [0, 1], or already uint8/uint16 for `bits`) in the
    format its suffix names, atomically."""
    fmt = image_format(path)
    check_image_options(fmt, bits, quality)
    atomic_write_bytes(path, encode_image(to_integer_image(rgb, bits), fmt, metadata, quality))
    return Path(path)


def read_image(path: str | os.PathLike) -> np.ndarray:
    """An image this toolkit wrote, back as an H x W x 3 uint8/uint16 array (tools and tests)."""
    fmt = image_format(path)
    if fmt == "tiff":
        import tifffile

        return tifffile.imread(path)
    if fmt == "png":  # pypng reads both depths (Pillow would reduce 16-bit RGB to 8)
        import png

        width, height, rows, info = png.Reader(filename=str(path)).read_flat()
        dtype = np.uint16 if info["bitdepth"] > 8 else np.uint8
        planes = info["planes"]
        return np.asarray(rows, dtype).reshape(height, width, planes)[..., :3]
    from PIL import Image

    with Image.open(path) as im:
        return np.asarray(im.convert("RGB"))
