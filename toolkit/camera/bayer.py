"""Bayer mosaic geometry in numpy: pattern phase, padding to the network grid, and packing.

The network expects an RGGB mosaic whose height and width are multiples of 16. Any 2x2 Bayer
pattern becomes RGGB by reflect-padding one row and/or column at the top/left; reflection keeps
the colour of every padded pixel right (index -k mirrors to +k, same parity). The padding is
cropped off the output again, so the result is aligned with, and the size of, the input.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from toolkit.memory import OutputBuffers
from toolkit.parallel import in_row_blocks

PATTERNS = ("RGGB", "BGGR", "GRBG", "GBRG")
GRID = 16  # Pack works on 16x16 blocks: 2x2 Bayer cells, each plane space-to-depth by 8.
MIN_SIZE = 32

# Offset (row, column) of the first R pixel in each 2x2 pattern.
_RED_OFFSET = {"RGGB": (0, 0), "GRBG": (0, 1), "GBRG": (1, 0), "BGGR": (1, 1)}


def normalise_pattern(pattern: str) -> str:
    """Upper-case and check a pattern name such as 'rggb'."""
    name = str(pattern).strip().upper()
    if name not in PATTERNS:
        from toolkit.errors import InputError

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
            from toolkit.errors import InputError

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
    rows = reflect_indices(0, place.padded_height, place.top, height)
    columns = reflect_indices(0, place.padded_width, place.left, width)
    return mosaic[rows][:, columns], place


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


LAYOUTS = ("NCHW", "NHWC")  # axis orders of the network's input and output tensors (batch 1)


def to_layout(x: np.ndarray, layout: str) -> np.ndarray:
    """An NCHW tensor in `layout` (a copy for NHWC)."""
    return x if layout == "NCHW" else np.ascontiguousarray(x.transpose(0, 2, 3, 1))


def from_layout(x: np.ndarray, layout: str) -> np.ndarray:
    """A tensor in `layout` as NCHW (a copy for NHWC)."""
    return x if layout == "NCHW" else np.ascontiguousarray(x.transpose(0, 3, 1, 2))


def run_in_layout(run_native, packed: np.ndarray, layout: str) -> np.ndarray:
    """`run_native` (which takes and gives `layout`) on an NCHW tensor, giving NCHW back."""
    return from_layout(run_native(to_layout(packed, layout)), layout)


def plane_gains(gain: float, white_balance: tuple[float, float, float] | None = None) -> np.ndarray:
    """The multiplier of each packed plane (R, G1, G2, B): the exposure gain, times the white balance's
    R, G and B gains when the weights expect white-balanced input."""
    red, green, blue = white_balance or (1.0, 1.0, 1.0)
    return np.float32(gain) * np.array([red, green, green, blue], np.float32)


def input_ceiling(white_balance: tuple[float, float, float] | None = None) -> np.ndarray:
    """Where each packed plane (R, G1, G2, B) saturates once amplified: full scale (1), times the
    plane's white-balance gain when the weights take white-balanced input. Clipping there is SID's
    `min(raw * ratio, 1)` before the white balance, so a balanced red keeps its headroom."""
    return plane_gains(1.0, white_balance)


def input_scaling(gain: float, white_balance: tuple[float, float, float] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(multipliers, ceiling) per packed plane for `pack_network_input`: the exposure gain times the
    white balance (if any), clipped where the plane saturates. Every path packs with this pair."""
    return plane_gains(gain, white_balance), input_ceiling(white_balance)


def input_exposure(mosaic: np.ndarray, gain: float) -> dict[str, float]:
    """What an amplified mosaic asks of the network, before any white balance: the fraction of its
    pixels clipped at full scale (x * gain >= 1) and its mean level (mean of x * gain, clipped). The
    export records these for every image it validates; `llpack enhance` compares a photo's with them."""
    x = np.asarray(mosaic, np.float32)
    threshold = np.float32(1.0 / max(float(gain), 1e-12))
    clipped = int(np.count_nonzero(x >= threshold))
    mean = float(np.minimum(x, threshold).mean(dtype=np.float64) * gain)
    return {"clipped_fraction": clipped / max(x.size, 1), "mean": mean}


