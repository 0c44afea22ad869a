"""The runtime object: dark Bayer mosaic in, sRGB image out.

`Enhancer` owns the steps a camera pays for (read, pad to the network grid, choose the gain,
run, crop, write) and delegates only the network call to a backend, so later targets (OpenVINO,
TFLite, ONNX Runtime) slot in without touching the rest.
"""
from __future__ import annotations

import functools
import logging
import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .bayer import pack_network_input, to_network_grid, unpack_rgb
from .errors import InputError, UserError, require_torch
from .fileio import check_output_path, image_format, write_image
from .raw import Mosaic, read_mosaic

log = logging.getLogger(__name__)


def parse_ratio(value: str | float | None) -> float | None:
    """'auto' or None -> None (automatic gain); otherwise a positive, finite exposure ratio."""
    if value is None or (isinstance(value, str) and value.strip().lower() == "auto"):
        return None
    try:
        ratio = float(value)
    except (TypeError, ValueError):
        raise InputError(f"--ratio must be 'auto' or a number, not '{value}'", "for example --ratio 100") from None
    if not math.isfinite(ratio) or ratio <= 0:
        raise InputError(f"--ratio must be a positive number, not {value}", "typical exposure ratios are 100 to 300")
    return ratio


@dataclass
class EnhanceResult:
    image: np.ndarray  # float32 H x W x 3 sRGB in [0, 1], aligned with the input mosaic
    gain: float  # the amplification applied (automatic gamma or the given ratio)
    seconds: dict[str, float] = field(default_factory=dict)


class TorchBackend:
    """Runs the PyTorch LLPackNet (the FP32 reference)."""

    def __init__(self, checkpoint: str | os.PathLike | None = None):
        self.torch = require_torch("running the PyTorch model")
        from .checkpoint import load_model

        from targets.torch import TorchRunner

        self.model = load_model(checkpoint)
        self.runner = TorchRunner(self.model)
        self.variant = self.model.variant
        self.trained = self.model.checkpoint_info["trained"]

    @property
    def has_amplifier(self) -> bool:
        return self.model.config.amplifier

    def automatic_gain(self, mosaic: np.ndarray) -> float:
        return self.model.automatic_gain(mosaic)

    def run_packed(self, packed: np.ndarray) -> np.ndarray:
        """The network between Pack and UnPack: [N, 256, h, w] float32 -> [N, 192, 2h, 2w] float32."""
        return self.runner.run(packed)


class ArtifactBackend:
    """Runs an exported artifact with the runtime its manifest names (no torch needed)."""

    def __init__(self, folder: str | os.PathLike, threads: int | None = None):
        from targets import get_target

        from .artifact import read_manifest

        self.manifest = read_manifest(folder)
        self.target = get_target(self.manifest["target"])
        self.runner = self.target.load(folder, self.manifest, threads)
        self.variant = self.manifest["model"]["variant"]
        self.trained = bool(self.manifest["model"]["trained"])
        self.input_size = tuple(self.manifest["size"])

    @property
    def has_amplifier(self) -> bool:
        gain = next(s for s in self.manifest["input"]["preprocessing"] if s["step"] == "gain")
        return "automatic" in gain

    def automatic_gain(self, mosaic: np.ndarray) -> float:
        from .artifact import automatic_gain

        return automatic_gain(self.manifest, mosaic)

    def run_packed(self, packed: np.ndarray) -> np.ndarray:
        return self.runner.run(packed)


class Enhancer:
    """Restore dark Bayer RAW photos: `Enhancer().enhance_file('dark.dng', 'out.png')`."""

    def __init__(
        self,
        checkpoint: str | os.PathLike | None = None,
        ratio: str | float | None = "auto",
        model: str | os.PathLike | None = None,
        threads: int | None = None,
    ):
        """`checkpoint` runs the PyTorch model; `model` an exported artifact folder instead."""
        if checkpoint is not None and model is not None:
            raise UserError("give either a checkpoint or an artifact folder (--model), not both")
        self.ratio = parse_ratio(ratio)
        self.checkpoint, self.model, self.threads = checkpoint, model, threads

    @functools.cached_property
    def backend(self) -> TorchBackend | ArtifactBackend:
        """Loaded on first use, so cheap checks on inputs and outputs fail before the model loads."""
        if self.model is not None:
            backend = ArtifactBackend(self.model, self.threads)
        else:
            backend = TorchBackend(self.checkpoint)
        if self.ratio is None and not backend.has_amplifier:
            raise UserError(
                f"the {backend.variant} model has no automatic amplifier",
                "pass the exposure ratio, for example --ratio 100",
            )
        return backend

    @property
    def trained(self) -> bool:
        return self.backend.trained

    def choose_gain(self, mosaic: Mosaic, ratio: float | None = None) -> float:
        ratio = ratio if ratio is not None else self.ratio
        return ratio if ratio is not None else self.backend.automatic_gain(mosaic.data)

    def enhance(self, mosaic: Mosaic, ratio: float | None = None) -> EnhanceResult:
        """Restore one mosaic; `ratio` overrides the enhancer's own setting for this call."""
        backend = self.backend  # load (and compile) before the clock starts
        seconds: dict[str, float] = {}
        start = time.perf_counter()
        grid, placement = to_network_grid(mosaic.data, mosaic.pattern, size=getattr(backend, "input_size", None))
        gain = self.choose_gain(mosaic, ratio)
        packed = pack_network_input(grid, gain)
        seconds["preprocess"] = time.perf_counter() - start
        start = time.perf_counter()
        features = backend.run_packed(packed)[0]
        seconds["inference"] = time.perf_counter() - start
        start = time.perf_counter()
        image = np.clip(placement.crop(unpack_rgb(features)), 0.0, 1.0).transpose(1, 2, 0)
        seconds["postprocess"] = time.perf_counter() - start
        return EnhanceResult(np.ascontiguousarray(image, dtype=np.float32), gain, seconds)

    def enhance_file(
        self,
        source: str | os.PathLike,
        output: str | os.PathLike,
        bits: int = 8,
        black_level: float | None = None,
        white_level: float | None = None,
        pattern: str | None = None,
    ) -> EnhanceResult:
        """Read a RAW/.npy file, enhance it and write PNG/TIFF atomically (nothing on failure)."""
        image_format(output)  # refuse a bad suffix or folder before any work
        check_output_path(output)
        start = time.perf_counter()
        mosaic = read_mosaic(source, black_level, white_level, pattern)
        decode = time.perf_counter() - start
        result = self.enhance(mosaic)
        start = time.perf_counter()
        write_image(output, result.image, bits)
        result.seconds = {"decode": decode, **result.seconds, "write": time.perf_counter() - start}
        log.info("wrote %s (%dx%d, gain %.1f)", Path(output), mosaic.shape[1], mosaic.shape[0], result.gain)
        return result
