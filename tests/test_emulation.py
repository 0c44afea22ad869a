"""The light device runtime runs as real aarch64 code under qemu user-mode emulation (toolkit.bench.emulation).

A module fixture builds (or reuses from the cache) Debian bookworm's arm64 Python 3.11 and the
aarch64 wheels of each TFLite runtime; every test skips, with the reason, where emulation cannot
run (not x86-64 Linux, no qemu and no apt to install it, no network for the first build). Then,
as a Raspberry Pi 4 (cortex-a72) and Pi 5 (cortex-a76) with ai-edge-litert, and a Pi 4 with
tflite-runtime 2.14: the interpreter is aarch64 and has no torch, the toolkit imports, and TFLite
artifacts exported here give the same answers as here. Sizes are kept small (64x96): emulation
is slow and CI machines have two cores.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import pytest

from targets.tflite import xnnpack_applied
from toolkit.bench.emulation import CPUS, EmulatedCommandFailed, add_emulate_arguments, ensure_arm_environment, render_emulate, run_emulate
from toolkit.errors import UserError

SIZE = (64, 96)
COMBOS = [("cortex-a72", "ai-edge-litert"), ("cortex-a76", "ai-edge-litert"), ("cortex-a72", "tflite-runtime")]
FP32_TOLERANCE = 1e-5
INT8_MAX_STEPS = 8  # tflite-runtime 2.14 runs INT8 without XNNPACK: up to 8 output quantisation steps apart
RUNTIME_MODULE = {"ai-edge-litert": "ai_edge_litert", "tflite-runtime": "tflite_runtime"}

PROBE = """
import importlib.util, json, os, platform, subprocess, sys
import numpy
try:
    import torch
    torch_error = None
except ImportError as exc:
    torch_error = type(exc).__name__
import toolkit, targets
from toolkit.deploy.artifact import read_manifest
from toolkit.bench.machine import describe_machine
worker = subprocess.run(json.loads(os.environ['LLPACK_WORKER_PYTHON']) + ['-c', 'import platform; print(platform.machine())'],
                        capture_output=True, text=True, timeout=120)
print(json.dumps({
    'machine': platform.machine(), 'python': platform.python_version(), 'executable': sys.executable,
    'numpy': numpy.__version__, 'numpy_file': numpy.__file__, 'torch_error': torch_error,
    'toolkit_file': toolkit.__file__, 'read_manifest': read_manifest.__module__,
    'runtimes': sorted(m for m in ('ai_edge_litert', 'tflite_runtime') if importlib.util.find_spec(m)),
    'site_packages_on_path': [p for p in sys.path if 'site-packages' in p or 'dist-packages' in p],
    'worker_machine': worker.stdout.strip(), 'machine_report': describe_machine(),
}))
"""

RUNNER = """
import json, sys
import numpy as np
from toolkit.deploy.enhance import ArtifactBackend

folder, inputs, output = sys.argv[1:4]
backend = ArtifactBackend(folder)
packed = np.load(inputs)
np.save(output, np.stack([backend.run_packed(x[None])[0] for x in packed]))
print(json.dumps({'interpreter_module': type(backend.runner.interp).__module__,
                  'xnnpack': backend.runner.runtime_details()['xnnpack'], 'numpy': np.__version__}))
