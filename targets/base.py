"""What every deployment target provides: build an artifact, load it, run it on a batch.

A target never imports its runtime at module import time, so `targets` stays importable on a
device that has only one runtime (or none) installed; `check()` names the install extra.
"""
from __future__ import annotations

import importlib
import importlib.metadata
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

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

    def build(self, body, size: tuple[int, int], out_dir: Path, precision: str = "fp32") -> list[str]:
        """Convert the packed body (a torch module) into float files in `out_dir`; returns their names.
        FP32 first; a lower float precision (TFLite FP16) is made from it by the backend's
        `reduce_precision`. INT8 files come from `quantization.quantize`, which sits above the targets."""
        files = self.backend().build(body, size, out_dir)
        if precision != "fp32":
            self.backend().reduce_precision(out_dir, precision)
        return files

    def load(self, artifact_dir: str | os.PathLike, manifest: dict, threads: int | None = None) -> Runner:
        self.check_runtime(f"running a {self.name} artifact")
        return self.backend().load(Path(artifact_dir), manifest, threads)