def pack_network_input(mosaic: np.ndarray, gain, layout: str = "NCHW", ceiling=1.0) -> np.ndarray:
    """The network's input from an RGGB mosaic on the 16-pixel grid: [1, 256, H/16, W/16] float32
    (or [1, H/16, W/16, 256] for `layout` NHWC), gain applied: one number, or one per Bayer plane
    (R, G1, G2, B; see `plane_gains`), then clipped at `ceiling` (one number or one per plane; see
    `input_ceiling`; None: no clip), as a sensor saturates: nothing amplified past full scale reaches
    the network.

    One pass: each block of packed rows is gathered and scaled straight into the output, in either layout."""
    height, width = mosaic.shape
    if height % 16 or width % 16:
        raise ValueError("pack needs H and W that are multiples of 16")
    h, w = height // 16, width // 16
    view = np.asarray(mosaic, dtype=np.float32).reshape(h, 8, 2, w, 8, 2)  # y, i, py, x, j, px
    if layout == "NCHW":
        out = np.empty((1, 256, h, w), np.float32)
        target, order = out.reshape(2, 2, 8, 8, h, w), (2, 5, 1, 4, 0, 3)  # py, px, i, j, y, x
    else:
        out = np.empty((1, h, w, 256), np.float32)
        target, order = out.reshape(h, w, 2, 2, 8, 8), (0, 3, 2, 5, 1, 4)  # y, x, py, px, i, j
    def per_plane(value, what: str) -> np.ndarray:
        v = np.asarray(value, np.float32)
        if v.size == 4:  # per plane (py, px): broadcast over the transposed view's py, px axes
            return v.reshape((2, 2, 1, 1, 1, 1) if layout == "NCHW" else (1, 1, 2, 2, 1, 1))
        if v.size != 1:
            raise ValueError(f"the {what} is one number or one per Bayer plane (R, G1, G2, B)")
        return v.reshape(())

    g = per_plane(gain, "gain")
    top = None if ceiling is None else per_plane(ceiling, "ceiling")

    def work(y0: int, y1: int) -> None:
        rows = (Ellipsis, slice(y0, y1), slice(None)) if layout == "NCHW" else (slice(y0, y1),)
        np.multiply(view[y0:y1].transpose(order), g, out=target[rows])
        if top is not None:
            np.minimum(target[rows], top, out=target[rows])

    in_row_blocks(h, work)
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


def features_to_image(features: np.ndarray, placement: "Placement | None" = None, block: int = 8,
                      bits: int | None = None, layout: str = "NCHW", buffers: OutputBuffers | None = None) -> np.ndarray:
    """UnPack, crop and clip in one pass: features [3*block*block, h, w] -> H x W x 3 in [0, 1] as float32,
    or, with `bits` 8 or 16, already rounded to uint8/uint16 (no float image is ever built).

    The same values as `np.clip(placement.crop(unpack_rgb(features)), 0, 1).transpose(1, 2, 0)`
    (times 2**bits - 1, rounded, for integer output). `buffers`: where the image is taken from, to
    reuse a photo-sized array the caller has let go of."""
    h, w = features.shape[1:] if layout == "NCHW" else features.shape[:2]
    top, left = (placement.top, placement.left) if placement else (0, 0)
    height, width = (placement.height, placement.width) if placement else (h * block, w * block)
    out = new_image((height, width), bits, buffers)
    unpack_into(out, features, -top, -left, block, layout)
    return out


OUTPUT_DTYPES = {None: np.float32, 8: np.uint8, 16: np.uint16}


def new_image(size: tuple[int, int], bits: int | None, buffers: OutputBuffers | None = None) -> np.ndarray:
    """An uninitialised H x W x 3 image for `bits` (None: float32), from `buffers` when given."""
    shape, dtype = (int(size[0]), int(size[1]), 3), OUTPUT_DTYPES[bits]
    return buffers.take(shape, dtype)[0] if buffers is not None else np.empty(shape, dtype)


_ROWS_PER_STEP = 64  # output rows gathered at a time: a few MB, so no photo-sized temporary is ever made


