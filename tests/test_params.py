"""Parameter counts read from the artifacts' model files match the PyTorch body, for every target."""
from __future__ import annotations

import importlib.util
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from conftest import EXPORT_CASES, missing_for_export, needs_torch

ROOT = Path(__file__).resolve().parents[1]
BODY_PARAMETERS = 1_169_088  # LLPackNet without its amplifier: what every exported graph holds
CASES = EXPORT_CASES


@pytest.fixture(scope="module")
def artifacts(small_artifacts):
    return small_artifacts


@pytest.fixture(scope="module")
def body_parameters() -> int:
    """The packed body's parameters counted on the PyTorch model itself, amplifier left out."""
    pytest.importorskip("torch")
    from toolkit.model.checkpoint import load_model
    from toolkit.model.llpacknet import PackedBody, count_parameters

    model = load_model(None)
    amplifier = count_parameters(model.amplifier) if model.config.amplifier else 0
    return count_parameters(PackedBody(model)) - amplifier


@needs_torch
@pytest.mark.parametrize(("target", "precision"), CASES, ids=[f"{t}-{p}" for t, p in CASES])
def test_artifact_holds_exactly_the_pytorch_body(artifacts, body_parameters, target, precision):
    missing = missing_for_export(target, precision)
    if missing:
        pytest.skip(f"{missing} is not installed")
    from toolkit.bench.params import count_artifact_parameters

    manifest = artifacts[target, precision]
    folder = Path(manifest["path"])
    count = count_artifact_parameters(folder, manifest)
    assert count == body_parameters == BODY_PARAMETERS
    assert manifest["model"]["parameters"] != count  # the manifest counts the amplifier too: not where it came from
    assert count_artifact_parameters(folder, {"target": target}) == count  # read from the model file alone


def test_importable_without_runtimes_and_names_the_extra(tmp_path):
    script = textwrap.dedent(f"""
        import sys
        for hidden in ("torch", "openvino", "onnx", "onnxruntime", "ai_edge_litert", "tflite_runtime"):
            sys.modules[hidden] = None
        from toolkit.errors import MissingDependencyError
        from toolkit.bench.params import count_artifact_parameters
        for target, extra in (("torch", "export"), ("openvino", "openvino"), ("tflite", "runtime"), ("onnxruntime", "onnx")):
            try:
                count_artifact_parameters({str(tmp_path)!r}, {{"target": target}})
            except MissingDependencyError as exc:
                assert exc.extra == extra and f"llpacknet-edge[{{extra}}]" in str(exc), str(exc)
            else:
                raise AssertionError(target + " did not raise")
    """)
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr


def test_unknown_target_suggests_the_closest(tmp_path):
    from toolkit.errors import UserError
    from toolkit.bench.params import count_artifact_parameters

    with pytest.raises(UserError, match="openvino"):
        count_artifact_parameters(tmp_path, {"target": "openvin"})


def test_the_exported_pixel_shuffle_is_data_movement_not_parameters():
    torch = pytest.importorskip("torch")
    from toolkit.model.llpacknet import DepthToSpaceConv
    from toolkit.bench.params import is_data_movement

    one_hot = DepthToSpaceConv(64).weight.numpy()
    assert is_data_movement(one_hot) and is_data_movement((one_hot * 127).astype("int8"))
    assert is_data_movement(one_hot.transpose(1, 2, 3, 0))  # TFLite's filter layout
    learned = torch.nn.ConvTranspose2d(64, 16, 2, stride=2).weight.detach().numpy()
    assert not is_data_movement(learned)
    x = torch.rand(1, 64, 5, 7)
    assert torch.equal(DepthToSpaceConv(64)(x), torch.nn.functional.pixel_shuffle(x, 2))
