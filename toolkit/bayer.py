"""Bayer mosaic geometry in numpy: pattern phase, padding to the network grid, and packing.

The network expects an RGGB mosaic whose height and width are multiples of 16. Any 2x2 Bayer
pattern becomes RGGB by reflect-padding one row and/or column at the top/left; reflection keeps
the colour of every padded pixel right (index -k mirrors to +k, same parity). The padding is
cropped off the output again, so the result is aligned with, and the size of, the input.
"""
from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np

PATTERNS = ("RGGB", "BGGR", "GRBG", "GBRG")
GRID = 16  # Pack works on 16x16 blocks: 2x2 Bayer cells, each plane space-to-depth by 8.
MIN_SIZE = 32

# Offset (row, column) of the first R pixel in each 2x2 pattern.
_RED_OFFSET = {"RGGB": (0, 0), "GRBG": (0, 1), "GBRG": (1, 0), "BGGR": (1, 1)}


def normalise_pattern(pattern: str) -> str:
    """Upper-case and check a pattern name such as 'rggb'."""
    name = str(pattern).strip().upper()
    if name not in PATTERNS:
        from .errors import InputError

        raise InputError(f"unknown Bayer pattern '{pattern}'", f"use one of {', '.join(PATTERNS)}")
    return name


@dataclass(frozen=True)
class Placement:
    """Where the original image sits inside the padded RGGB network input."""

    top: int
    left: int
    height: int
    width: int
    padded_height: int
    padded_width: int

    def crop(self, image: np.ndarray) -> np.ndarray:
        """Cut the original area out of a padded array whose last two axes are (H, W)."""
        return image[..., self.top : self.top + self.height, self.left : self.left + self.width]