def unpack_into(out: np.ndarray, features: np.ndarray, y: int, x: int, block: int = 8, layout: str = "NCHW") -> None:
    """Write the UnPacked, clipped image of `features` [3*block*block, h, w] (NHWC: [h, w, 3*block*block]) into `out` (H x W x 3,
    float32 in [0, 1], or uint8/uint16 rounded), its top-left pixel at out[y, x]; what falls outside
    `out` (negative y, x: the padding) is dropped. Tiles write their cores straight into the photo.

    The channel order (3*(block*i + j) + k) is read as a strided view in height-width-colour order,
    so no channel-first image is ever built."""
    channels, h, w = features.shape if layout == "NCHW" else np.roll(features.shape, 1)
    if channels != 3 * block * block:
        raise ValueError(f"UnPack needs {3 * block * block} channels")
    if layout == "NCHW":
        view = features.reshape(block, block, 3, h, w).transpose(3, 0, 4, 1, 2)  # y, i, x, j, k: a view
    else:
        view = features.reshape(h, w, block, block, 3).transpose(0, 2, 1, 3, 4)
    r0, r1 = max(y, 0), min(y + h * block, out.shape[0])
    c0, c1 = max(x, 0), min(x + w * block, out.shape[1])
    if r0 >= r1 or c0 >= c1:
        return
    peak = None if out.dtype == np.float32 else float(np.iinfo(out.dtype).max)

    def work(a: int, b: int) -> None:
        for s in range(a, b, _ROWS_PER_STEP):
            e = min(s + _ROWS_PER_STEP, b)
            f0, f1 = r0 + s - y, r0 + e - y  # rows in the features' own pixel grid
            y0, y1 = f0 // block, -(-f1 // block)
            if peak is not None and layout == "NHWC":  # round in the features' own (contiguous) order,
                # then move 1- or 2-byte pixels instead of floats: each cell's 8 x 8 x 3 values are contiguous here
                cells = np.clip(features[y0:y1], 0.0, 1.0)
                cells *= peak
                np.rint(cells, out=cells)
                rows = cells.astype(out.dtype).reshape(y1 - y0, w, block, block, 3).transpose(0, 2, 1, 3, 4)
                rows = rows.reshape((y1 - y0) * block, w * block, 3)
                out[r0 + s : r0 + e, c0:c1] = rows[f0 - y0 * block : f1 - y0 * block, c0 - x : c1 - x]
                continue
            rows = view[y0:y1].reshape((y1 - y0) * block, w * block, 3)  # gathers whole cell rows
            part = rows[f0 - y0 * block : f1 - y0 * block, c0 - x : c1 - x]
            if peak is None:
                np.clip(part, 0.0, 1.0, out=out[r0 + s : r0 + e, c0:c1])
            else:
                np.clip(part, 0.0, 1.0, out=part)
                part *= peak
                np.rint(part, out=part)
                out[r0 + s : r0 + e, c0:c1] = part

    in_row_blocks(r1 - r0, work)


def reflect_indices(start: int, stop: int, offset: int, length: int) -> slice | np.ndarray:
    """Source indices of padded positions [start, stop) when the source sits at `offset` in the
    padded axis and the padding mirrors it (edge not repeated, again and again if the pad is longer):
    a slice when no position falls in the padding. A period of 2 * (length - 1) keeps the Bayer phase."""
    first, last = start - offset, stop - 1 - offset
    if first >= 0 and last < length:
        return slice(first, last + 1)
    index = np.arange(first, last + 1)
    if length == 1:
        return np.zeros_like(index)
    period = 2 * (length - 1)
    index = np.mod(index, period)
    return np.where(index >= length, period - index, index)


def pack_window(mosaic: np.ndarray, placement: Placement, rows: tuple[int, int], columns: tuple[int, int],
                gain, layout: str = "NCHW", ceiling=1.0) -> np.ndarray:
    """`pack_network_input` of the cells rows x columns of the padded network grid, read straight from
    the unpadded mosaic: a window never needs the whole padded photo, and the whole photo never needs
    a padded copy when it is already on the grid."""
    ry = reflect_indices(rows[0] * GRID, rows[1] * GRID, placement.top, placement.height)
    cx = reflect_indices(columns[0] * GRID, columns[1] * GRID, placement.left, placement.width)
    return pack_network_input(mosaic[ry][:, cx], gain, layout, ceiling)


# The paper's amplifier reads a 63-bin histogram with log-spaced edges over [0, 1].
HISTOGRAM_EDGES = ((2.0 ** np.linspace(0.0, 8.0, 64)) - 1.0) / 255.0
_CELLS = 1 << 16  # cells of equal top 16 bits of a float32 (sign, exponent, 7 mantissa bits)
_CHUNK = 1 << 18  # values counted at a time: bounded temporaries on a photo of any size


