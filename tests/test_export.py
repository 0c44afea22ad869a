"""Export: artifacts are validated against FP32 PyTorch, self-describing, and run without torch."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from conftest import needs_torch

ROOT = Path(__file__).resolve().parents[1]
SIZE = (64, 96)
TARGETS = ["openvino", "tflite", "onnxruntime"]
RUNTIME_MODULE = {"openvino": "openvino", "tflite": "ai_edge_litert", "onnxruntime": "onnxruntime"}
HIDE_RUNTIME = {"openvino": ["openvino"], "tflite": ["ai_edge_litert", "tflite_runtime"], "onnxruntime": ["onnxruntime"]}
RUNTIME_EXTRA = {"openvino": "openvino", "tflite": "runtime", "onnxruntime": "onnx"}
CONVERTER = {"openvino": "openvino", "tflite": "litert_torch", "onnxruntime": "onnx"}


def _skip_without(target: str) -> None:
    pytest.importorskip(RUNTIME_MODULE[target])
    pytest.importorskip(CONVERTER[target])


@pytest.fixture(scope="module")
def artifacts(tmp_path_factory):
    """Export every available target once for this module."""
    pytest.importorskip("torch")
    from toolkit.deploy.export import export

    root = tmp_path_factory.mktemp("artifacts")
    built = {}
    for target in TARGETS:
        try:
            __import__(RUNTIME_MODULE[target])
            __import__(CONVERTER[target])
        except ImportError:
            continue
        built[target] = export(target, "fp32", SIZE, root / target)
    return built


@needs_torch
@pytest.mark.parametrize("target", TARGETS)
def test_fp32_artifact_matches_pytorch_and_describes_itself(artifacts, target):
    _skip_without(target)
    manifest = artifacts[target]
    folder = Path(manifest["path"])
    saved = json.loads((folder / "manifest.json").read_text())
    for key in ("target", "precision", "size", "model", "input", "output", "files", "validation", "runtime", "versions"):
        assert key in saved, key
    assert saved["target"] == target and saved["precision"] == "fp32" and saved["size"] == list(SIZE)
    h, w = SIZE[0] // 16, SIZE[1] // 16
    if target == "tflite":  # TFLite's own order, no transposes in its graph
        assert saved["input"]["layout"] == saved["output"]["layout"] == "NHWC"
        assert saved["input"]["shape"] == [1, h, w, 256] and saved["output"]["shape"] == [1, 2 * h, 2 * w, 192]
    else:
        assert saved["input"]["layout"] == saved["output"]["layout"] == "NCHW"
        assert saved["input"]["shape"] == [1, 256, h, w] and saved["output"]["shape"] == [1, 192, 2 * h, 2 * w]
    v = saved["validation"]
    assert v["max_abs_error"] < 1e-4 and not v["degraded"] and v["scenes"] >= 2
    assert set(v) >= {"psnr_vs_fp32_db", "max_abs_error", "delta_psnr_vs_gt_db", "degraded"}
    from toolkit.fileio import file_sha256

    assert saved["files"] and all(file_sha256(folder / n) == h for n, h in saved["files"].items())
    assert not list(folder.parent.glob(".*partial"))


@needs_torch
@pytest.mark.parametrize("target", TARGETS)
def test_artifact_runs_without_torch_and_matches_the_reference(artifacts, target, tmp_path, dark_dng):
    _skip_without(target)
    from toolkit.deploy.enhance import Enhancer
    from toolkit.fileio import read_image

    src = dark_dng("BGGR", 61, 90)
    reference = Enhancer(ratio="150").enhance_file(src, tmp_path / "ref.png", bits=16)
    script = textwrap.dedent(f"""
        import sys
        sys.modules['torch'] = None
        from toolkit.cli import main
        code = main(['enhance', {str(src)!r}, '-o', {str(tmp_path / 'art.png')!r}, '--model',
                     {artifacts[target]['path']!r}, '--ratio', '150', '--bits', '16', '-q'])
        assert not [m for m in sys.modules if m.startswith('torch') and sys.modules[m] is not None]
        sys.exit(code)
    """)
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr
    ours = read_image(tmp_path / "art.png").astype(np.float64) / 65535
    ref = read_image(tmp_path / "ref.png").astype(np.float64) / 65535
    assert ours.shape == (61, 90, 3) and np.max(np.abs(ours - ref)) <= 2 / 65535
    assert reference.gain == 150.0


@needs_torch
def test_automatic_gain_from_the_manifest_matches_pytorch(artifacts):
    if not artifacts:
        pytest.skip("no runtime installed")
    import torch

    from toolkit.deploy.artifact import automatic_gain, read_manifest
    from toolkit.model.checkpoint import load_model

    manifest = read_manifest(next(iter(artifacts.values()))["path"])
    model = load_model(None)
    mosaic = (np.random.default_rng(0).random((64, 96)) * 0.01).astype(np.float32)
    with torch.inference_mode():
        expected = float(model.gain(torch.from_numpy(mosaic)[None, None]))  # the torch forward path
    assert automatic_gain(manifest, mosaic) == pytest.approx(expected, rel=1e-5)


@needs_torch
def test_tampered_artifacts_are_refused(artifacts, tmp_path):
    if not artifacts:
        pytest.skip("no runtime installed")
    from toolkit.deploy.artifact import ArtifactError, read_manifest

    source = Path(next(iter(artifacts.values()))["path"])

    def copy(name):
        dest = tmp_path / name
        shutil.copytree(source, dest)
        return dest

    altered = copy("altered")
    model_file = next(n for n in json.loads((altered / "manifest.json").read_text())["files"])
    with open(altered / model_file, "r+b") as fh:
        fh.seek(100)
        fh.write(b"\x00\x01\x02")
    with pytest.raises(ArtifactError, match="checksum"):
        read_manifest(altered)
    missing = copy("missing")
    (missing / model_file).unlink()
    with pytest.raises(ArtifactError, match="is missing"):
        read_manifest(missing)
    future = copy("future")
    data = json.loads((future / "manifest.json").read_text())
    data["schema_version"] = 99
    (future / "manifest.json").write_text(json.dumps(data))
    with pytest.raises(ArtifactError, match="schema version 99"):
        read_manifest(future)
    escape = copy("escape")
    data = json.loads((escape / "manifest.json").read_text())
    data["files"]["../outside.bin"] = "0" * 64
    (escape / "manifest.json").write_text(json.dumps(data))
    with pytest.raises(ArtifactError, match="outside"):
        read_manifest(escape)
    (tmp_path / "empty").mkdir()
    with pytest.raises(ArtifactError, match="no manifest.json"):
        read_manifest(tmp_path / "empty")


@needs_torch
@pytest.mark.parametrize("target", TARGETS)
def test_missing_runtime_names_the_extra(artifacts, target, tmp_path, dark_dng):
    _skip_without(target)
    script = textwrap.dedent(f"""
        import sys
        for hidden in {HIDE_RUNTIME[target]!r}:
            sys.modules[hidden] = None
        from toolkit.cli import main
        sys.exit(main(['enhance', {str(dark_dng())!r}, '-o', {str(tmp_path / 'o.png')!r}, '--model', {artifacts[target]['path']!r}]))
    """)
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=ROOT)
    assert proc.returncode == 2, proc.stderr
    assert f"llpacknet-edge[{RUNTIME_EXTRA[target]}]" in proc.stderr and "Traceback" not in proc.stderr


@needs_torch
def test_accuracy_gate_and_interrupted_export_leave_no_artifact(tmp_path, monkeypatch):
    pytest.importorskip("onnxruntime")
    from targets import onnxruntime as ort_target
    from toolkit.deploy import export as export_module
    from toolkit.errors import UserError

    monkeypatch.setattr(export_module, "FP32_MAX_ABS", -1.0)  # a bar nothing can meet
    with pytest.raises(UserError, match="misses the accuracy bar"):
        export_module.export("onnxruntime", "fp32", SIZE, tmp_path / "gate")
    assert not (tmp_path / "gate").exists() and not list(tmp_path.glob(".*partial"))
    kept = export_module.export("onnxruntime", "fp32", SIZE, tmp_path / "kept", allow_degraded=True)
    assert json.loads((tmp_path / "kept" / "manifest.json").read_text())["validation"]["degraded"] is True

    def crash(*args, **kwargs):
        raise KeyboardInterrupt("interrupted half way")

    monkeypatch.setattr(ort_target, "build", crash)
    with pytest.raises(KeyboardInterrupt):
        export_module.export("onnxruntime", "fp32", SIZE, tmp_path / "crashed")
    assert not (tmp_path / "crashed").exists() and not list(tmp_path.glob(".*partial"))


@needs_torch
def test_torch_reference_artifact(tmp_path):
    from toolkit.deploy.artifact import read_manifest
    from toolkit.deploy.export import export

    manifest = export("torch", "fp32", SIZE, tmp_path / "ref")
    assert manifest["validation"]["max_abs_error"] == 0.0 and manifest["validation"]["psnr_vs_fp32_db"] is None
    assert read_manifest(tmp_path / "ref")["files"].keys() == {"model.pt"}


def test_unknown_target_suggests_the_closest():
    from targets import get_target
    from toolkit.errors import UserError

    with pytest.raises(UserError, match="openvino"):
        get_target("openvin")


def test_every_int8_remedy_has_its_own_description_in_words():
    import quantization

    for target in quantization.BACKENDS:
        described = [quantization.describe(remedy) for remedy in quantization.remedies(target)]
        assert len(set(described)) == len(described), (target, described)
        for remedy, text in zip(quantization.remedies(target), described):
            assert not any(f"{key} {value}" in text for key, value in remedy.items()), text  # every setting has words
    assert quantization.describe({"merge": "quantile", "quantile": 0.85, "equalise": True}) == "equalised + 85th percentile"
    assert quantization.describe({"merge": "quantile", "quantile": 0.825}) == "82.5th percentile"  # not rounded to a neighbour
    assert quantization.describe(None) == "defaults"


@needs_torch
@pytest.mark.parametrize("target", TARGETS)
def test_int8_meets_the_bar_and_is_small(artifacts, tmp_path, target):
    _skip_without(target)
    if target == "openvino":
        pytest.importorskip("nncf")
    if target == "tflite":
        pytest.importorskip("ai_edge_quantizer")
    from toolkit.model.checkpoint import DEFAULT_CHECKPOINT
    from toolkit.deploy.export import export

    if not DEFAULT_CHECKPOINT.exists():
        pytest.skip("INT8 accuracy is only meaningful with the trained default weights")
    # ONNX Runtime's static quantizer misses the bar on the white-balanced default weights at every size
    # measured (39.6 dB at 64x96, 38.4 at 512x512; docs/export.md): kept only when asked, and marked.
    passes = target != "onnxruntime"
    manifest = export(target, "int8", SIZE, tmp_path / "int8", allow_degraded=not passes)
    v = manifest["validation"]
    if passes:
        assert not v["degraded"] and v["psnr_vs_fp32_db"] >= 40 and v["delta_psnr_vs_gt_db"] >= -0.3
    else:
        import quantization

        assert v["degraded"] and len(v["attempts"]) == len(quantization.remedies(target))
        assert max(a["psnr_vs_fp32_db"] for a in v["attempts"]) >= 38.0  # near the bar, not collapsed
    assert manifest["calibration"]["kind"] == "synthetic" and v["attempts"]
    fp32_bytes = sum((Path(artifacts[target]["path"]) / f).stat().st_size for f in artifacts[target]["files"])
    int8_bytes = sum((tmp_path / "int8" / f).stat().st_size for f in manifest["files"])
    # OpenVINO keeps FP32 weights for the layer groups its remedy names: the two 1x1 fusion convolutions
    # (28,672 weights, 0.11 MB) make 0.31x, not 0.3x; the four input-plane convolutions add 0.44 MB (0.36x).
    kept_float = v["attempts"][-1]["settings"].get("keep_float", [])
    bound = 0.3 if target != "openvino" else 0.38 if "input_planes" in kept_float else 0.33
    assert int8_bytes <= bound * fp32_bytes
    if target == "tflite":  # full-integer I/O, described so a C++ caller can (de)quantise
        saved = json.loads((tmp_path / "int8" / "manifest.json").read_text())
        assert saved["input"]["dtype"] == "int8" and saved["input"]["quantization"]["scale"] > 0
        assert saved["output"]["dtype"] == "int8" and "zero_point" in saved["output"]["quantization"]
        assert b"Flex" not in (tmp_path / "int8" / "model.tflite").read_bytes()


@needs_torch
def test_calibration_from_a_raw_folder(tmp_path, dark_dng, caplog):
    import logging

    from quantization import raw_folder_calibration
    from toolkit.errors import UserError

    folder = tmp_path / "raws"
    folder.mkdir()
    for seed in range(3):
        dark_dng("RGGB", 96, 128, seed=seed).rename(folder / f"dark{seed}.dng")
    (folder / "broken.dng").write_bytes(b"II*\x00garbage")
    with caplog.at_level(logging.WARNING):
        calib = raw_folder_calibration(folder, gain=lambda mosaic: 100.0, crop=64)
    assert len(calib) == 3 and calib.inputs[0].shape == (1, 256, 4, 4)
    assert "broken.dng" in caplog.text and calib.source["files"] == ["dark0.dng", "dark1.dng", "dark2.dng"]
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(UserError, match="no usable RAW file"):
        raw_folder_calibration(empty, gain=lambda mosaic: 100.0)


@needs_torch
def test_export_all_reports_a_failing_target_and_finishes_the_rest(tmp_path, capsys):
    """A user error inside an isolated export (here: a calibration folder with nothing usable) is that
    row's one-line reason; the FP32 exports still finish."""
    pytest.importorskip("onnxruntime")
    pytest.importorskip("openvino")
    from toolkit.cli import EXIT_PARTIAL, main

    empty = tmp_path / "no-raws"
    empty.mkdir()
    (empty / "notes.txt").write_text("not a RAW file")
    code = main(["export", "--all", "--size", "64x64", "--out", str(tmp_path / "out"), "--calibration", str(empty), "--json"])
    out = capsys.readouterr()
    assert code == EXIT_PARTIAL and "exports failed" in out.err
    rows = {(r["target"], r["precision"]): r for r in json.loads(out.out)["results"]}
    for target in ("openvino", "onnxruntime"):
        assert rows[(target, "int8")]["status"] == "failed"
        assert "has no usable RAW file" in rows[(target, "int8")]["error"]
        assert rows[(target, "fp32")]["status"] == "ok"
        assert (tmp_path / "out" / f"{target}-fp32-64x64" / "manifest.json").exists()
        assert not (tmp_path / "out" / f"{target}-int8-64x64").exists()


