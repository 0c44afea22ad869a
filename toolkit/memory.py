"""Giving freed memory back to the system between the pieces of a tiled run.

glibc keeps freed blocks below its (self-raising, up to 32 MB) mmap threshold in the heap and its
per-thread arenas, so a loop of same-sized tiles can hold tens of MB it no longer uses: the peak a
memory budget is about. `malloc_trim` returns them; elsewhere (musl, macOS) this is a no-op.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import functools


@functools.lru_cache(maxsize=1)
def _malloc_trim():
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name or "libc.so.6")
        trim = libc.malloc_trim
    except (OSError, AttributeError):
        return None
    trim.argtypes, trim.restype = [ctypes.c_size_t], ctypes.c_int
    return trim


def release_free_memory() -> None:
    """Return the allocator's free memory to the system (milliseconds; between tiles, not per layer)."""
    trim = _malloc_trim()
    if trim is not None:
        trim(0)