def histogram_counts(values: np.ndarray, edges: np.ndarray) -> np.ndarray:
    """`np.histogram(values, bins=edges)[0]` for increasing edges inside [0, 1], in two cheap passes
    over float32 values instead of a binary search per value, with bounded temporary memory.

    For a float32 x >= 0 the bit pattern orders like the value, so x >= edge (numpy compares in
    float64) exactly when bits(x) >= bits(the smallest float32 >= edge). Values are counted per cell
    of equal top 16 bits (read as a strided view, no arithmetic); a cell holding no bin boundary lies
    wholly in one bin, and only the values in the few cells that do are compared with numpy's rule."""
    edges = np.asarray(edges, np.float64)
    x = np.asarray(values).ravel()
    if x.dtype != np.float32 or x.size == 0 or edges[0] < 0 or edges[-1] > 1 or np.any(np.diff(edges) <= 0):
        return np.histogram(x, bins=edges)[0]
    lower = edges.astype(np.float32)
    lower = np.where(lower < edges, np.nextafter(lower, np.float32(np.inf)), lower)  # smallest float32 >= edge
    starts = lower.view(np.uint32).astype(np.int64)
    top = np.float32(edges[-1])
    top = np.nextafter(top, np.float32(-np.inf)) if top > edges[-1] else top  # numpy closes the last bin
    end = int(np.asarray(top).view(np.uint32)) + 1  # the first bit pattern above the last bin
    cell_lows = np.arange(_CELLS, dtype=np.int64) << 16
    bin_of = np.searchsorted(starts, cell_lows, side="right") - 1
    bin_of[cell_lows >= end] = -1
    bin_of[_CELLS // 2 :] = -1  # sign bit set: below the first edge (but see -0.0 just below)
    exact = np.zeros(_CELLS, bool)
    bounds = np.append(starts, end)
    exact[(bounds >> 16)[(bounds & 0xFFFF) != 0]] = True  # a boundary strictly inside the cell
    exact[_CELLS // 2] = True  # -0.0 (counted like 0.0) and negative denormals
    high = x.view(np.uint16)[1::2] if np.little_endian else x.view(np.uint16)[0::2]

    def count(s: int, e: int):
        per_cell, near = np.zeros(_CELLS, np.int64), []
        for a in range(s, e, _CHUNK):
            b = min(a + _CHUNK, e)
            cells = high[a:b]
            per_cell += np.bincount(cells, minlength=_CELLS)
            mask = exact[cells]
            if mask.any():
                near.append(x[a:b][mask])
        return per_cell, near

    blocks = in_row_blocks(x.size, count)
    per_cell = sum(block[0] for block in blocks)
    keep = (bin_of >= 0) & ~exact
    counts = np.bincount(bin_of[keep], weights=per_cell[keep], minlength=len(edges) - 1).astype(np.int64)
    near = [part for block in blocks for part in block[1]]
    if near:
        counts += np.histogram(np.concatenate(near), bins=edges)[0]
    return counts


def mosaic_histogram(mosaic, edges: np.ndarray, white_balance: tuple[float, float, float] | None = None,
                     pattern: str = "RGGB") -> tuple[np.ndarray, int]:
    """(counts, pixels) of a normalised mosaic: a 2-D array, or a `Mosaic` (whose reader may have
    counted its levels already, see `Mosaic.histogram`). With `white_balance`, of the mosaic times
    it (each 2x2 position counted against the edges divided by its colour's gain)."""
    data = mosaic if isinstance(mosaic, np.ndarray) else mosaic.data
    if white_balance is not None and tuple(white_balance) != (1.0, 1.0, 1.0):
        index = bayer_channel_index(pattern if isinstance(mosaic, np.ndarray) else mosaic.pattern)
        edges = np.asarray(edges, np.float64)
        counts = sum(histogram_counts(np.ascontiguousarray(data[dy::2, dx::2]), edges / white_balance[int(index[dy, dx])])
                     for dy in range(2) for dx in range(2))
        return counts, data.size
    if isinstance(mosaic, np.ndarray):
        return histogram_counts(mosaic, edges), mosaic.size
    return mosaic.histogram(edges), mosaic.data.size


def level_histogram(levels: np.ndarray, counts: np.ndarray, edges: np.ndarray) -> np.ndarray:
    """`np.histogram` of a mosaic given as its distinct values (`levels`) and how often each occurs:
    what a camera RAW's reader knows for free, so the amplifier never reads the photo again."""
    weighted = np.histogram(np.asarray(levels), bins=np.asarray(edges, np.float64), weights=np.asarray(counts, np.float64))[0]
    return np.rint(weighted).astype(np.int64)


def exposure_histogram(mosaic: np.ndarray) -> np.ndarray:
    """Fraction of pixels in each of the amplifier's 63 bins (numpy.histogram conventions)."""
    return (histogram_counts(mosaic, HISTOGRAM_EDGES) / mosaic.size).astype(np.float32)