@needs_torch
def test_int8_gate_refuses_a_broken_quantization(tmp_path, monkeypatch):
    """Calibration ranges 1000x too small clip every activation: each remedy fails, nothing is written."""
    _skip_without("onnxruntime")
    import quantization
    from toolkit.deploy import export as export_module
    from toolkit.errors import UserError

    real = quantization.synthetic_calibration

    def shrunken(*args, **kwargs):
        calib = real(count=4, crop=128)
        calib.inputs = [x * 1e-3 for x in calib.inputs]
        return calib

    monkeypatch.setattr(quantization, "synthetic_calibration", shrunken)
    attempts = len(quantization.remedies("onnxruntime"))
    with pytest.raises(UserError, match=rf"misses the accuracy bar .* after {attempts} attempt"):
        export_module.export("onnxruntime", "int8", SIZE, tmp_path / "broken")
    assert not (tmp_path / "broken").exists() and not list(tmp_path.glob(".*partial"))


@needs_torch
def test_export_all_survives_a_crash_a_hang_and_an_exception_and_resumes(tmp_path):
    for module in ("openvino", "litert_torch", "onnx", "onnxruntime", "ai_edge_litert"):
        pytest.importorskip(module)
    from toolkit.deploy.export import export_all

    faults = "export:openvino-fp32=crash,export:tflite-fp32=hang,export:onnxruntime-fp32=raise"
    cmd = [sys.executable, "-m", "toolkit.cli", "export", "--all", "--size", "64x96", "--out", str(tmp_path), "--timeout", "90", "--json"]
    first = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, env={**os.environ, "LLPACK_INJECT_FAULT": faults})
    assert first.returncode == 3, first.stderr
    rows = {f"{r['target']}-{r['precision']}": r for r in json.loads(first.stdout)["results"]}
    assert "SIGSEGV" in rows["openvino-fp32"]["error"]
    assert "timed out after 90 s" in rows["tflite-fp32"]["error"]
    assert "fault injected into export:onnxruntime-fp32" in rows["onnxruntime-fp32"]["error"]
    ok = {k for k, r in rows.items() if r["status"] == "ok"}
    assert {"torch-fp32", "openvino-int8", "tflite-int8"} <= ok
    for failed in ("openvino-fp32", "tflite-fp32", "onnxruntime-fp32"):
        assert not (tmp_path / f"{failed}-64x96").exists()
    assert not list(tmp_path.glob(".*partial"))  # nothing a killed export left looks like an artifact
    # The re-run keeps the finished, verified artifacts and rebuilds only what failed.
    again = export_all((64, 96), tmp_path, allow_degraded=True, timeout=600)
    rows = {f"{r['target']}-{r['precision']}": r for r in again["results"]}
    assert again["failed"] == 0
    assert {k for k, r in rows.items() if r["reused"]} >= ok - {"onnxruntime-int8"}
    assert not any(rows[k]["reused"] for k in ("openvino-fp32", "tflite-fp32", "onnxruntime-fp32"))


