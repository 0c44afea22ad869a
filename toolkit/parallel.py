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


def pipelined(items, read, process, finish, overlap: bool = True, prepare=None):
    """Run `finish(item, process(item, read(item)))` over `items`, yielding (item, finish's result or
    the exception that stopped that item) in order; one item's failure never stops the others.

    With `overlap`, reading the next item and finishing the previous one run on their own threads
    while the current one is processed: at most one item ahead and one behind, so memory stays
    bounded. A photo's decode (LibRaw) and encode (zlib, libjpeg) release the GIL, so they take
    the time the network leaves. The steps are the same either way, so are the results.
    `prepare()` runs once before the first item is processed (loading the model): with `overlap`,
    while the first item is being read; an exception from it ends the run."""

    def attempt(step, *args):
        try:
            return step(*args), None
        except Exception as exc:  # handed to the caller with its item, like any other outcome
            return None, exc

    if not overlap:
        if prepare is not None:
            prepare()
        for item in items:
            value, error = attempt(read, item)
            if error is None:
                value, error = attempt(process, item, value)
            if error is None:
                value, error = attempt(finish, item, value)
            yield item, (error if error is not None else value)
            value = None
        return
    iterator, end = iter(items), object()

    def fetch():  # the next item is taken on the reader's thread too: a capture loop's generator waits there
        item = next(iterator, end)
        return (item, *attempt(read, item)) if item is not end else (end, None, None)

    with ThreadPoolExecutor(1, thread_name_prefix="llpack-read") as reader, \
            ThreadPoolExecutor(1, thread_name_prefix="llpack-finish") as finisher:
        ahead = reader.submit(fetch)
        if prepare is not None:
            prepare()
        behind = None  # (item, future of its finish)
        while True:
            item, value, error = ahead.result()
            if item is end:
                break
            ahead = reader.submit(fetch)
            if error is None:
                value, error = attempt(process, item, value)
            if behind is not None:  # the previous item's finish overlapped this one's processing
                done, done_error = behind[1].result()
                yield behind[0], (done_error if done_error is not None else done)
                behind = done = None
            if error is None:
                behind = (item, finisher.submit(attempt, finish, item, value))
            else:
                yield item, error
            value = None
        if behind is not None:
            done, done_error = behind[1].result()
            yield behind[0], (done_error if done_error is not None else done)
