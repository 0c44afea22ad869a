"""FP16 and the precision a runtime really computes in: the TFLite FP16 artifact (FP16 weights plus the
metadata that asks XNNPACK for FP16 arithmetic), the probe that tells whether XNNPACK did, OpenVINO's
choice of f16 on Arm CPUs with FP16 arithmetic, and how a profile judges rows computed in f16.

What needs an Arm CPU runs under emulation in test_emulation.py and test_arm.py."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from conftest import needs_torch


@pytest.fixture
def fp16(small_artifacts):
    if ("tflite", "fp16") not in small_artifacts:
        pytest.skip("needs the TFLite converter and ai-edge-quantizer")
    return small_artifacts["tflite", "fp16"]


def _metadata(path: Path) -> dict[str, bytes]:
    from ai_edge_litert import schema_py_generated as schema

    data = path.read_bytes()
    model = schema.Model.GetRootAsModel(data, 0)
    found = {}
    for i in range(model.MetadataLength()):
        entry = model.Metadata(i)
        buffer = model.Buffers(entry.Buffer())
        found[entry.Name().decode()] = buffer.DataAsNumpy().tobytes()
    return found


@needs_torch
def test_fp16_artifact_holds_fp16_weights_that_ask_for_fp16_arithmetic(fp16, small_artifacts):
    from ai_edge_litert.interpreter import Interpreter, OpResolverType

    from targets.tflite import FP16_REQUEST, REDUCED_PRECISION_KEY, fp16_arithmetic

    folder = Path(fp16["path"])
    fp32_bytes = (Path(small_artifacts["tflite", "fp32"]["path"]) / "model.tflite").stat().st_size
    assert (folder / "model.tflite").stat().st_size < 0.55 * fp32_bytes
    assert _metadata(folder / "model.tflite")[REDUCED_PRECISION_KEY] == FP16_REQUEST
    interp = Interpreter(model_path=str(folder / "model.tflite"),
                         experimental_op_resolver_type=OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES)
    weights = [t for t in interp.get_tensor_details() if len(t["shape"]) == 4 and np.dtype(t["dtype"]) == np.float16]
    assert len(weights) >= 30  # every convolution's filter is stored in FP16
    manifest = json.loads((folder / "manifest.json").read_text())
    v = manifest["validation"]
    assert manifest["precision"] == "fp16" and not v["degraded"]
    assert v["psnr_vs_fp32_db"] >= 40.0 and v["delta_psnr_vs_gt_db"] >= -0.3 and v["stress"]["worst_db"] >= 32.0
    # What this machine checked: FP16 arithmetic only where its CPU has it, else the FP16 weights alone.
    assert v["arithmetic"] == ("f16" if fp16_arithmetic() else "f32")
    assert manifest["calibration"] is None


def test_the_shipped_probe_is_what_the_generator_makes():
    pytest.importorskip("ai_edge_litert")
    from targets.tflite import PROBE_FILE, fp16_probe_bytes

    assert PROBE_FILE.read_bytes() == fp16_probe_bytes()


def test_the_probe_sums_exactly_in_fp32_and_not_in_fp16():
    """Its input sums to 2055 exactly in FP32; rounded to FP16 at each step the sum stays near 2048."""
    from targets.tflite import PROBE_INPUT

    total = np.float16(0)
    for value in PROBE_INPUT:
        total = np.float16(total + np.float16(value))
    assert float(np.sum(np.array(PROBE_INPUT, np.float32))) == 2055.0 and float(total) != 2055.0


def test_the_probe_answers_on_this_machine():
    pytest.importorskip("ai_edge_litert")
    import platform

    from targets.tflite import fp16_arithmetic

    answer = fp16_arithmetic()
    assert answer in (True, False)
    if platform.machine() in ("x86_64", "AMD64"):
        flags = Path("/proc/cpuinfo").read_text().split() if Path("/proc/cpuinfo").exists() else []
        if "avx512_fp16" not in flags:
            assert answer is False  # no FP16 arithmetic on this x86 CPU (with it, XNNPACK builds may differ)


@needs_torch
def test_metadata_is_added_without_losing_a_weight(fp16, small_packed_inputs, tmp_path):
    """with_metadata moves buffers stored after the flatbuffer inside it: the model still computes the same."""
    from targets.tflite import interpreter, with_metadata

    source = Path(fp16["path"]) / "model.tflite"
    copy = tmp_path / "model.tflite"
    copy.write_bytes(with_metadata(source.read_bytes(), "llpack_test", b"yes"))
    assert _metadata(copy)["llpack_test"] == b"yes"
    packed = np.load(small_packed_inputs)[:1].transpose(0, 2, 3, 1).copy()
    outputs = []
    for path in (source, copy):
        interp = interpreter(path, 1)
        interp.allocate_tensors()
        interp.set_tensor(interp.get_input_details()[0]["index"], packed)
        interp.invoke()
        outputs.append(interp.get_tensor(interp.get_output_details()[0]["index"]))
    assert np.array_equal(*outputs)


def test_fp16_parameters_are_counted_like_fp32(small_artifacts):
    if ("tflite", "fp16") not in small_artifacts:
        pytest.skip("needs the TFLite converter")
    from toolkit.bench.params import count_artifact_parameters

    counts = {p: count_artifact_parameters(small_artifacts["tflite", p]["path"], small_artifacts["tflite", p]) for p in ("fp32", "fp16")}
    assert counts["fp16"] == counts["fp32"] == 1_169_088


# ---------------------------------------------------------------- OpenVINO's precision
class _Core:
    def __init__(self, capabilities):
        self.capabilities = capabilities

    def get_property(self, device, name):
        assert (device, name) == ("CPU", "OPTIMIZATION_CAPABILITIES")
        return self.capabilities


@pytest.mark.parametrize("machine, capabilities, env, expected", [
    ("x86_64", ["FP32", "FP16", "BF16", "INT8"], None, "f32"),  # x86 always FP32, even where f16/bf16 exist
    ("aarch64", ["FP32", "FP16", "INT8"], None, "f16"),  # Cortex-A76
    ("aarch64", ["FP32", "INT8"], None, "f32"),  # Cortex-A72
    ("aarch64", ["FP32", "FP16", "INT8"], "f32", "f32"),  # asked to keep FP32
    ("aarch64", ["FP32", "FP16", "INT8"], "auto", "f16"),
])
def test_openvino_computes_in_f16_only_on_arm_cpus_with_fp16(monkeypatch, machine, capabilities, env, expected):
    import platform

    from targets.openvino import PRECISION_ENV, inference_precision

    monkeypatch.setattr(platform, "machine", lambda: machine)
    if env is None:
        monkeypatch.delenv(PRECISION_ENV, raising=False)
    else:
        monkeypatch.setenv(PRECISION_ENV, env)
    assert inference_precision(_Core(capabilities)) == expected


@pytest.mark.parametrize("machine, env, message", [("x86_64", "f16", "no FP16 arithmetic"), ("aarch64", "fp8", "not a precision")])
def test_an_impossible_openvino_precision_is_refused_in_one_line(monkeypatch, machine, env, message):
    import platform

    from targets.openvino import PRECISION_ENV, inference_precision
    from toolkit.errors import UserError

    monkeypatch.setattr(platform, "machine", lambda: machine)
    monkeypatch.setenv(PRECISION_ENV, env)
    with pytest.raises(UserError, match=message):
        inference_precision(_Core(["FP32", "INT8"]))


def test_openvino_reports_the_precision_it_compiled_for(small_artifacts):
    if ("openvino", "fp32") not in small_artifacts:
        pytest.skip("needs OpenVINO")
    from targets import get_target
    from toolkit.deploy.artifact import read_manifest

    folder = small_artifacts["openvino", "fp32"]["path"]
    details = get_target("openvino").load(folder, read_manifest(folder)).runtime_details()
    assert details["arithmetic"] == "f32" and details["device"]  # x86: FP32, given explicitly


# ---------------------------------------------------------------- how a profile judges f16 rows
def _row(precision, arithmetic, max_abs, psnr=None, loss=None, target="openvino"):
    return {"label": f"{target}-{precision}", "target": target, "precision": precision, "status": "ok",
            "runtime_details": {"arithmetic": arithmetic, **({"xnnpack": True} if target == "tflite" else {})},
            "parity": {"against": "x86", "max_abs_diff": max_abs, "quantisation_steps": None},
            "psnr_vs_fp32_db": psnr, "delta_psnr_vs_gt_db": loss, "identical_to_fp32": False}


@pytest.mark.parametrize("row, ok", [
    (_row("fp32", "f16", 5e-3, psnr=59.0, loss=-0.01), True),  # OpenVINO on a Pi 5
    (_row("fp32", "f16", 5e-2, psnr=38.0, loss=-0.01), False),  # under 40 dB against the x86 FP32 images
    (_row("fp32", "f16", 5e-3, psnr=45.0, loss=-0.5), False),  # loses more than 0.3 dB against ground truth
    (_row("fp32", "f32", 2e-6), True),  # OpenVINO on a Pi 4: FP32 on both machines
    (_row("fp32", "f32", 1e-3), False),
    (_row("fp16", "f16", 6e-4, psnr=78.0, loss=0.0, target="tflite"), True),
    (_row("fp16", "f32", 0.0, target="tflite"), True),  # FP16 weights, FP32 arithmetic on both machines
    (_row("fp16", "f32", 6e-4, target="tflite"), False),
])
def test_rows_computed_in_f16_meet_the_f16_bar_and_the_rest_fp32_parity(row, ok):
    from toolkit.bench.report import judge_parity

    judge_parity(row)
    assert row["parity"]["ok"] is ok and (row["status"] == "ok") is ok
    if row["precision"] == "fp16" and row["runtime_details"]["arithmetic"] == "f32":
        assert any("FP16 arithmetic did not run here" in w for w in row["warnings"])


def test_the_table_names_the_arithmetic_that_differs_from_the_precision():
    from toolkit.bench.report import _label

    assert _label(_row("fp32", "f16", 0)) == "openvino-fp32 [f16]"
    assert _label(_row("fp32", "f32", 0)) == "openvino-fp32"
    assert _label(_row("fp16", "f32", 0, target="tflite")) == "tflite-fp16 [f32]"
    assert _label(_row("fp16", "f16", 0, target="tflite")) == "tflite-fp16"


# ---------------------------------------------------------------- what a bundle carries
def test_each_board_bundles_what_runs_fast_there():
    from profiles import load_device_profile
    from toolkit.bench.bundle_builder import bundle_labels

    rpi5, rpi4 = load_device_profile("rpi5"), load_device_profile("rpi4")
    assert bundle_labels(rpi5) == ["tflite-fp32", "tflite-fp16", "tflite-int8", "openvino-fp32"]
    assert bundle_labels(rpi4) == ["tflite-fp32", "tflite-int8", "openvino-fp32"]  # no FP16 arithmetic on an A72
    assert bundle_labels(rpi5, ["fp32"]) == ["tflite-fp32", "openvino-fp32"]
    assert bundle_labels(rpi5, None, ["openvino"]) == ["openvino-fp32"]
    assert bundle_labels(rpi5, ["fp16", "int8"], ["tflite"]) == ["tflite-fp16", "tflite-int8"]


@pytest.mark.parametrize("precisions, targets, message", [(["fp16"], None, "no precision fp16"), (None, ["onnxruntime"], "no target")])
def test_a_bundle_of_something_the_board_does_not_get_is_refused(precisions, targets, message):
    from profiles import load_device_profile
    from toolkit.bench.bundle_builder import bundle_labels
    from toolkit.errors import UserError

    with pytest.raises(UserError, match=message):
        bundle_labels(load_device_profile("rpi4"), precisions, targets)


def test_cli_bundle_refuses_an_unknown_target_in_one_line(tmp_path, capsys):
    from toolkit.cli import main

    code = main(["bundle", "--device", "rpi5", "--target", "tensorrt", "--out", str(tmp_path / "b")])
    err = capsys.readouterr().err
    assert code == 2 and "no target tensorrt" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "b").exists()
