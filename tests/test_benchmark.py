"""The full-resolution benchmark runs end to end (at a small size) and prints every ratio it promises.

It checks that the script works, not what it measures: no test times anything."""
from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import SMALL_SIZE, needs_torch

ROOT = Path(__file__).resolve().parents[1]


@needs_torch
def test_benchmark_prints_each_ratio(small_artifacts, tmp_path):
    pytest.importorskip("openvino")
    size = f"{SMALL_SIZE[0]}x{SMALL_SIZE[1]}"
    root = tmp_path / "artifacts"
    root.mkdir()
    for (target, precision), manifest in small_artifacts.items():  # the session's exports, as export --all lays them out
        (root / f"{target}-{precision}-{size}").symlink_to(manifest["path"], target_is_directory=True)
    proc = subprocess.run([sys.executable, "benchmarks/full_resolution.py", "--size", size, "--out", str(tmp_path / "bench"),
                           "--artifacts", str(root)], capture_output=True, text=True, cwd=ROOT, timeout=1200)
    assert proc.returncode == 0, proc.stderr[-2000:]
    out = proc.stdout
    number = r"\d+\.\d+"
    for line in ("OpenVINO INT8 end to end / FP32 PyTorch end to end:", "OpenVINO FP32 achieved / OpenVINO FP32 peak:",
                 "tiled peak above the loaded model / untiled's:", "whole-process floor of any tiling:",
                 "tiled latency / untiled"):
        assert re.search(re.escape(line) + r".*?" + number, out), line
    if ("tflite", "int8") in small_artifacts:
        assert re.search(r"TFLite INT8 / TFLite FP32 latency:\s+" + number, out)
    assert "error" not in out.lower()
