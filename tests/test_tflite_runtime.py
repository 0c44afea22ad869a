"""TFLite artifacts load and run on tflite-runtime 2.14 (older Raspberry Pi images), not only ai-edge-litert.

tflite-runtime 2.14.0 needs numpy<2, so it cannot live in the main environment. A module fixture
pip-installs it with numpy 1.x into a cache folder (reused by later runs); each artifact is then
loaded in a separate interpreter that sees only that folder, the standard library and this
repository, through the toolkit's own runtime path (`toolkit.deploy.enhance.ArtifactBackend`), and its
output is compared with the same artifact run here through ai-edge-litert.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path

import numpy as np
import pytest

from conftest import needs_torch

ROOT = Path(__file__).resolve().parents[1]
SIZE = (64, 96)
TFLITE_RUNTIME = "2.14.0"
REQUIREMENTS = [f"tflite-runtime=={TFLITE_RUNTIME}", "numpy<2"]  # the toolkit's import path needs nothing else
CACHE_DIR = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "llpacknet-edge" / "tflite-runtime-2.14"
FP32_TOLERANCE = 1e-5
INT8_MAX_STEPS = 8  # tflite-runtime runs INT8 without XNNPACK: up to 8 output quantisation steps apart

# Runs under `python -I -S -B`: no site-packages, no user site, no PYTHONPATH; only the cache folder,
# the standard library and the repository are importable.
PROBE = """
import sys
sys.path[:0] = [CACHE, ROOT]
sys.modules['ai_edge_litert'] = None
sys.modules['torch'] = None
import numpy, tflite_runtime
assert numpy.__version__.startswith('1.'), numpy.__version__
print(tflite_runtime.__version__)
"""

RUNNER = """
import json, sys
sys.path[:0] = [CACHE, ROOT]
sys.modules['ai_edge_litert'] = None  # must not be reachable anyway: refuse it outright
sys.modules['torch'] = None
import numpy as np
import tflite_runtime
from toolkit.deploy.enhance import ArtifactBackend

backend = ArtifactBackend(FOLDER)
interp = backend.runner.interp
packed = np.load(INPUT)
out = np.stack([backend.run_packed(x[None])[0] for x in packed])
np.save(OUTPUT, out)


def allowed(path):  # the cache folder, this repository's packages, or the standard library
    if path.startswith(CACHE):
        return True
    repo = tuple(ROOT + '/' + package + '/' for package in ('toolkit', 'targets', 'quantization'))
    return path.startswith(repo + (sys.base_prefix,)) and 'site-packages' not in path


foreign = sorted(m for m, mod in list(sys.modules.items())
                 if mod is not None and getattr(mod, '__file__', None) and not allowed(mod.__file__))
