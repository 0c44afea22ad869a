"""OpenVINO IR for x86 and Arm CPUs, converted straight from PyTorch (no ONNX step).

One FP32 IR serves both. The precision it computes in is chosen when it is compiled: FP32 on x86
(given explicitly: CPUs with bf16 or AMX would otherwise run bf16 silently), and on a 64-bit Arm
CPU the best it has, f16 where it has FP16 arithmetic (Raspberry Pi 5's Cortex-A76), else f32
(Pi 4). `LLPACK_OPENVINO_PRECISION=f32` keeps FP32 on such a board. OpenVINO runs INT8 IR in
floating point on Arm, so there the FP32 IR is the one to use.
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from toolkit.memory import OutputBuffers

from .base import ChannelsFirstRunner

MODEL_FILE, WEIGHTS_FILE = "model.xml", "model.bin"
os.environ.setdefault("OPENVINO_TELEMETRY_DISABLE", "1")


def build(body, size: tuple[int, int], out_dir: Path) -> list[str]:
    """The FP32 artifact (INT8 is `quantization.quantize`, which converts through this module)."""
    import openvino as ov
    import torch

    shape = (1, 256, size[0] // 16, size[1] // 16)
    with torch.inference_mode():
        model = ov.convert_model(body, example_input=torch.zeros(shape), input=[shape])
    # Keep FP32 weights: the default FP16 compression costs about 1.7e-3 of accuracy.
    ov.save_model(model, str(out_dir / MODEL_FILE), compress_to_fp16=False)
    return [MODEL_FILE, WEIGHTS_FILE]


class OpenVinoRunner(ChannelsFirstRunner):
    """Zero-copy I/O: the input is read where it lies, and the output is written straight into an
    array handed to the caller (`OutputBuffers`: reused once the caller lets go of it, so neither a
    copy of a 145 MB feature map nor a fresh one's page faults on each call)."""

    def __init__(self, compiled):
        import openvino as ov

        self.ov, self.compiled, self.request = ov, compiled, compiled.create_infer_request()
        self.output_shape = tuple(compiled.output(0).shape)
        self.outputs = OutputBuffers(lambda array: ov.Tensor(array, shared_memory=True))
        # Set in place of a shared input after each call, so the request never keeps the caller's
        # input alive; its pages are never written, so it takes no resident memory.
        port = compiled.input(0)
        self._idle_input = ov.Tensor(port.get_element_type(), port.shape) if port.get_partial_shape().is_static else None

    def runtime_details(self) -> dict:
        """The precision the compiled model computes in, read back from it (f32, f16, bf16), and the CPU."""
        return {"arithmetic": self.compiled.get_property("INFERENCE_PRECISION_HINT").get_type_name(),
                "device": self.ov.Core().get_property("CPU", "FULL_DEVICE_NAME")}

    def run(self, packed: np.ndarray) -> np.ndarray:
        out, tensor = self.outputs.take(self.output_shape)
        self.request.set_output_tensor(tensor)
        # The input is set as a tensor sharing its memory (infer(inputs) would keep a reference to
        # it in the request) and swapped out afterwards; share_outputs: no numpy copy of the output
        # made, and thrown away, on the way back.
        self.request.set_input_tensor(self.ov.Tensor(np.ascontiguousarray(packed, np.float32), shared_memory=True))
        try:
            self.request.infer(share_outputs=True)
        finally:
            if self._idle_input is not None:
                self.request.set_input_tensor(self._idle_input)
        return out


# Compiled models are kept between runs (OpenVINO's model cache): a second `llpack enhance --model`
# imports the blob instead of compiling again. One folder per artifact, runtime, CPU and setting, so a
# changed artifact, OpenVINO upgrade or other CPU is never served a stale blob; the newest few are kept.
CACHE_KEEP = 8


def _cpu_identity() -> str:
    """The CPU as the compiled code depends on it: architecture, model name and feature flags."""
    import platform

    facts = [platform.machine()]
    try:
        with open("/proc/cpuinfo") as fh:
            seen = set()
            for line in fh:
                key = line.split(":", 1)[0].strip()
                if key in ("model name", "flags", "Features", "CPU part") and key not in seen:
                    seen.add(key)
                    facts.append(line.strip())
    except OSError:
        facts.append(platform.processor())
    return "\n".join(facts)


def compile_cache_dir(manifest: dict, config: dict) -> Path | None:
    """Where this artifact's compiled blob is kept, or None: caching off (LLPACK_COMPILE_CACHE=off),
    or a model that is not a checked artifact (an export's staging run, whose manifest lists no files)."""
    import hashlib
    import json

    import openvino as ov

    from toolkit.fileio import user_cache_dir

    files = manifest.get("files")
    if not files or os.environ.get("LLPACK_COMPILE_CACHE", "").lower() in ("off", "0", "no"):
        return None
    key = json.dumps({"files": files, "openvino": ov.get_version(), "cpu": _cpu_identity(),
                      "config": {k: str(v) for k, v in config.items()}}, sort_keys=True)
    return user_cache_dir("openvino", hashlib.sha256(key.encode()).hexdigest()[:24])


def _prune(folder: Path, keep: int = CACHE_KEEP) -> None:
    import shutil

    entries = sorted((p for p in folder.parent.iterdir() if p.is_dir()), key=lambda p: p.stat().st_mtime, reverse=True)
    for old in entries[keep:]:
        shutil.rmtree(old, ignore_errors=True)


SEAL = "checksums.json"  # the blobs' SHA-256 as written: OpenVINO imports a damaged blob of the right size silently


def _blob_checksums(cache: Path) -> dict[str, str]:
    from toolkit.fileio import file_sha256

    return {p.name: file_sha256(p) for p in sorted(cache.iterdir()) if p.is_file() and p.name != SEAL}


def _checked_cache(cache: Path) -> Path | None:
    """The cache folder ready to use: created, marked as recently used, emptied if its blobs are not
    the ones written (damaged, or left half-written); None if it cannot be written."""
    import json
    import shutil

    try:
        cache.mkdir(parents=True, exist_ok=True)
        blobs = _blob_checksums(cache)
        try:
            sealed = json.loads((cache / SEAL).read_text())
        except (OSError, ValueError):
            sealed = {}
        if blobs and blobs != sealed:
            shutil.rmtree(cache)
            cache.mkdir(parents=True)
        os.utime(cache)  # most recently used: kept by `_prune`
        _prune(cache)
    except OSError:  # a read-only or full cache folder: compile as if there were none
        return None
    return cache


def _seal(cache: Path) -> None:
    from toolkit.fileio import atomic_write_json

    blobs = _blob_checksums(cache)
    try:
        if blobs and not (cache / SEAL).exists():
            atomic_write_json(cache / SEAL, blobs)
    except Exception:  # an unsealed blob is only recompiled next time
        pass


PRECISION_ENV = "LLPACK_OPENVINO_PRECISION"  # auto (default), f32 or f16


def inference_precision(core) -> str:
    """f32 on x86; on Arm f16 where the CPU has FP16 arithmetic, else f32 (or what PRECISION_ENV asks)."""
    import platform

    from toolkit.errors import UserError

    wanted = os.environ.get(PRECISION_ENV, "auto").strip().lower() or "auto"
    if wanted not in ("auto", "f32", "f16"):
        raise UserError(f"{PRECISION_ENV}={wanted} is not a precision", "use auto, f32 or f16")
    arm = platform.machine().lower() in ("aarch64", "arm64")
    fp16 = arm and "FP16" in core.get_property("CPU", "OPTIMIZATION_CAPABILITIES")
    if wanted == "f16" and not fp16:
        raise UserError(f"{PRECISION_ENV}=f16: this CPU has no FP16 arithmetic OpenVINO uses (only Arm CPUs with it do)",
                        f"unset {PRECISION_ENV} to run in f32")
    return "f16" if fp16 and wanted != "f32" else "f32"


def load(artifact_dir: Path, manifest: dict, threads: int | None) -> OpenVinoRunner:
    import shutil

    import openvino as ov

    core = ov.Core()
    config = {"PERFORMANCE_HINT": "LATENCY", "INFERENCE_PRECISION_HINT": inference_precision(core)}
    if threads:
        config["INFERENCE_NUM_THREADS"] = int(threads)
    cache = compile_cache_dir(manifest, config)
    cache = _checked_cache(cache) if cache is not None else None
    model = str(artifact_dir / MODEL_FILE)
    try:
        compiled = core.compile_model(model, "CPU", {**config, **({"CACHE_DIR": str(cache)} if cache else {})})
    except RuntimeError:
        if cache is None:
            raise
        shutil.rmtree(cache, ignore_errors=True)  # a damaged blob: drop it and compile afresh
        compiled = core.compile_model(model, "CPU", config)
        cache = None
    if cache is not None:
        _seal(cache)
    return OpenVinoRunner(compiled)
