"""Row-parallel work on every core: the small helper that camera reading, packing and image writing share."""
from __future__ import annotations

import os
import threading
from concurrent.futures import ThreadPoolExecutor

import numpy as np

_POOL: ThreadPoolExecutor | None = None
_POOL_PREFIX = "llpack-rows"


def in_row_blocks(rows: int, work) -> list:
    """work(start, stop) over row blocks on every core, results in order: numpy's copies and ufuncs
    release the GIL, and a 12-megapixel frame is memory-bound work that one core cannot saturate.
    One pool for the process: the same threads (and their malloc arenas) serve every call, so a
    photo's many small tiles do not each leave freed memory behind in fresh threads' arenas."""
    global _POOL
    workers = min(os.cpu_count() or 1, 8, max(rows // 8, 1))
    if workers == 1 or threading.current_thread().name.startswith(_POOL_PREFIX):  # no nesting
        return [work(0, rows)]
    if _POOL is None:
        _POOL = ThreadPoolExecutor(min(os.cpu_count() or 1, 8), thread_name_prefix=_POOL_PREFIX)
    bounds = np.linspace(0, rows, workers + 1).astype(int)
    return list(_POOL.map(lambda i: work(bounds[i], bounds[i + 1]), range(workers)))