print(json.dumps({
    'numpy': np.__version__, 'numpy_file': np.__file__,
    'tflite_runtime': tflite_runtime.__version__, 'tflite_runtime_file': tflite_runtime.__file__,
    'interpreter_module': type(interp).__module__,
    'loaded': sorted(m for m in ('ai_edge_litert', 'torch', 'tflite_runtime') if sys.modules.get(m) is not None),
    'foreign': foreign,
    'site_packages_on_path': [p for p in sys.path if 'site-packages' in p],
}))
"""


def _isolated(script: str, **values: str) -> subprocess.CompletedProcess:
    """Run `script` in a fresh interpreter without site-packages; `values` become its constants."""
    header = "".join(f"{name} = {value!r}\n" for name, value in values.items())
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTHON")}
    env["PYTHONNOUSERSITE"] = "1"
    return subprocess.run([sys.executable, "-I", "-S", "-B", "-c", header + textwrap.dedent(script)],
                          capture_output=True, text=True, env=env, cwd=tempfile.gettempdir(), timeout=300)


def _works(folder: Path) -> bool:
    return folder.is_dir() and _isolated(PROBE, CACHE=str(folder), ROOT=str(ROOT)).returncode == 0


@pytest.fixture(scope="module")
def tflite_runtime_dir() -> Path:
    """tflite-runtime 2.14 + numpy 1.x in the cache folder; installed once, moved into place atomically."""
    if _works(CACHE_DIR):
        return CACHE_DIR
    CACHE_DIR.parent.mkdir(parents=True, exist_ok=True)
    stage = Path(tempfile.mkdtemp(prefix=f".{CACHE_DIR.name}.", suffix=".partial", dir=CACHE_DIR.parent))
    try:
        cmd = [sys.executable, "-m", "pip", "install", "--disable-pip-version-check", "--no-warn-conflicts",
               "--no-input", "--quiet", "--timeout", "30", "--retries", "1", "--only-binary=:all:",
               "--target", str(stage), *REQUIREMENTS]
        try:
            proc = subprocess.run(cmd, capture_output=True, text=True, timeout=480)
        except subprocess.TimeoutExpired:
            pytest.skip(f"pip install {' '.join(REQUIREMENTS)} timed out (no network?)")
        if proc.returncode != 0:
            last = (proc.stderr.strip().splitlines() or ["no output"])[-1]
            pytest.skip(f"could not pip install {' '.join(REQUIREMENTS)} for Python "
                        f"{sys.version_info.major}.{sys.version_info.minor} (no network or no wheel?): {last}")
        if not _works(stage):
            pytest.fail(f"tflite-runtime {TFLITE_RUNTIME} installed into {stage} but does not import with numpy<2")
        if CACHE_DIR.exists():  # a broken cache (or one a concurrent run just finished): replace it
            if _works(CACHE_DIR):
                return CACHE_DIR
            old = CACHE_DIR.with_name(f".{CACHE_DIR.name}.old")
            shutil.rmtree(old, ignore_errors=True)
            os.replace(CACHE_DIR, old)
            shutil.rmtree(old, ignore_errors=True)
        try:
            os.replace(stage, CACHE_DIR)
        except OSError:  # another run put its copy in place first
            if not _works(CACHE_DIR):
                raise
        return CACHE_DIR
    finally:
        shutil.rmtree(stage, ignore_errors=True)


@pytest.fixture(scope="module")
def artifacts(small_tflite_artifacts) -> dict[str, Path]:
    return small_tflite_artifacts


@needs_torch
@pytest.mark.parametrize("precision", ["fp32", "int8"])
def test_artifact_runs_on_tflite_runtime_2_14_like_on_ai_edge_litert(
    tflite_runtime_dir, artifacts, small_packed_inputs, precision, tmp_path
):
    from toolkit.deploy.artifact import read_manifest
    from toolkit.deploy.enhance import ArtifactBackend

    folder = artifacts[precision]
    out = tmp_path / "tflite_runtime_out.npy"
    proc = _isolated(RUNNER, CACHE=str(tflite_runtime_dir), ROOT=str(ROOT), FOLDER=str(folder),
                     INPUT=str(small_packed_inputs), OUTPUT=str(out))
    assert proc.returncode == 0, proc.stderr[-4000:]
    info = json.loads(proc.stdout.strip().splitlines()[-1])
    assert info["tflite_runtime"] == TFLITE_RUNTIME and info["tflite_runtime_file"].startswith(str(tflite_runtime_dir))
    assert info["numpy"].startswith("1.") and info["numpy_file"].startswith(str(tflite_runtime_dir))
    assert info["interpreter_module"].startswith("tflite_runtime.")
    assert info["loaded"] == ["tflite_runtime"] and not info["foreign"] and not info["site_packages_on_path"], info

    packed = np.load(small_packed_inputs)
    backend = ArtifactBackend(folder)  # the main environment: ai-edge-litert
    assert type(backend.runner.interp).__module__.startswith("ai_edge_litert.")
    reference = np.stack([backend.run_packed(x[None])[0] for x in packed])
    theirs = np.load(out)
    assert theirs.shape == reference.shape == (len(packed), 192, SIZE[0] // 8, SIZE[1] // 8)
    assert theirs.dtype == reference.dtype == np.float32
    diff = float(np.max(np.abs(theirs.astype(np.float64) - reference)))
    if precision == "fp32":
        print(f"fp32: max abs difference tflite-runtime vs ai-edge-litert {diff:.3e}")
        assert diff <= FP32_TOLERANCE
    else:
        scale = read_manifest(folder)["output"]["quantization"]["scale"]
        steps = diff / scale
        print(f"int8: max abs difference {diff:.3e} = {steps:.2f} output steps (scale {scale:.3e}); "
              f"{np.mean(theirs != reference):.2%} of values differ")
        assert steps <= INT8_MAX_STEPS + 1e-3
