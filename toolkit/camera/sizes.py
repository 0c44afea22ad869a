"""Parsing of image sizes given on the command line."""
from __future__ import annotations

import re

from toolkit.errors import UserError

from .bayer import GRID, MIN_SIZE


def parse_size(text: str) -> tuple[int, int]:
    """'HxW' -> (H, W), both positive multiples of 16 and at least the minimum size."""
    match = re.fullmatch(r"\s*(\d+)\s*[xX]\s*(\d+)\s*", str(text))
    if not match:
        raise UserError(f"size '{text}' is not HxW", "for example --size 512x512")
    height, width = int(match.group(1)), int(match.group(2))
    if height < MIN_SIZE or width < MIN_SIZE or height % GRID or width % GRID:
        raise UserError(f"size {height}x{width} must be multiples of {GRID} and at least {MIN_SIZE}", "for example 512x768 or 2848x4256")
    return height, width
