"""A dependency-free progress line for long work (training, evaluation, export).

On a terminal it redraws one line; in a log (CI, nohup) it prints a line every `every_s`
seconds, so long runs show life without flooding the output.
"""
from __future__ import annotations

import logging
import sys
import threading
import time
from typing import TextIO

# Held while a reader captures what LibRaw prints on file descriptor 2 (`toolkit.camera.raw`). In a
# pipelined folder run that happens on the reader thread while the main thread reports progress
# and failures: our own lines wait for the lock instead of vanishing into the capture.
STDERR_LOCK = threading.RLock()


class StderrHandler(logging.StreamHandler):
    """A log handler whose lines wait while file descriptor 2 is captured (see `STDERR_LOCK`)."""

    def emit(self, record: logging.LogRecord) -> None:
        with STDERR_LOCK:
            super().emit(record)


def _clock(seconds: float) -> str:
    seconds = int(max(seconds, 0))
    h, rest = divmod(seconds, 3600)
    return f"{h}:{rest // 60:02d}:{rest % 60:02d}" if h else f"{rest // 60:02d}:{rest % 60:02d}"


class Progress:
    def __init__(self, total: int, label: str, enabled: bool = True, stream: TextIO | None = None, every_s: float = 30.0, start: int = 0):
        self.total, self.label, self.enabled = max(total, 1), label, enabled
        self.stream = stream or sys.stderr
        self.tty = hasattr(self.stream, "isatty") and self.stream.isatty()
        self.every_s = every_s
        self.start_count = start
        self.started = time.monotonic()
        self.last_print = 0.0

    def update(self, done: int, note: str = "") -> None:
        if not self.enabled:
            return
        now = time.monotonic()
        final = done >= self.total
        if not self.tty and not final and now - self.last_print < self.every_s:
            return
        self.last_print = now
        elapsed = now - self.started
        rate = (done - self.start_count) / elapsed if elapsed > 0 else 0.0
        eta = (self.total - done) / rate if rate > 0 else 0.0
        line = f"{self.label} {done}/{self.total} [{100 * done / self.total:5.1f}%] {_clock(elapsed)}<{_clock(eta)} {note}".rstrip()
        with STDERR_LOCK:
            if self.tty:
                self.stream.write("\r" + line + ("\n" if final else ""))
            else:
                self.stream.write(line + "\n")
            self.stream.flush()