@needs_torch
def test_exported_graphs_have_no_high_rank_transposes(artifacts):
    """The inner PixelShuffle is exported as a transposed convolution: no 5-D/6-D transposes anywhere;
    TFLite takes and gives NHWC, its own order, so its graph has no TRANSPOSE at all."""
    if "tflite" in artifacts:
        from ai_edge_litert.interpreter import Interpreter, OpResolverType

        interp = Interpreter(model_path=str(Path(artifacts["tflite"]["path"]) / "model.tflite"),
                             experimental_op_resolver_type=OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES)
        ops = [op["op_name"] for op in interp._get_ops_details()]
        assert "TRANSPOSE" not in ops and "RESHAPE" not in ops and "TRANSPOSE_CONV" in ops
        manifest = artifacts["tflite"]
        assert manifest["input"]["layout"] == manifest["output"]["layout"] == "NHWC"
        assert list(interp.get_input_details()[0]["shape"]) == manifest["input"]["shape"] == [1, SIZE[0] // 16, SIZE[1] // 16, 256]
        assert list(interp.get_output_details()[0]["shape"]) == manifest["output"]["shape"] == [1, SIZE[0] // 8, SIZE[1] // 8, 192]
        shapes = {t["index"]: len(t["shape"]) for t in interp.get_tensor_details()}
        assert all(shapes[i] <= 4 for op in interp._get_ops_details() for i in op["inputs"] if i >= 0)
    if "openvino" in artifacts:
        import openvino as ov

        model = ov.Core().read_model(str(Path(artifacts["openvino"]["path"]) / "model.xml"))
        kinds = [op.get_type_name() for op in model.get_ops()]
        assert "Transpose" not in kinds and "ConvolutionBackpropData" in kinds
        assert all(len(op.get_output_partial_shape(0)) <= 4 for op in model.get_ops() if op.get_output_size())


def test_channel_equalisation_keeps_the_float_output_and_puts_each_concatenation_on_one_range():
    import torch

    from quantization.equalise import equalise
    from toolkit.model.llpacknet import create_model

    torch.manual_seed(0)
    model = create_model("llpacknet-bmvc2020").eval()
    with torch.no_grad():  # one layer's channels 40x wider than the rest, as in the white-balanced weights
        model.RDB2.dense_layers[3].conv.weight.mul_(40.0)
        model.RDBg1.weight[:5].mul_(30.0)
    inputs = [np.random.default_rng(k).random((1, 256, 6, 6), dtype=np.float32) for k in range(3)]
    equalised = equalise(model, inputs)
    x = torch.from_numpy(np.random.default_rng(9).random((1, 256, 6, 6), dtype=np.float32))
    with torch.no_grad():
        before, after = model.packed_body(x), equalised.packed_body(x)
    assert torch.allclose(before, after, rtol=1e-4, atol=1e-5)  # exact up to float rounding
    assert not torch.equal(model.RDB2.dense_layers[3].conv.weight, equalised.RDB2.dense_layers[3].conv.weight)
    reach: dict[str, torch.Tensor] = {}
    block_input: dict[str, float] = {}
    block = equalised.RDB2
    block.register_forward_pre_hook(lambda m, a: block_input.__setitem__("x", max(block_input.get("x", 0.0), float(a[0].abs().max()))))
    for k, layer in enumerate(block.dense_layers):
        layer.register_forward_hook(lambda m, a, out, k=k: reach.__setitem__(
            k, torch.maximum(reach.get(k, torch.zeros(out.shape[1])), out.abs().amax(dim=(0, 2, 3)))))
    with torch.no_grad():
        for item in inputs:
            equalised.packed_body(torch.from_numpy(item))
    firing = torch.cat([reach[k][reach[k] > 0] for k in reach])
    assert len(firing) > 100  # no channel peaks, over the calibration set, beyond the block's input
    assert float(firing.max()) <= block_input["x"] * 1.0001
    at_the_top = (reach[3] - block_input["x"]).abs() <= 1e-4 * block_input["x"]
    assert int(at_the_top.sum()) > len(reach[3]) // 2  # the wide layer's channels, narrowed to it
    assert equalised is not model and model.RDB2.dense_layers[3].conv.weight.abs().max() > 1.0  # the original is untouched