"""


@pytest.fixture(scope="module")
def arm():
    """arm(runtime) -> the built ArmEnvironment, or a skip saying why emulation cannot run here."""
    built: dict = {}

    def get(runtime: str):
        if runtime not in built:
            try:
                built[runtime] = ensure_arm_environment(runtime)
            except UserError as exc:
                built[runtime] = exc
        if isinstance(built[runtime], UserError):
            pytest.skip(f"aarch64 emulation unavailable: {built[runtime]}")
        return built[runtime]

    return get


def _last_json(stdout: str) -> dict:
    return json.loads(stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("cpu, runtime", COMBOS)
def test_emulated_device_runtime_is_aarch64_without_torch(arm, cpu, runtime, tmp_path):
    env = arm(runtime)
    proc = env.run(cpu, ["-c", PROBE], capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-4000:]
    info = _last_json(proc.stdout)
    assert info["machine"] == "aarch64" and info["python"].startswith("3.11.")
    assert info["executable"] == str(env.python)
    assert info["numpy_file"].startswith(str(env.site)) and info["numpy"] == env.packages["numpy"]
    assert info["numpy"].startswith("1." if runtime == "tflite-runtime" else "2.")
    assert info["torch_error"] in ("ModuleNotFoundError", "ImportError")
    assert info["toolkit_file"].startswith(str(Path(__file__).resolve().parents[1]))
    assert info["read_manifest"] == "toolkit.deploy.artifact"
    assert info["runtimes"] == [RUNTIME_MODULE[runtime]]
    assert info["site_packages_on_path"] == []  # nothing of the host's Python leaks in
    assert info["worker_machine"] == "aarch64"  # LLPACK_WORKER_PYTHON starts workers through qemu too
    report = info["machine_report"]
    assert report["arch"] == "aarch64" and report["emulated"] == f"qemu-aarch64 {cpu}"
    assert report["cpu"] == {"cortex-a72": "Cortex-A72", "cortex-a76": "Cortex-A76"}[cpu]
    assert ("asimddp" in report["flags"]) == (cpu == "cortex-a76")


@pytest.fixture(scope="module")
def artifacts(small_tflite_artifacts) -> dict[str, Path]:
    return small_tflite_artifacts


@pytest.fixture(scope="module")
def x86_outputs(artifacts, small_packed_inputs) -> dict[str, np.ndarray]:
    from toolkit.deploy.enhance import ArtifactBackend

    packed = np.load(small_packed_inputs)
    outputs = {}
    for precision, folder in artifacts.items():
        backend = ArtifactBackend(folder)
        assert xnnpack_applied(backend.runner.interp)
        outputs[precision] = np.stack([backend.run_packed(x[None])[0] for x in packed])
    return outputs


def test_xnnpack_applied_sees_a_graph_without_the_delegate(artifacts):
    from ai_edge_litert.interpreter import Interpreter, OpResolverType

    interp = Interpreter(model_path=str(artifacts["fp32"] / "model.tflite"),
                         experimental_op_resolver_type=OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES)
    interp.allocate_tensors()
    assert not xnnpack_applied(interp)


@pytest.mark.parametrize("precision", ["fp32", "fp16", "int8"])
@pytest.mark.parametrize("cpu, runtime", COMBOS)
def test_artifact_under_emulation_matches_x86(arm, artifacts, small_packed_inputs, x86_outputs, cpu, runtime, precision, tmp_path):
    from toolkit.deploy.artifact import read_manifest

    env = arm(runtime)
    out = tmp_path / "arm_out.npy"
    proc = env.run(cpu, ["-c", RUNNER, str(artifacts[precision]), str(small_packed_inputs), str(out)],
                   capture_output=True, text=True, timeout=600, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-4000:]
    info = _last_json(proc.stdout)
    assert info["interpreter_module"].startswith(RUNTIME_MODULE[runtime] + ".")
    # XNNPACK runs everything but INT8 with int8 I/O on tflite-runtime 2.14, which falls back silently
    # (it may still take an INT8 model's float layers: those do not count).
    assert info["xnnpack"] == (runtime == "ai-edge-litert" or precision != "int8"), info

    ours, reference = np.load(out), x86_outputs[precision]
    assert ours.shape == reference.shape and ours.dtype == reference.dtype == np.float32
    diff = float(np.max(np.abs(ours.astype(np.float64) - reference)))
    if precision == "fp16" and CPUS[cpu].fp16_arithmetic:  # XNNPACK computes in FP16 there; x86 cannot
        psnr = 10 * np.log10(1.0 / np.mean((ours.astype(np.float64) - reference) ** 2))
        print(f"{cpu} {runtime} fp16: FP16 arithmetic, {psnr:.1f} dB against x86 (max abs {diff:.3e})")
        assert diff > FP32_TOLERANCE and psnr >= 40.0
    elif precision in ("fp32", "fp16"):  # FP32 arithmetic on both machines (FP16 weights for fp16)
        print(f"{cpu} {runtime} {precision}: max abs difference to x86 {diff:.3e}")
        assert diff <= FP32_TOLERANCE
    elif runtime == "ai-edge-litert":
        print(f"{cpu} {runtime} int8: {np.mean(ours != reference):.2%} of values differ from x86")
        assert np.array_equal(ours, reference)
    else:
        scale = read_manifest(artifacts[precision])["output"]["quantization"]["scale"]
        print(f"{cpu} {runtime} int8: max abs difference {diff:.3e} = {diff / scale:.2f} output steps")
        assert diff / scale <= INT8_MAX_STEPS + 1e-3


PROBE_FP16 = """
import json
from targets.tflite import fp16_arithmetic
from targets.openvino import inference_precision
import openvino as ov
print(json.dumps({"tflite": fp16_arithmetic(), "openvino": inference_precision(ov.Core())}))
"""


@pytest.mark.parametrize("cpu, runtime", COMBOS + [("cortex-a76", "tflite-runtime")])
def test_fp16_arithmetic_is_found_where_the_cpu_has_it(arm, cpu, runtime, tmp_path):
    """XNNPACK (either runtime) and OpenVINO both compute in FP16 on a Cortex-A76 and in FP32 on an A72."""
    proc = arm(runtime).run(cpu, ["-c", PROBE_FP16], capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    found = _last_json(proc.stdout)
    fp16 = CPUS[cpu].fp16_arithmetic
    assert found == {"tflite": fp16, "openvino": "f16" if fp16 else "f32"}
    assert "MIDR_EL1" not in proc.stderr  # the view gives OpenVINO the board's CPU identification too


def _emulate_args(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="llpack emulate")
    add_emulate_arguments(parser)
    parser.add_argument("-q", "--quiet", action="store_true")  # the main CLI adds its common flags like this
    return parser.parse_args(list(argv))


def test_emulate_arguments_keep_everything_after_the_double_dash():
    args = _emulate_args("--cpu", "cortex-a72", "--", "profile", "runs/bundle", "--json", "-q")
    assert (args.cpu, args.runtime, args.quiet) == ("cortex-a72", "ai-edge-litert", False)
    assert args.args == ["--", "profile", "runs/bundle", "--json", "-q"]
    defaults = _emulate_args("--", "info")
    assert defaults.cpu == "cortex-a76" and set(CPUS) == {"cortex-a72", "cortex-a76"}
    with pytest.raises(UserError, match="no llpack command"):
        run_emulate(_emulate_args("--"))


def test_llpack_emulate_enhances_a_dng_like_x86(arm, artifacts, tmp_path, capfd):
    """`llpack emulate -- enhance` end to end: rawpy reads the DNG on aarch64, the artifact runs, the
    16-bit TIFF matches the one written on x86."""
    import tifffile

    from toolkit.cli import main
    from toolkit.camera.dng import write_dng
    from toolkit.data.synth import sample_scene

    arm("ai-edge-litert")
    pair = sample_scene(7, size=SIZE, ratio=100.0)
    dng = tmp_path / "dark.dng"
    write_dng(dng, pair.raw, "RGGB", pair.sensor.black_level, pair.sensor.white_level)
    x86, emulated = tmp_path / "x86.tif", tmp_path / "arm.tif"
    options = ["--model", str(artifacts["fp32"]), "--ratio", "100", "--bits", "16"]
    assert main(["enhance", str(dng), "-o", str(x86), *options]) == 0

    result = run_emulate(_emulate_args("--cpu", "cortex-a76", "--", "enhance", str(dng), "-o", str(emulated), *options))
    assert result["returncode"] == 0 and result["cpu"] == "cortex-a76" and result["runtime"] == "ai-edge-litert"
    assert "wrote" in capfd.readouterr().out  # the emulated command's own output, streamed
    assert "aarch64" in render_emulate(result)
    a, b = tifffile.imread(x86).astype(np.int32), tifffile.imread(emulated).astype(np.int32)
    assert a.shape == b.shape == (*SIZE, 3) and np.max(np.abs(a - b)) <= 1


def test_llpack_emulate_passes_the_exit_code_on(arm, tmp_path, capfd):
    """A user error inside (exit 2, its one line on stderr) is exit 2 outside."""
    arm("ai-edge-litert")
    missing = tmp_path / "missing.dng"
    with pytest.raises(EmulatedCommandFailed) as failed:
        run_emulate(_emulate_args("--cpu", "cortex-a72", "-q", "--", "enhance", str(missing), "-o", str(tmp_path / "o.png")))
    assert failed.value.exit_code == 2 and failed.value.result["returncode"] == 2
    assert str(missing) in capfd.readouterr().err