def plan_placement(
    height: int, width: int, pattern: str, grid: int = GRID, size: tuple[int, int] | None = None
) -> Placement:
    """Decide the padding that makes an image RGGB-phased and a multiple of `grid` (or exactly `size`)."""
    top, left = _RED_OFFSET[normalise_pattern(pattern)]
    padded_h = -(-(height + top) // grid) * grid
    padded_w = -(-(width + left) // grid) * grid
    if size is not None:
        if padded_h > size[0] or padded_w > size[1]:
            from .errors import InputError

            raise InputError(
                f"the image ({width}x{height}) is larger than this model's input size ({size[1]}x{size[0]})",
                "export an artifact of a larger --size",
            )
        padded_h, padded_w = size
    return Placement(top, left, height, width, padded_h, padded_w)


def to_network_grid(
    mosaic: np.ndarray, pattern: str, grid: int = GRID, size: tuple[int, int] | None = None
) -> tuple[np.ndarray, Placement]:
    """Reflect-pad a 2-D mosaic to RGGB phase and a multiple of `grid` (or to `size`); return it and its placement."""
    if mosaic.ndim != 2:
        raise ValueError("a Bayer mosaic is a 2-D array")
    height, width = mosaic.shape
    place = plan_placement(height, width, pattern, grid, size)
    pads = (
        (place.top, place.padded_height - height - place.top),
        (place.left, place.padded_width - width - place.left),
    )
    return _reflect_pad(mosaic, pads), place


def _reflect_pad(mosaic: np.ndarray, pads) -> np.ndarray:
    """Reflect padding that keeps the Bayer phase, repeated when the pad exceeds the image."""
    out = mosaic
    (top, bottom), (left, right) = pads
    while top or bottom or left or right:
        h, w = out.shape
        step = ((min(top, h - 1), min(bottom, h - 1)), (min(left, w - 1), min(right, w - 1)))
        out = np.pad(out, step, mode="reflect")
        top, bottom = top - step[0][0], bottom - step[0][1]
        left, right = left - step[1][0], right - step[1][1]
    return out


def bayer_channel_index(pattern: str) -> np.ndarray:
    """2x2 array of colour indices (0=R, 1=G, 2=B) for a pattern name."""
    lookup = {"R": 0, "G": 1, "B": 2}
    name = normalise_pattern(pattern)
    return np.array([[lookup[name[0]], lookup[name[1]]], [lookup[name[2]], lookup[name[3]]]])


def pack_rggb(mosaic: np.ndarray, block: int = 8) -> np.ndarray:
    """LLPackNet's Pack in numpy: (..., H, W) RGGB -> (..., 4*block*block, H/2/block, W/2/block).

    Channels are ordered plane-major (R, G1, G2, B), then 8*i + j inside each plane, the order
    of PyTorch's pixel_unshuffle. Exact inverse: `unpack_rggb`.
    """
    *lead, height, width = mosaic.shape
    s = 2 * block
    if height % s or width % s:
        raise ValueError(f"pack needs H and W that are multiples of {s}")
    h, w = height // s, width // s
    # (.., h, block, 2, w, block, 2): row = (y*block + i)*2 + py
    x = mosaic.reshape(*lead, h, block, 2, w, block, 2)
    n = len(lead)
    order = list(range(n)) + [n + 2, n + 5, n + 1, n + 4, n + 0, n + 3]  # py, px, i, j, y, x
    return x.transpose(order).reshape(*lead, 4 * block * block, h, w)


def _in_row_blocks(rows: int, work) -> list:
    """work(start, stop) over row blocks on every core, results in order: numpy's copies and ufuncs
    release the GIL, and a 12-megapixel frame is memory-bound work that one core cannot saturate."""
    workers = min(os.cpu_count() or 1, 8, max(rows // 8, 1))
    bounds = np.linspace(0, rows, workers + 1).astype(int)
    if workers == 1:
        return [work(0, rows)]
    with ThreadPoolExecutor(workers) as pool:
        return list(pool.map(lambda i: work(bounds[i], bounds[i + 1]), range(workers)))


def pack_network_input(mosaic: np.ndarray, gain: float) -> np.ndarray:
    """The network's input from an RGGB mosaic on the 16-pixel grid: [1, 256, H/16, W/16] float32, gain applied.

    One pass: each block of packed rows is gathered and scaled straight into the output."""
    height, width = mosaic.shape
    if height % 16 or width % 16:
        raise ValueError("pack needs H and W that are multiples of 16")
    h, w = height // 16, width // 16
    out = np.empty((1, 256, h, w), np.float32)
    view = np.asarray(mosaic, dtype=np.float32).reshape(h, 8, 2, w, 8, 2)  # y, i, py, x, j, px
    target = out.reshape(2, 2, 8, 8, h, w)  # py, px, i, j, y, x
    g = np.float32(gain)

    def work(y0: int, y1: int) -> None:
        np.multiply(view[y0:y1].transpose(2, 5, 1, 4, 0, 3), g, out=target[..., y0:y1, :])

    _in_row_blocks(h, work)
    return out


def unpack_rggb(packed: np.ndarray, block: int = 8) -> np.ndarray:
    """Inverse of `pack_rggb`."""
    *lead, channels, h, w = packed.shape
    if channels != 4 * block * block:
        raise ValueError(f"unpack needs {4 * block * block} channels")
    n = len(lead)
    x = packed.reshape(*lead, 2, 2, block, block, h, w)  # py, px, i, j, y, x
    order = list(range(n)) + [n + 4, n + 2, n + 0, n + 5, n + 3, n + 1]
    return x.transpose(order).reshape(*lead, h * block * 2, w * block * 2)


def unpack_rgb(features: np.ndarray, block: int = 8) -> np.ndarray:
    """LLPackNet's UnPack in numpy: (..., 3*block*block, h, w) -> (..., 3, block*h, block*w).

    Channel 3*(block*i + j) + k at (y, x) is colour k of output pixel (block*y + i, block*x + j).
    """
    *lead, channels, h, w = features.shape
    if channels != 3 * block * block:
        raise ValueError(f"UnPack needs {3 * block * block} channels")
    n = len(lead)
    x = features.reshape(*lead, block, block, 3, h, w)  # i, j, k, y, x
    order = list(range(n)) + [n + 2, n + 3, n + 0, n + 4, n + 1]  # k, y, i, x, j
    return x.transpose(order).reshape(*lead, 3, h * block, w * block)


def features_to_image(features: np.ndarray, placement: "Placement | None" = None, block: int = 8) -> np.ndarray:
    """UnPack, crop and clip in one pass: features [3*block*block, h, w] -> float32 H x W x 3 in [0, 1].

    The channel order (3*(block*i + j) + k) is read as a strided view straight into height-width-
    colour order, so no channel-first image is ever built; the same values as
    `np.clip(placement.crop(unpack_rgb(features)), 0, 1).transpose(1, 2, 0)`."""
    channels, h, w = features.shape
    if channels != 3 * block * block:
        raise ValueError(f"UnPack needs {3 * block * block} channels")
    view = features.reshape(block, block, 3, h, w).transpose(3, 0, 4, 1, 2)  # y, i, x, j, k: a view
    top, left = (placement.top, placement.left) if placement else (0, 0)
    height, width = (placement.height, placement.width) if placement else (h * block, w * block)
    out = np.empty((height, width, 3), np.float32)

    def work(r0: int, r1: int) -> None:
        # output rows r0..r1 are padded rows top+r0..top+r1: gather whole cell rows, then cut
        y0, y1 = (top + r0) // block, -(-(top + r1) // block)
        rows = view[y0:y1].reshape((y1 - y0) * block, w * block, 3)
        start = top + r0 - y0 * block
        np.clip(rows[start : start + r1 - r0, left : left + width], 0.0, 1.0, out=out[r0:r1])

    _in_row_blocks(height, work)
    return out


# The paper's amplifier reads a 63-bin histogram with log-spaced edges over [0, 1].
HISTOGRAM_EDGES = ((2.0 ** np.linspace(0.0, 8.0, 64)) - 1.0) / 255.0
_FINE = 1 << 16  # uniform fine cells per unit: an exact power-of-two scale, so floor(x * _FINE) is exact


def histogram_counts(values: np.ndarray, edges: np.ndarray) -> np.ndarray:
    """`np.histogram(values, bins=edges)[0]` for increasing edges inside [0, 1] and finite values
    (normalised mosaics), in a few linear passes instead of a binary search per value.

    A value x in [0, 1) lies in fine cell floor(x * 2^16) (exact: a power-of-two scale). A cell that
    holds no edge belongs wholly to one bin; only the values in cells that hold an edge, and those
    at or above 1, are compared exactly with numpy's own rule."""
    edges = np.asarray(edges, np.float64)
    x = np.asarray(values).ravel()
    if x.size == 0 or edges[0] < 0 or edges[-1] > 1 or float(x.min()) < 0:
        return np.histogram(x, bins=edges)[0]
    fine = _FINE

    def count(r0: int, r1: int):  # fine cells 0..fine-1 for [0, 1); fine: x >= 1
        cell = np.minimum(x[r0:r1] * np.float32(fine), fine).astype(np.intp)
        return x[r0:r1], cell, np.bincount(cell, minlength=fine + 1)

    blocks = _in_row_blocks(x.size, count)
    per_cell = sum(block[2] for block in blocks)
    lower = np.arange(fine + 1) / fine
    bin_of = np.searchsorted(edges, lower, side="right") - 1  # the bin of each cell's lower end
    bin_of[lower >= edges[-1]] = -1
    scaled = edges * fine
    exact = np.zeros(fine + 1, bool)
    exact[np.floor(scaled[scaled != np.floor(scaled)]).astype(np.int64)] = True  # an edge strictly inside the cell
    exact[fine] = True  # x >= 1: numpy closes the last bin at 1 and drops anything above
    keep = ~exact & (bin_of >= 0)
    counts = np.bincount(bin_of[keep], weights=per_cell[keep], minlength=len(edges) - 1).astype(np.int64)
    near_edges = np.concatenate([part[exact[cell]] for part, cell, _ in blocks])
    return counts + np.histogram(near_edges, bins=edges)[0]


def exposure_histogram(mosaic: np.ndarray) -> np.ndarray:
    """Fraction of pixels in each of the amplifier's 63 bins (numpy.histogram conventions)."""
    return (histogram_counts(mosaic, HISTOGRAM_EDGES) / mosaic.size).astype(np.float32)
