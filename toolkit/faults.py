"""Fault injection for tests: prove that a crash, hang or exception in one model or export fails only
that row. Off unless LLPACK_INJECT_FAULT names a place, e.g. "openvino-int8=crash,export:tflite-fp32=hang"."""
from __future__ import annotations

import os
import signal
import time

FAULT_ENV = "LLPACK_INJECT_FAULT"


def inject_fault(place: str) -> None:
    for item in filter(None, os.environ.get(FAULT_ENV, "").split(",")):
        name, _, kind = item.partition("=")
        if name.strip() != place:
            continue
        if kind == "crash":
            os.kill(os.getpid(), signal.SIGSEGV)
        elif kind == "hang":
            while True:
                time.sleep(1)
        elif kind == "raise":
            raise RuntimeError(f"fault injected into {place}")
