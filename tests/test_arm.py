"""ARM proof: a Raspberry Pi 5 bundle built here (TFLite FP32, FP16, INT8 and the OpenVINO FP32 IR)
profiles itself as aarch64 code (qemu user-mode emulation) in an environment that has only the
device runtimes, as on a Raspberry Pi 4 and 5, and its report merges with the x86 one. On the
Cortex-A76 OpenVINO and TFLite FP16 compute in f16 (qemu emulates its FP16 arithmetic) and meet the
f16 bar; on the A72 the same bundle computes in f32 and matches x86 within 1e-5. Skips, with the
reason, where emulation cannot run."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import needs_torch

ROOT = Path(__file__).resolve().parents[1]
# (cpu, runtime, XNNPACK expected for INT8): tflite-runtime 2.14 makes no XNNPACK delegate for int8 I/O.
BOARDS = [("cortex-a72", "ai-edge-litert", True), ("cortex-a76", "ai-edge-litert", True), ("cortex-a72", "tflite-runtime", False)]


@pytest.fixture(scope="module")
def arm_envs():
    from toolkit.bench.emulation import ensure_arm_environment
    from toolkit.errors import UserError

    try:
        return {runtime: ensure_arm_environment(runtime, show_progress=False) for runtime in ("ai-edge-litert", "tflite-runtime")}
    except UserError as exc:
        pytest.skip(f"aarch64 emulation cannot run here: {exc}")


@needs_torch
@pytest.mark.parametrize("cpu,runtime,int8_xnnpack", BOARDS)
def test_bundle_profiles_itself_on_emulated_arm_and_matches_x86(arm_envs, rpi_bundle, tmp_path, cpu, runtime, int8_xnnpack):
    arm = arm_envs[runtime]
    out = tmp_path / "report"
    proc = arm.run(cpu, ["-m", "toolkit.cli", "profile", rpi_bundle["archive"], "--runs", "1", "--warmup", "0", "--repeats", "1",
                         "--out", str(out), "--json"], capture_output=True, text=True, timeout=900, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads(proc.stdout)
    machine = report["machine"]
    assert machine["arch"] == "aarch64" and machine["emulated"] == f"qemu-aarch64 {cpu}"
    assert machine["cpu"] == {"cortex-a72": "Cortex-A72", "cortex-a76": "Cortex-A76"}[cpu]
    assert "torch" not in machine["versions"]  # only the light runtime is installed there
    assert machine["versions"][runtime] and "EMULATED" in (out / "report.md").read_text()
    rows = {r["label"]: r for r in report["results"]}
    assert set(rows) == {"tflite-fp32", "tflite-fp16", "tflite-int8", "openvino-fp32"}
    fp32, int8 = rows["tflite-fp32"], rows["tflite-int8"]
    assert fp32["status"] == "ok" and fp32["runtime_details"]["xnnpack"] is True
    assert fp32["parity"]["ok"] and fp32["parity"]["max_abs_diff"] <= 1e-5
    assert int8["status"] == "ok" and int8["parity"]["ok"] and int8["runtime_details"]["xnnpack"] is int8_xnnpack
    if int8_xnnpack:
        assert int8["parity"]["max_abs_diff"] == 0.0  # XNNPACK on both machines: bit-identical
    else:
        assert int8["parity"]["quantisation_steps"] <= 8
        assert any("XNNPACK was not applied" in w and "FP32" in w for w in int8["warnings"])
    fp16_cpu = cpu == "cortex-a76"
    for label in ("tflite-fp16", "openvino-fp32"):
        row = rows[label]
        assert row["status"] == "ok" and row["parity"]["ok"], row.get("error")
        assert row["runtime_details"]["arithmetic"] == ("f16" if fp16_cpu else "f32")
        if fp16_cpu:  # the f16 bar: against the x86 FP32 images and ground truth
            assert row["psnr_vs_fp32_db"] >= 40.0 and row["delta_psnr_vs_gt_db"] >= -0.3
            assert row["parity"]["max_abs_diff"] > 1e-5  # really computed otherwise than x86
        else:
            assert row["parity"]["max_abs_diff"] <= 1e-5
    assert rows["openvino-fp32"]["runtime_details"]["device"] == {"cortex-a72": "ARM (0xd08)", "cortex-a76": "ARM (0xd0b)"}[cpu]
    table = (out / "report.md").read_text()
    assert ("openvino-fp32 [f16]" in table) == fp16_cpu and ("tflite-fp16 [f32]" in table) == (not fp16_cpu)
    for row in rows.values():
        assert row["params"] == 1_169_088 and row["psnr_vs_fp32_db"] is not None
    merged = subprocess.run([sys.executable, "-m", "toolkit.cli", "report", "merge", str(out),
                             str(Path(rpi_bundle["path"]) / "x86" / "report.json"), "--out", str(tmp_path / "merged"), "--json"],
                            capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert merged.returncode == 0, merged.stderr
    merged_rows = json.loads(merged.stdout)["results"]
    assert sum(r["emulated"] for r in merged_rows) == 4 and len(merged_rows) == 9
    assert all(r["vs_fp32"] and r["vs_fp32"]["reference"] == "torch-fp32 64x96" for r in merged_rows)
    assert "not a real board's" in (tmp_path / "merged" / "merged.md").read_text()
