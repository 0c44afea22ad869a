"""Tiled inference: the photo in pieces, so peak memory is bounded by a piece, not the photo.

Two ways, both writing each piece's pixels straight into the output image (8-bit, 16-bit or float),
both packing each piece's input straight from the unpadded mosaic:

* Windows (every target, the exported artifacts included): the whole network on overlapping
  windows. Each output core is computed from a window that extends it by `halo` cells on every
  side that is not the image border; the window is shifted, never shrunk, at the borders, so a
  static-shape artifact always sees the shape it was exported for and at a border the network's
  zero padding falls where it falls on the whole image. A halo of the network's full reach (23
  cells) reproduces the untiled result; the default, shorter one stays within float rounding of it.
* Strips (the PyTorch model, which can run its two stages apart): the trunk layer by layer in
  strips of rows (`LLPackNet.trunk_by_rows`: exact, nothing computed twice), then the head on
  strips of the trunk's small output with an overlap of its exact reach. Faster than one
  whole-image call, at a fraction of its memory.

Geometry is in packed cells (16x16 mosaic pixels). The gain (the paper's global amplifier) is
computed once, on the whole image, by the caller.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import numpy as np

from toolkit.camera.bayer import GRID, unpack_into
from toolkit.errors import UserError
from toolkit.memory import release_free_memory

# Reach of the whole body in cells: 1 (per-plane 3x3) + 3 blocks x 6 dense 3x3 layers, then 7 3x3
# layers at twice the resolution (3.5 cells) = 22.5 -> 23: a halo of 23 reproduces the untiled result.
RECEPTIVE_RADIUS_CELLS = 23
# The influence of far inputs decays fast: with the default weights a 16-cell (256-pixel) overlap
# gives a max abs error of 4e-7 against the untiled image (12 cells: 2.5e-5, 8 cells: 5e-3),
# measured on a 1024x1440 scene. 16 keeps far inside the 1e-4 bar at 70 % of the exact cost.
DEFAULT_HALO_CELLS = 16
# The head's reach: 7 3x3 layers at twice the cell resolution = 3.5 cells -> 4, exact.
HEAD_HALO_CELLS = 4
# Strip heights in cells, measured on a 2848x4256 photo (2-core AVX-512 machine): trunk layers in
# 16-row strips ran 21 % faster than one whole-image call (their working set stays in cache); head
# strips of 24 rows (16-row cores) keep up with the whole image although they compute half as many
# rows again; the tiled run then peaks at about 0.3x the untiled run's memory above the loaded model.
TRUNK_STRIP_ROWS = 16
HEAD_STRIP_ROWS = 24

# Memory model, bytes per cell (16x16 pixels), calibrated on full 2848x4256 photos.
MOSAIC_BYTES_PER_CELL = GRID * GRID * 4  # the normalised float32 mosaic
PACKED_BYTES_PER_CELL = 256 * 4  # the network's input
BYTES_PER_WINDOW_CELL = 24_000  # the whole network on a window, the hungriest runtime (see git history)
TRUNK_BYTES_PER_CELL = 512 * 4  # trunk by rows: f0/x, f1-f3 and one block's 256 features, whole photo
TRUNK_STRIP_BYTES_PER_CELL = 8_000  # one trunk strip's temporaries (input rows, a layer's copy)
HEAD_BYTES_PER_CELL = 8_000  # the head on a strip, its 192-channel output included (lean blocks)
TRUNK_OUTPUT_BYTES_PER_CELL = 64 * 4


def output_bytes_per_cell(bits: int | None) -> int:
    return GRID * GRID * 3 * (4 if bits is None else bits // 8)


@dataclass(frozen=True)
class Span:
    """One tile along one axis: the window [start, start + length) and the core it delivers."""

    start: int
    core_start: int
    core_end: int


@dataclass(frozen=True)
class TilePlan:
    """How a photo is cut: whole-network `window`s (rows, columns in cells), or, when `strips`,
    the trunk by rows and the head on strips of `head_rows` rows."""

    window: tuple[int, int] | None = None
    head_rows: int | None = None

    @property
    def strips(self) -> bool:
        return self.head_rows is not None


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


def estimate_memory_mb(cells: tuple[int, int], plan: TilePlan | None, bits: int | None = 8) -> float:
    """What enhancing a photo of `cells` needs above the loaded runtime: the mosaic, the output
    image, and the network on the whole photo (`plan` None), on one window, or in strips."""
    height, width = cells
    image = height * width
    total = image * (MOSAIC_BYTES_PER_CELL + output_bytes_per_cell(bits))
    if plan is None or not plan.strips:
        window = image if plan is None else min(plan.window[0], height) * min(plan.window[1], width)
        total += window * (PACKED_BYTES_PER_CELL + BYTES_PER_WINDOW_CELL)
    else:
        trunk = image * TRUNK_BYTES_PER_CELL + min(TRUNK_STRIP_ROWS + 2, height) * width * TRUNK_STRIP_BYTES_PER_CELL
        head = image * TRUNK_OUTPUT_BYTES_PER_CELL + min(plan.head_rows, height) * width * HEAD_BYTES_PER_CELL
        total += max(trunk, head)
    return total / 2**20


def choose_plan(cells: tuple[int, int], budget_mb: float, strips: bool = False, bits: int | None = 8,
                halo: int = DEFAULT_HALO_CELLS) -> TilePlan | None:
    """The plan for `budget_mb`: None when the whole photo fits; strips when the backend has them and
    they fit (shorter head strips if needed); else the largest whole-network windows that fit,
    splitting the longer side first, as few as the budget allows, since every window repeats its
    overlaps. Refuses, with the estimate, when even the smallest pieces do not fit."""
    height, width = cells
    if estimate_memory_mb(cells, None, bits) <= budget_mb:
        return None
    if strips:
        for rows in range(min(HEAD_STRIP_ROWS, height), 2 * HEAD_HALO_CELLS, -1):
            if estimate_memory_mb(cells, TilePlan(head_rows=rows), bits) <= budget_mb:
                return TilePlan(head_rows=rows)
    for count in range(2, 4096):
        rows = max(1, round(math.sqrt(count * height / width)))
        columns = math.ceil(count / rows)
        window = (min(height, math.ceil(height / rows) + 2 * halo * (rows > 1)),
                  min(width, math.ceil(width / columns) + 2 * halo * (columns > 1)))
        if window[0] - 2 * halo < 8 and rows > 1 or window[1] - 2 * halo < 8 and columns > 1:
            break
        if estimate_memory_mb(cells, TilePlan(window=window), bits) <= budget_mb:
            return TilePlan(window=window)
    smallest = estimate_memory_mb(cells, TilePlan(window=(2 * halo + 8,) * 2), bits)
    if strips:
        smallest = min(smallest, estimate_memory_mb(cells, TilePlan(head_rows=2 * HEAD_HALO_CELLS + 1), bits))
    raise UserError(
        f"this {width * GRID}x{height * GRID} image needs about {smallest:.0f} MB even in the smallest tiles, "
        f"over the memory budget of {budget_mb:.0f} MB",
        "raise the budget (--memory-budget) or enhance a smaller crop",
    )


# Callbacks: the packed input of cell rows x columns, and where the output image sits.
PackedWindow = Callable[[tuple[int, int], tuple[int, int]], np.ndarray]


def _write_core(out: np.ndarray, features: np.ndarray, rows: tuple[int, int], columns: tuple[int, int],
                origin: tuple[int, int], layout: str = "NCHW") -> None:
    """Check one core's features ([192, 2r, 2c], or [2r, 2c, 192] for NHWC) and UnPack them into
    `out`; `origin` is the output's top-left pixel in the padded grid (the placement's top, left)."""
    if not np.isfinite(features).all():
        raise FloatingPointError("the network's output holds NaN or Inf values")
    unpack_into(out, features, rows[0] * GRID - origin[0], columns[0] * GRID - origin[1], layout=layout)


def run_windows(run_packed: Callable[[np.ndarray], np.ndarray], packed_window: PackedWindow, cells: tuple[int, int],
                window: tuple[int, int], out: np.ndarray, origin: tuple[int, int],
                halo: int = DEFAULT_HALO_CELLS, layout: str = "NCHW") -> int:
    """The whole network window by window into `out`; returns the number of windows. `run_packed`
    and `packed_window` work in `layout`."""
    h, w = cells
    rows, columns = plan_axis(h, window[0], halo), plan_axis(w, window[1], halo)
    wh, ww = min(window[0], h), min(window[1], w)
    for r in rows:
        for c in columns:
            features = run_packed(packed_window((r.start, r.start + wh), (c.start, c.start + ww)))[0]
            y0, y1 = 2 * (r.core_start - r.start), 2 * (r.core_end - r.start)
            x0, x1 = 2 * (c.core_start - c.start), 2 * (c.core_end - c.start)
            core = features[:, y0:y1, x0:x1] if layout == "NCHW" else features[y0:y1, x0:x1]
            _write_core(out, core, (r.core_start, r.core_end), (c.core_start, c.core_end), origin, layout)
            del features
            release_free_memory()
    return len(rows) * len(columns)


def run_strips(runner, packed_window: PackedWindow, cells: tuple[int, int], head_rows: int, out: np.ndarray,
               origin: tuple[int, int]) -> int:
    """The trunk by rows for the whole photo, then the head strip by strip into `out`; returns the
    number of head strips. `runner` has `run_trunk_by_rows` and `run_head` (targets.torch.TorchRunner)."""
    h, w = cells
    trunk = runner.run_trunk_by_rows(lambda a, b: packed_window((a, b), (0, w)), h, TRUNK_STRIP_ROWS)
    release_free_memory()  # the trunk's photo-sized buffers, before the head's strips reuse the heap
    spans = plan_axis(h, head_rows, HEAD_HALO_CELLS)
    for s in spans:
        features = runner.run_head(trunk[:, :, s.start : s.start + min(head_rows, h)])[0]
        y0, y1 = 2 * (s.core_start - s.start), 2 * (s.core_end - s.start)
        _write_core(out, features[:, y0:y1], (s.core_start, s.core_end), (0, w), origin)
    return len(spans)
