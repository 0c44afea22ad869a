"""Atomic file output and image writers (numpy only).

Everything the toolkit writes goes through `atomic_write`: the bytes land in a temporary file
beside the target and are renamed into place, so a crash leaves either the old file or the new
one, never half of one.
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import os
import struct
import tempfile
import zlib
from pathlib import Path
from typing import Callable, Iterator

import numpy as np

from .errors import OutputError

IMAGE_SUFFIXES = {".png": "png", ".tif": "tiff", ".tiff": "tiff"}


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


def image_format(path: str | os.PathLike) -> str:
    """Return 'png' or 'tiff' for an output path, or explain which suffixes work."""
    if Path(path).is_dir():
        raise OutputError(f"output path {path} is a directory", "give a file name such as out.png")
    suffix = Path(path).suffix.lower()
    if suffix not in IMAGE_SUFFIXES:
        raise OutputError(
            f"cannot write '{suffix or Path(path).name}' images",
            "use an output name ending in .png, .tif or .tiff",
        )
    return IMAGE_SUFFIXES[suffix]


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


def encode_png(image: np.ndarray) -> bytes:
    """Encode an H x W x 3 uint8/uint16 array as a PNG (no extra dependency needed on a device)."""
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype not in (np.uint8, np.uint16):
        raise ValueError("encode_png takes an H x W x 3 uint8 or uint16 array")
    height, width, _ = image.shape
    depth = 8 if image.dtype == np.uint8 else 16
    rows = image.astype(">u2") if depth == 16 else image
    raw = np.concatenate(
        [np.zeros((height, 1), np.uint8), rows.reshape(height, -1).view(np.uint8)], axis=1
    ).tobytes()

    def chunk(kind: bytes, payload: bytes) -> bytes:
        return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload))

    header = struct.pack(">IIBBBBB", width, height, depth, 2, 0, 0, 0)
    srgb = struct.pack(">B", 0)  # sRGB chunk, perceptual intent: the network outputs sRGB
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"sRGB", srgb)
        + chunk(b"IDAT", zlib.compress(raw, 6))
        + chunk(b"IEND", b"")
    )


def write_image(path: str | os.PathLike, rgb: np.ndarray, bits: int = 8) -> Path:
    """Write an sRGB image (H x W x 3: float in [0, 1], or already uint8/uint16 for `bits`) as PNG or TIFF, atomically."""
    fmt = image_format(path)
    image = to_integer_image(rgb, bits)
    if fmt == "png":
        atomic_write_bytes(path, encode_png(image))
    else:
        import tifffile

        atomic_write_with(path, lambda tmp: tifffile.imwrite(tmp, image, photometric="rgb"))
    return Path(path)


def read_png(path: str | os.PathLike) -> np.ndarray:
    """Decode a PNG written by `encode_png` (RGB, 8/16 bit, filter 0): lets tools and tests read outputs back."""
    data = Path(path).read_bytes()
    if data[:8] != b"\x89PNG\r\n\x1a\n":
        raise ValueError(f"{path} is not a PNG file")
    pos, idat, header = 8, b"", None
    while pos < len(data):
        (length,) = struct.unpack(">I", data[pos : pos + 4])
        kind, payload = data[pos + 4 : pos + 8], data[pos + 8 : pos + 8 + length]
        if kind == b"IHDR":
            header = struct.unpack(">IIBBBBB", payload)
        elif kind == b"IDAT":
            idat += payload
        pos += 12 + length
    if header is None or header[3] != 2 or header[2] not in (8, 16) or header[6] != 0:
        raise ValueError(f"{path}: only non-interlaced 8/16-bit RGB PNGs are supported here")
    width, height, depth = header[0], header[1], header[2]
    raw = np.frombuffer(zlib.decompress(idat), np.uint8).reshape(height, 1 + width * 3 * depth // 8)
    if raw[:, 0].any():
        raise ValueError(f"{path}: PNG row filters are not supported by this reader")
    pixels = raw[:, 1:]
    if depth == 16:
        return pixels.copy().view(">u2").astype(np.uint16).reshape(height, width, 3)
    return pixels.reshape(height, width, 3).copy()
