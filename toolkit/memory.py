"""Memory the toolkit gives back, and memory it keeps on purpose.

Giving back: glibc keeps freed blocks below its (self-raising, up to 32 MB) mmap threshold in the heap and its
per-thread arenas, so a loop of same-sized tiles can hold tens of MB it no longer uses: the peak a
memory budget is about. `malloc_trim` returns them; elsewhere (musl, macOS) this is a no-op.

Keeping: photo-sized results (network outputs, images) are written into buffers reused across
calls (`OutputBuffers`), since fresh ones cost their page faults every time.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import functools
import sys
import threading
from typing import Any, Callable

import numpy as np


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


class OutputBuffers:
    """Result arrays written into again once their caller has let go of them (runners' outputs, images).

    A full-size network output is 145 MB, and a fresh array costs its page faults on every call:
    about 0.3 s a call on a 2-core VM, a quarter of OpenVINO's FP32 inference; 3-60 ms for an
    8-bit photo's 35 MB.
    A buffer is reused only while nothing outside holds it or a view of it (a view references its
    base array), so results stay the caller's: one kept across calls gets a new buffer beside it.
    `wrap(array)` builds the runtime's handle on a buffer (an OpenVINO tensor sharing its memory)."""

    def __init__(self, wrap: Callable[[np.ndarray], Any] | None = None, slots: int = 2):
        self._wrap, self._slots, self._kept = wrap, slots, []  # [(array, handle, references when idle)]
        self._lock = threading.Lock()

    @staticmethod
    def _references(entry: tuple) -> int:
        return sys.getrefcount(entry[0])

    def take(self, shape: tuple[int, ...], dtype=np.float32) -> tuple[np.ndarray, Any]:
        """A writable array of `shape` nobody else holds, and its runtime handle (None without `wrap`)."""
        shape, dtype = tuple(int(n) for n in shape), np.dtype(dtype)
        with self._lock:  # two threads must never be handed the same free buffer
            idle = [entry for entry in self._kept if self._references(entry) <= entry[2]]
            match = next((entry for entry in idle if entry[0].shape == shape and entry[0].dtype == dtype), None)
            if match is not None:
                return match[0], match[1]
            # a free buffer of another shape or type is let go before the new one is made, not kept beside it
            self._kept = [entry for entry in self._kept if all(entry is not free for free in idle)]
            idle = None
            entry = self._new(shape, dtype)
            references = self._references(entry)  # measured before building the kept tuple (its unpacking holds one more)
            entry = (*entry, references)
            self._kept = [entry, *self._kept][: self._slots]
            return entry[0], entry[1]

    def _new(self, shape: tuple[int, ...], dtype: np.dtype) -> tuple:
        array = np.empty(shape, dtype)
        return array, (self._wrap(array) if self._wrap else None)
