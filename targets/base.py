"""What every deployment target provides: build an artifact, load it, run it on a batch.

A target never imports its runtime at module import time, so `targets` stays importable on a
device that has only one runtime (or none) installed; `check()` names the install extra.
"""
from __future__ import annotations

import importlib
import importlib.metadata
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Protocol

import numpy as np

from toolkit.errors import MissingDependencyError


class Runner(Protocol):
    """A loaded artifact. `run`: packed input [1, 256, h, w] float32 -> features [1, 192, 2h, 2w]
    float32, whatever the model file's own layout; `run_native`: the same in `layout`, the model's
    own axis order, with no transposes on the way (what the camera path feeds it)."""

    layout: str

    def run(self, packed: np.ndarray) -> np.ndarray: ...

    def run_native(self, x: np.ndarray) -> np.ndarray: ...


class ChannelsFirstRunner:
    """For runners whose model takes NCHW itself: the native path is `run`."""

    layout = "NCHW"

    def run_native(self, x: np.ndarray) -> np.ndarray:
        return self.run(x)


class OutputBuffers:
    """Output arrays a runner writes into again once its caller has let go of them.

    A full-size output is 145 MB, and a fresh array costs its page faults on every call: about 0.3 s
    a call on a 2-core VM, a quarter of OpenVINO's FP32 inference (`benchmarks/full_resolution.py`).
    A buffer is reused only while nothing outside holds it or a view of it (a view references its
    base array), so results stay the caller's: one kept across calls gets a new buffer beside it.
    `wrap(array)` builds the runtime's handle on a buffer (an OpenVINO tensor sharing its memory)."""

    def __init__(self, wrap: Callable[[np.ndarray], Any] | None = None, slots: int = 2):
        self._wrap, self._slots, self._kept = wrap, slots, []  # [(array, handle, references when idle)]

    @staticmethod
    def _references(entry: tuple) -> int:
        return sys.getrefcount(entry[0])

    def take(self, shape: tuple[int, ...], dtype=np.float32) -> tuple[np.ndarray, Any]:
        """A writable array of `shape` nobody else holds, and its runtime handle (None without `wrap`)."""
        shape, dtype = tuple(int(n) for n in shape), np.dtype(dtype)
        for entry in self._kept:
            if entry[0].shape == shape and entry[0].dtype == dtype and self._references(entry) <= entry[2]:
                return entry[0], entry[1]
        entry = self._new(shape, dtype)
        idle = self._references(entry)  # measured before building the kept tuple (its unpacking holds one more)
        entry = (*entry, idle)
        self._kept = [entry, *self._kept][: self._slots]
        return entry[0], entry[1]

    def _new(self, shape: tuple[int, ...], dtype: np.dtype) -> tuple:
        array = np.empty(shape, dtype)
        return array, (self._wrap(array) if self._wrap else None)


@dataclass(frozen=True)
class Target:
    name: str
    description: str
    precisions: tuple[str, ...]
    runtime_module: str  # imported to run an artifact ("a|b": either will do)
    runtime_package: str  # distribution name(s), for versions, same order
    runtime_extra: str  # install extra that brings the runtime
    converter_extra: str  # install extra that brings the converter
    converter_modules: tuple[tuple[str, str], ...] = ()  # (module, package) needed to build artifacts
    layout: str = "NCHW"  # axis order of its model files' input and output (TFLite: NHWC, no transposes)

    def runtime_version(self) -> str | None:
        """'package version' of the first installed runtime."""
        for package in self.runtime_package.split("|"):
            try:
                return f"{package} {importlib.metadata.version(package)}"
            except importlib.metadata.PackageNotFoundError:
                continue
        return None

    def check_runtime(self, purpose: str = "") -> None:
        for module in self.runtime_module.split("|"):
            try:
                importlib.import_module(module)
                return
            except ImportError:
                continue
        package = self.runtime_package.split("|")[0]
        raise MissingDependencyError(package, self.runtime_extra, purpose or f"the {self.name} target")

    def check_converter(self) -> None:
        for module, package in self.converter_modules:
            try:
                importlib.import_module(module)
            except ImportError as exc:
                raise MissingDependencyError(package, self.converter_extra, f"exporting to {self.name}") from exc

    def backend(self):
        """The module implementing `build(...)` and `load(...)` for this target."""
        return importlib.import_module(f"targets.{self.name}")

    def build(self, body, size: tuple[int, int], precision: str, out_dir: Path, **options) -> list[str]:
        """Convert the packed body (a torch module) into files in `out_dir`; returns their names."""
        return self.backend().build(body, size, precision, out_dir, **options)

    def load(self, artifact_dir: str | os.PathLike, manifest: dict, threads: int | None = None) -> Runner:
        self.check_runtime(f"running a {self.name} artifact")
        return self.backend().load(Path(artifact_dir), manifest, threads)
