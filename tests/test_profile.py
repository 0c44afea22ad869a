"""The profiler: every model in its own process, figures from the artifacts, faults isolated.

Nothing here asserts a time: latencies are only checked for consistency (ratios, ordering of
percentiles), never against a number.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from conftest import needs_torch

ROOT = Path(__file__).resolve().parents[1]
SIZE = (64, 96)
BODY_PARAMETERS = 1_169_088
SID_PARAMETERS = 7_760_748
ARTIFACTS = [("openvino", "fp32"), ("openvino", "int8"), ("tflite", "fp32"), ("onnxruntime", "fp32")]
RUNTIME = {"openvino": "openvino", "tflite": "ai_edge_litert", "onnxruntime": "onnxruntime"}


def _schema():
    jsonschema = pytest.importorskip("jsonschema")
    schema = json.loads((ROOT / "toolkit" / "schemas" / "report.schema.json").read_text())
    jsonschema.Draft202012Validator.check_schema(schema)
    return jsonschema.Draft202012Validator(schema)


def _llpack(*args, env=None, timeout=600):
    return subprocess.run([sys.executable, "-m", "toolkit.cli", *args], capture_output=True, text=True, cwd=ROOT,
                          env={**os.environ, **(env or {})}, timeout=timeout)


@pytest.fixture(scope="module")
def artifacts(small_artifacts):
    return {f"{t}-{p}": small_artifacts[t, p]["path"] for t, p in ARTIFACTS if (t, p) in small_artifacts}


@pytest.fixture(scope="module")
def report(artifacts, tmp_path_factory):
    from toolkit.bench.profile import profile

    out = tmp_path_factory.mktemp("profile")
    return profile(list(artifacts.values()), runs=3, warmup=1, repeats=2, out=out,
                   artifacts_root=out / "artifacts", sid=True, show_progress=False, peak=True)


@needs_torch
def test_report_has_every_model_with_the_reference_first_and_matches_its_schema(report, artifacts):
    rows = {r["label"]: r for r in report["results"]}
    assert report["results"][0]["label"] == "torch-fp32"
    assert set(rows) == {"torch-fp32", "sid-unet-fp32", *artifacts}
    assert report["failed"] == 0 and all(r["status"] == "ok" for r in rows.values())
    _schema().validate(json.loads((Path(report["path"]) / "report.json").read_text()))
    m = report["machine"]
    assert m["cpu"] and m["cores_logical"] >= 1 and "numpy" in m["versions"] and m["emulated"] is None


@needs_torch
def test_figures_come_from_the_artifacts_and_ratios_from_the_same_run(report):
    from toolkit.model.llpacknet import macs_per_pixel

    rows = {r["label"]: r for r in report["results"]}
    reference = rows["torch-fp32"]
    for label, row in rows.items():
        lat = row["latency_ms"]
        assert lat["runs"] == 6 and len(lat["repeat_p50s"]) == 2
        assert lat["min"] <= lat["p50"] <= lat["p90"] <= lat["p99"] <= lat["max"]
        assert row["peak_rss_mb"] >= row["peak_rss_above_baseline_mb"] > 0
        assert set(row["stages_ms"]) == {"decode", "preprocess", "inference", "postprocess"}
        assert row["vs_fp32"]["speed_up"] == pytest.approx(reference["latency_ms"]["p50"] / lat["p50"], rel=1e-3)
        assert row["vs_fp32"]["size"] == pytest.approx(row["file_bytes"] / reference["file_bytes"], rel=1e-3)
        if label == "sid-unet-fp32":
            continue
        assert row["params"] == BODY_PARAMETERS
        assert row["gmacs"] == pytest.approx(macs_per_pixel() * SIZE[0] * SIZE[1] / 1e9, abs=1e-3)
        assert row["quality_scenes"] == 4 and row["psnr_vs_gt_db"] > 10
    assert reference["identical_to_fp32"] is True and reference["vs_fp32"]["speed_up"] == 1.0
    for label in ("openvino-fp32", "tflite-fp32", "onnxruntime-fp32"):
        if label in rows:
            assert rows[label]["psnr_vs_fp32_db"] > 100 and abs(rows[label]["vs_fp32"]["psnr_change_db"]) < 1e-3
    if "openvino-int8" in rows:
        assert 30 < rows["openvino-int8"]["psnr_vs_fp32_db"] < 100
        assert rows["openvino-int8"]["file_bytes"] < 0.35 * rows["openvino-fp32"]["file_bytes"]
    sid = rows["sid-unet-fp32"]
    assert sid["params"] == SID_PARAMETERS and sid["psnr_vs_gt_db"] is None
    comparison = report["vs_sid_unet"][0]
    assert comparison["fewer_parameters"] == pytest.approx(SID_PARAMETERS / BODY_PARAMETERS, rel=1e-3)
    assert comparison["fewer_gmacs"] == pytest.approx(sid["gmacs"] / reference["gmacs"], rel=1e-2)


@needs_torch
def test_each_runtime_peak_is_measured_and_models_are_a_fraction_of_it(report):
    peaks = report["machine_peak"]
    assert {"torch", "openvino"} <= set(peaks)
    for runtime, peak in peaks.items():
        assert peak["peak_gmac_per_s"] > 0 and peak["gmac"] == pytest.approx(9.66, rel=1e-2), (runtime, peak)
    for row in report["results"]:
        runtime = "torch" if row["label"] == "sid-unet-fp32" else row["target"]
        if runtime in peaks and row.get("gmac_per_s") and row["precision"] == "fp32":
            assert row["fraction_of_peak"] == pytest.approx(row["gmac_per_s"] / peaks[runtime]["median_gmac_per_s"], rel=1e-2)
        elif row["precision"] == "int8":
            assert "fraction_of_peak" not in row  # an FP32 peak says nothing about INT8 kernels
    assert "Compute efficiency" in (Path(report["path"]) / "report.md").read_text()


@needs_torch
def test_report_files_are_complete(report):
    folder = Path(report["path"])
    md = (folder / "report.md").read_text()
    assert "| torch-fp32 | 64x96 | 1,169,088 |" in md and "SID U-Net" in md
    for name in report["plots"]:
        assert (folder / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert set(report["plots"]) == {"latency.png", "memory.png", "quality_vs_latency.png"}
    assert not list(folder.rglob("*.part"))
    from toolkit.bench.report import read_report, render_table

    table = render_table(read_report(folder))
    assert "openvino-fp32" in table and "vs SID U-Net" in table


@needs_torch
def test_a_repeated_run_gives_identical_counts_and_quality(report, artifacts, tmp_path):
    from toolkit.bench.profile import profile

    again = profile(list(artifacts.values()), runs=2, warmup=0, repeats=1, out=tmp_path, sid=False, show_progress=False,
                    artifacts_root=Path(report["path"]) / "artifacts")
    before = {r["label"]: r for r in report["results"]}
    for row in again["results"]:
        old = before[row["label"]]
        for key in ("params", "file_bytes", "gmacs", "psnr_vs_fp32_db", "psnr_vs_gt_db", "ssim_vs_gt", "identical_to_fp32"):
            assert row[key] == old[key], (row["label"], key)


@needs_torch
def test_a_crash_a_hang_and_an_exception_fail_only_their_own_rows(artifacts, tmp_path):
    victims = [label for label in ("openvino-fp32", "tflite-fp32", "onnxruntime-fp32") if label in artifacts]
    if len(victims) < 3:
        pytest.skip("needs the openvino, tflite and onnxruntime runtimes")
    faults = "openvino-fp32=crash,tflite-fp32=hang,onnxruntime-fp32=raise"
    result = _llpack("profile", *(artifacts[v] for v in victims), artifacts["openvino-int8"], "--runs", "1", "--warmup", "0",
                     "--repeats", "1", "--timeout", "40", "--no-sid", "--out", str(tmp_path), "--json",
                     env={"LLPACK_INJECT_FAULT": faults})
    assert result.returncode == 3, result.stderr
    assert "3 of 5 models failed" in result.stderr
    rows = {r["label"]: r for r in json.loads(result.stdout)["results"]}
    assert rows["openvino-fp32"]["status"] == "failed" and "SIGSEGV" in rows["openvino-fp32"]["error"]
    assert rows["tflite-fp32"]["status"] == "failed" and "timed out after 40 s" in rows["tflite-fp32"]["error"]
    assert rows["onnxruntime-fp32"]["status"] == "failed" and "fault injected" in rows["onnxruntime-fp32"]["error"]
    assert rows["torch-fp32"]["status"] == "ok" and rows["openvino-int8"]["status"] == "ok"
    assert rows["openvino-int8"]["psnr_vs_fp32_db"] is not None
    report = json.loads((tmp_path / "report.json").read_text())
    assert report["failed"] == 3
    _schema().validate(report)


@needs_torch
def test_the_profiler_runs_an_artifact_where_torch_cannot_be_imported(artifacts, tmp_path):
    if "tflite-fp32" not in artifacts:
        pytest.skip("needs the TFLite runtime")
    blocker = tmp_path / "block"
    (blocker / "torch").mkdir(parents=True)
    (blocker / "torch" / "__init__.py").write_text("raise ImportError('torch is not installed on this device')\n")
    result = _llpack("profile", artifacts["tflite-fp32"], "--runs", "2", "--repeats", "1", "--out", str(tmp_path / "out"), "--json",
                     env={"PYTHONPATH": str(blocker)})
    assert result.returncode == 0, result.stderr
    rows = json.loads(result.stdout)["results"]
    assert [r["label"] for r in rows] == ["tflite-fp32"]  # no reference and no SID without torch
    row = rows[0]
    assert row["status"] == "ok" and row["params"] == BODY_PARAMETERS
    assert row["vs_fp32"]["reference"] == "tflite-fp32 64x96" and row["vs_fp32"]["speed_up"] == 1.0  # the board's own baseline
    assert row["psnr_vs_gt_db"] > 10 and row["psnr_vs_fp32_db"] is None
    # The worker imported only numpy, psutil and the TFLite runtime: any `import torch` would have raised above.


def test_nothing_to_profile_is_a_user_error(tmp_path):
    result = _llpack("profile", "--out", str(tmp_path))
    assert result.returncode == 2 and "nothing to profile" in result.stderr and "--all" in result.stderr
    result = _llpack("profile", str(tmp_path / "missing"))
    assert result.returncode == 2 and "not an artifact folder" in result.stderr
    result = _llpack("profile", "--all", "--device", "rpi9")
    assert result.returncode == 2 and "did you mean 'rpi" in result.stderr
    result = _llpack("profile", "--all", "--checkpoint", str(tmp_path / "nope.pt"), "--out", str(tmp_path / "o"))
    assert result.returncode == 2 and "cannot read the checkpoint" in result.stderr
    result = _llpack("profile", "--all", "--timeout", "0", "--out", str(tmp_path / "o"))
    assert result.returncode == 2 and "--timeout positive" in result.stderr


def test_report_reader_refuses_foreign_files(tmp_path):
    (tmp_path / "report.json").write_text(json.dumps({"schema": "something-else"}))
    result = _llpack("report", "show", str(tmp_path))
    assert result.returncode == 2 and "not an LLPackNet Edge profile report" in result.stderr
    (tmp_path / "report.json").write_text("{broken")
    assert "not valid JSON" in _llpack("report", "show", str(tmp_path)).stderr


def test_aggregate_states_run_to_run_noise_and_keeps_failed_repeats():
    from toolkit.bench.report import aggregate

    def run(p50, ok=True):
        if not ok:
            return {"status": "failed", "error": "crashed (SIGSEGV)"}
        lat = {"runs": 5, "mean": p50, "std": 1.0, "min": p50 - 2, "max": p50 + 3, "p10": p50 - 1, "p50": p50, "p90": p50 + 1, "p99": p50 + 3}
        return {"status": "ok", "params": 10, "file_bytes": 40, "macs_per_pixel": 100.0, "load_ms": 5.0, "first_ms": 9.0,
                "latency_ms": lat, "baseline_rss_mb": 50.0, "peak_rss_mb": 80.0, "peak_rss_above_baseline_mb": 30.0,
                "stages_ms": {"decode": 1.0, "preprocess": 1.0, "inference": p50, "postprocess": 1.0}, "quality": None}

    row = aggregate("openvino-int8", (64, 96), [run(100.0), run(110.0), run(0, ok=False)])
    assert row["status"] == "partial" and "SIGSEGV" in row["error"]
    assert row["latency_ms"]["p50"] == pytest.approx(105.0)
    assert row["latency_ms"]["spread_pct"] == pytest.approx(100 * 10 / 105)
    assert row["latency_ms"]["noise_pct"] >= row["latency_ms"]["spread_pct"]
    assert row["gmacs"] == pytest.approx(100.0 * 64 * 96 / 1e9, rel=1e-3)
    assert aggregate("tflite-int8", (64, 96), [run(0, ok=False)])["status"] == "failed"


def test_arm_cpuinfo_and_device_profiles_are_read():
    from profiles import device_names, load_device_profile
    from toolkit.bench.machine import cpu_description

    arm = "processor\t: 0\nBogoMIPS\t: 108.00\nFeatures\t: fp asimd evtstrm crc32 cpuid asimddp\nCPU part\t: 0xd0b\n"
    assert cpu_description(arm) == {"model": "Cortex-A76", "flags": ["asimd", "asimddp"]}
    assert {"x86-2core", "rpi4", "rpi5"} <= set(device_names())
    for name in ("x86-2core", "rpi4", "rpi5"):
        profile = load_device_profile(name)
        assert profile["threads"] >= 1 and profile["memory_budget_mb"] > 0 and profile["sizes"]


@needs_torch
def test_sid_unet_matches_the_published_size_and_compute():
    from toolkit.model.sid_unet import create_sid_unet, sid_macs_per_pixel

    model = create_sid_unet()
    assert sum(p.numel() for p in model.parameters()) == SID_PARAMETERS  # FACTS.md: 7,760,748
    assert sid_macs_per_pixel() * 2848 * 4256 / 1e9 == pytest.approx(560, rel=0.01)  # FACTS.md: about 560 GMAC
    import torch

    with torch.inference_mode():
        out = model(torch.from_numpy(np.zeros((1, 4, 32, 48), np.float32)))
    assert tuple(out.shape) == (1, 3, 64, 96)
