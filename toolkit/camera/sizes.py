"""Parsing of image sizes given on the command line."""
from __future__ import annotations

import re

from toolkit.errors import UserError

from .bayer import GRID, MIN_SIZE


def parse_size(text: str, multiple_of: int = GRID) -> tuple[int, int]:
    """'HxW' -> (H, W), both multiples of `multiple_of` (an artifact's size: the network's 16-pixel
    grid; a camera frame's: 1) and at least the minimum size."""
    match = re.fullmatch(r"\s*(\d+)\s*[xX]\s*(\d+)\s*", str(text))
    if not match:
        raise UserError(f"size '{text}' is not HxW", "for example --size 512x512")
    height, width = int(match.group(1)), int(match.group(2))
    if height < MIN_SIZE or width < MIN_SIZE or height % multiple_of or width % multiple_of:
        rule = f"multiples of {multiple_of} and at least {MIN_SIZE}" if multiple_of > 1 else f"at least {MIN_SIZE}"
        raise UserError(f"size {height}x{width} must be {rule}", "for example 512x768 or 2848x4256")
    return height, width
