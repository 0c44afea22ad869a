"""Tiled inference: the network on overlapping windows of the packed input, so peak memory is
bounded by the window, not the photo; the same code serves every target.

Geometry is in packed cells (16x16 mosaic pixels, one position of the network's input grid).
Each output core is computed from a window that extends it by `halo` cells on every side that is
not the image border, and the window is shifted, never shrunk, at the borders: a static-shape
artifact always sees the shape it was exported for, and at an image border the window edge is
the image edge, so the network's zero padding falls where it falls on the whole image. A halo of
the network's full receptive radius reproduces the untiled result exactly; the default, shorter
one stays within float rounding of it (measured, see DEFAULT_HALO_CELLS). The gain (the paper's global amplifier) is computed once, on the whole image, by the
caller.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import numpy as np

from .bayer import GRID, features_to_image
from .errors import UserError

# Receptive radius of the body in cells: 1 (per-plane 3x3) + 3 blocks x 6 dense 3x3 layers, then
# 7 3x3 layers at twice the resolution (3.5 cells) = 22.5 -> 23. Every output depends on no input
# farther away than this, so a halo of 23 cells reproduces the untiled result.
RECEPTIVE_RADIUS_CELLS = 23
# The influence of far inputs decays fast: with the default weights a 16-cell (256-pixel) overlap
# gives a max abs error of 4e-7 against the untiled image (12 cells: 2.5e-5, 8 cells: 5e-3),
# measured on a 1024x1440 scene. 16 keeps far inside the 1e-4 bar at 70 % of the exact cost.
DEFAULT_HALO_CELLS = 16
# Peak memory per window cell of the network at FP32 (PyTorch, the hungriest), and the buffers that
# scale with the whole photo (mosaic, padded copy, packed input, float RGB output, 8-bit copy).
# Calibrated on a full 2848x4256 photo so the budget holds: under 512 MB the tiled PyTorch run
# peaked at 495 MB above import (24 tiles; with 20 KB and 23 B/pixel it had reached 602 MB).
BYTES_PER_WINDOW_CELL = 24_000
BYTES_PER_IMAGE_CELL = GRID * GRID * 32


@dataclass(frozen=True)
class Span:
    """One tile along one axis: the window [start, start + length) and the core it delivers."""

    start: int
    core_start: int
    core_end: int


def plan_axis(cells: int, window: int, halo: int) -> list[Span]:
    """Cover `cells` with cores; each window of length `window` gives `halo` of context inside the image."""
    if window >= cells:
        return [Span(0, 0, cells)]
    core = window - 2 * halo
    if core < 1:
        raise UserError(f"a tile of {window * GRID} pixels leaves no room inside its {halo * GRID}-pixel overlaps",
                        f"use a tile of at least {(2 * halo + 8) * GRID} pixels")
    spans = []
    for core_start in range(0, cells, core):
        core_end = min(core_start + core, cells)
        start = min(max(core_start - halo, 0), cells - window)
        spans.append(Span(start, core_start, core_end))
    return spans


def estimate_memory_mb(image_cells: int, window_cells: int) -> float:
    """What a run needs above the runtime itself: photo-sized buffers plus the network on one window."""
    return (image_cells * BYTES_PER_IMAGE_CELL + window_cells * BYTES_PER_WINDOW_CELL) / 2**20


def choose_window(cells: tuple[int, int], budget_mb: float, halo: int = DEFAULT_HALO_CELLS) -> tuple[int, int] | None:
    """The largest window (in cells) whose estimate fits `budget_mb`; None when the whole image fits.

    Splits the longer side first, as few tiles as the budget allows, since every tile repeats its
    overlaps; refuses, with the estimate, when even the smallest useful window does not fit."""
    height, width = cells
    image = height * width
    if estimate_memory_mb(image, image) <= budget_mb:
        return None
    for count in range(2, 4096):
        rows = max(1, round(math.sqrt(count * height / width)))
        columns = math.ceil(count / rows)
        window = (min(height, math.ceil(height / rows) + 2 * halo * (rows > 1)),
                  min(width, math.ceil(width / columns) + 2 * halo * (columns > 1)))
        if window[0] - 2 * halo < 8 and rows > 1 or window[1] - 2 * halo < 8 and columns > 1:
            break
        if estimate_memory_mb(image, window[0] * window[1]) <= budget_mb:
            return window
    smallest = estimate_memory_mb(image, (2 * halo + 8) ** 2)
    raise UserError(
        f"this {width * GRID}x{height * GRID} image needs about {smallest:.0f} MB even in the smallest tiles, "
        f"over the memory budget of {budget_mb:.0f} MB",
        "raise the budget (--memory-budget) or enhance a smaller crop",
    )


def run_tiled(run_packed: Callable[[np.ndarray], np.ndarray], packed: np.ndarray, window: tuple[int, int],
              halo: int = DEFAULT_HALO_CELLS) -> tuple[np.ndarray, int]:
    """The sRGB image (H x W x 3, clipped to [0, 1]) of a packed input [1, 256, h, w], computed window
    by window; also returns the number of windows. Each window's output is unpacked straight into
    the image, so no full-size feature map ever exists."""
    _, _, h, w = packed.shape
    image = np.empty((h * GRID, w * GRID, 3), np.float32)
    rows, columns = plan_axis(h, window[0], halo), plan_axis(w, window[1], halo)
    for r in rows:
        for c in columns:
            wh, ww = min(window[0], h), min(window[1], w)
            tile = np.ascontiguousarray(packed[:, :, r.start : r.start + wh, c.start : c.start + ww])
            features = run_packed(tile)[0]
            # features are at twice the cell resolution; cut the core, then UnPack it into place
            y0, y1 = 2 * (r.core_start - r.start), 2 * (r.core_end - r.start)
            x0, x1 = 2 * (c.core_start - c.start), 2 * (c.core_end - c.start)
            if not np.isfinite(features[:, y0:y1, x0:x1]).all():
                raise FloatingPointError("the network's output holds NaN or Inf values")
            image[r.core_start * GRID : r.core_end * GRID, c.core_start * GRID : c.core_end * GRID] = \
                features_to_image(np.ascontiguousarray(features[:, y0:y1, x0:x1]))
    return image, len(rows) * len(columns)
