"""What machine a measurement was taken on (numpy-free, torch-free: runs on a bare Raspberry Pi).

Reports from several machines are merged later, so each carries its board, CPU, cores, memory,
instruction-set flags that decide which kernels run, and the runtime versions.
"""
from __future__ import annotations

import importlib.metadata
import os
import platform
from pathlib import Path

# Flags that decide the kernels a runtime picks (x86: AVX2/AVX-512/VNNI; ARM: NEON dot product, fp16, i8mm).
INTERESTING_FLAGS = ("sse4_2", "avx", "avx2", "fma", "f16c", "avx512f", "avx512bw", "avx512_vnni", "avx_vnni", "amx_int8",
                     "asimd", "asimddp", "asimdhp", "fphp", "i8mm", "bf16", "sve")
RUNTIME_PACKAGES = ("numpy", "torch", "openvino", "nncf", "ai-edge-litert", "tflite-runtime", "onnxruntime", "litert-torch",
                    "ai-edge-quantizer", "rawpy", "psutil")


def _read(path: str) -> str:
    try:
        return Path(path).read_text(errors="replace")
    except OSError:
        return ""


def cpu_description(cpuinfo: str | None = None) -> dict:
    """CPU model and flags from /proc/cpuinfo (x86 'model name'/'flags', ARM 'CPU part'/'Features')."""
    text = _read("/proc/cpuinfo") if cpuinfo is None else cpuinfo
    fields: dict[str, str] = {}
    for line in text.splitlines():
        key, _, value = line.partition(":")
        fields.setdefault(key.strip().lower(), value.strip())
    flags = set((fields.get("flags") or fields.get("features") or "").split())
    model = fields.get("model name") or fields.get("hardware") or fields.get("model") or platform.processor() or platform.machine()
    part = fields.get("cpu part")
    if part and not fields.get("model name"):
        model = {"0xd08": "Cortex-A72", "0xd0b": "Cortex-A76", "0xd03": "Cortex-A53"}.get(part, f"ARM part {part}")
    return {"model": model, "flags": sorted(f for f in INTERESTING_FLAGS if f in flags)}


def board_model() -> str | None:
    """'Raspberry Pi 5 Model B Rev 1.0' on a Pi (device tree), else None."""
    text = _read("/proc/device-tree/model").strip("\x00 \n")
    return text or None


def versions(packages=RUNTIME_PACKAGES) -> dict:
    found = {"python": platform.python_version()}
    for package in packages:
        try:
            found[package] = importlib.metadata.version(package)
        except importlib.metadata.PackageNotFoundError:
            continue
    return found


def describe_machine(threads: int | None = None, emulated: str | None = None) -> dict:
    """The `machine` section of a report."""
    import psutil

    cpu = cpu_description()
    return {
        "hostname": platform.node(),
        "board": board_model(),
        "cpu": cpu["model"],
        "arch": platform.machine(),
        "flags": cpu["flags"],
        "cores_logical": os.cpu_count(),
        "cores_physical": psutil.cpu_count(logical=False),
        "memory_gb": round(psutil.virtual_memory().total / 2**30, 1),
        "os": f"{platform.system()} {platform.release()}",
        "threads": threads,
        "emulated": emulated or os.environ.get("LLPACK_EMULATED") or None,
        "versions": versions(),
    }
