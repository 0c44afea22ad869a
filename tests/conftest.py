"""Shared fixtures: small generated RAW files, official-layout checkpoints."""
from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest

DATA = Path(__file__).parent / "data"
HAS_TORCH = importlib.util.find_spec("torch") is not None
needs_torch = pytest.mark.skipif(not HAS_TORCH, reason="torch is not installed (pip install '.[export]')")


@pytest.fixture(autouse=True)
def _toolkit_logger_restored():
    """`llpack` commands run in-process (`toolkit.cli.main`) set up the toolkit's logger for a terminal
    (own handler, no propagation, -q's level); put it back so later tests' caplog sees its records."""
    import logging

    logger = logging.getLogger("toolkit")
    saved = (list(logger.handlers), logger.level, logger.propagate)
    yield
    logger.handlers[:] = saved[0]
    logger.setLevel(saved[1])
    logger.propagate = saved[2]


def official_layout(variant: str) -> list[tuple[str, tuple[int, ...]]]:
    rows = []
    for line in (DATA / "official_checkpoint_keys.tsv").read_text().splitlines():
        if line.startswith("#"):
            continue
        name, key, shape = line.split("\t")
        if name == variant:
            rows.append((key, tuple(int(s) for s in shape.split("x"))))
    return rows


def random_official_state(variant: str, seed: int = 0) -> dict:
    """Random tensors with the exact keys and shapes of an official checkpoint, scaled sensibly."""
    import torch

    gen = torch.Generator().manual_seed(seed)
    state = {}
    for key, shape in official_layout(variant):
        t = torch.randn(shape, generator=gen)
        if key.endswith("weight_g"):
            t = t.abs() * 0.5 + 0.5
        elif key.endswith(("weight", "weight_v")) and len(shape) > 1:
            fan_in = int(np.prod(shape[1:]))
            t = t * (1.0 / fan_in) ** 0.5
        else:
            t = t * 0.05
        state[key] = t
    if variant == "llpacknet-bmvc2020":
        state["amplifier.conv_post.1.bias"] = torch.tensor([150.0])  # keep the gain positive
    return state


@pytest.fixture
def dark_dng(tmp_path):
    """Factory: write a small synthetic dark DNG with a given pattern and size; returns its path."""
    from toolkit.camera.dng import write_dng
    from toolkit.data.synth import dead_leaves, make_dark_pair

    def make(pattern: str = "RGGB", height: int = 67, width: int = 93, seed: int = 0, black=512):
        rng = np.random.default_rng(seed)
        pair = make_dark_pair(dead_leaves((height + 1, width + 1), rng), 100.0, rng)
        raw = pair.raw[:height, :width]
        path = tmp_path / f"dark_{pattern}_{height}x{width}_{seed}.dng"
        write_dng(path, raw, pattern, black_level=black, white_level=16383)
        return path

    return make


@pytest.fixture(scope="session")
def rpi_bundle(tmp_path_factory):
    """One Raspberry Pi 5 bundle (what its profile lists: TFLite FP32, FP16, INT8 and OpenVINO FP32 at 64x96,
    with the x86 report) for every test that needs one."""
    for module in ("torch", "ai_edge_litert", "litert_torch", "ai_edge_quantizer", "openvino"):
        pytest.importorskip(module)
    from toolkit.bench.bundle_builder import build_bundle

    root = tmp_path_factory.mktemp("bundle")
    return build_bundle("rpi5", root / "bundle-rpi5", None, "64x96", root / "artifacts", show_progress=False)


SMALL_SIZE = (64, 96)
EXPORT_CASES = [("torch", "fp32"), ("openvino", "fp32"), ("openvino", "int8"), ("tflite", "fp32"), ("tflite", "fp16"),
                ("tflite", "int8"), ("onnxruntime", "fp32"), ("onnxruntime", "int8")]
_NEEDS = {"torch": [], "openvino": ["openvino"], "tflite": ["ai_edge_litert|tflite_runtime", "litert_torch"],
          "onnxruntime": ["onnxruntime", "onnx"]}
_REDUCED_NEEDS = {"torch": [], "openvino": ["nncf"], "tflite": ["ai_edge_quantizer"], "onnxruntime": []}  # INT8 (and TFLite FP16)


def missing_for_export(target: str, precision: str) -> str | None:
    """The first module exporting (target, precision) needs that is not installed ("a|b": either will do)."""
    for need in ["torch"] + _NEEDS[target] + (_REDUCED_NEEDS[target] if precision != "fp32" else []):
        if not any(importlib.util.find_spec(m) for m in need.split("|")):
            return need
    return None


@pytest.fixture(scope="session")
def small_artifacts(tmp_path_factory) -> dict:
    """Every available target and precision exported once per test run at 64x96, shared read-only by the
    tests that only read artifacts: {(target, precision): manifest with 'path'}. INT8 builds that miss
    the bar are kept (marked): accuracy is test_export's business."""
    pytest.importorskip("torch")
    from toolkit.deploy.export import export

    root = tmp_path_factory.mktemp("small-artifacts")
    return {(target, precision): export(target, precision, SMALL_SIZE, root / f"{target}-{precision}", allow_degraded=precision != "fp32")
            for target, precision in EXPORT_CASES if missing_for_export(target, precision) is None}


@pytest.fixture(scope="session")
def small_packed_inputs(tmp_path_factory) -> Path:
    """The export's held-out validation inputs at 64x96 (packed, true-ratio gain, white-balanced when
    the default weights' record says they expect it), stacked into one .npy."""
    import json

    from toolkit.deploy.export import validation_inputs
    from toolkit.model.variants import DEFAULT_CHECKPOINT

    record = json.loads(DEFAULT_CHECKPOINT.with_suffix(".json").read_text())
    white_balance = record.get("input", {}).get("white_balance", "none")
    path = tmp_path_factory.mktemp("small-inputs") / "packed.npy"
    np.save(path, np.concatenate([item.packed for item in validation_inputs(SMALL_SIZE, white_balance=white_balance)]))
    return path


@pytest.fixture(scope="session")
def small_tflite_artifacts(small_artifacts) -> dict[str, Path]:
    """{'fp32': folder, 'fp16': folder, 'int8': folder}: the shared TFLite exports at 64x96."""
    if any(("tflite", precision) not in small_artifacts for precision in ("fp32", "fp16", "int8")):
        pytest.skip("needs the TFLite converter and quantizer")
    return {precision: Path(small_artifacts["tflite", precision]["path"]) for precision in ("fp32", "fp16", "int8")}


@pytest.fixture(scope="session", autouse=True)
def _user_cache_in_a_temporary_folder(tmp_path_factory):
    """Compiled-model blobs and resume state go to a folder of this test run, never the user's cache."""
    import os

    saved = os.environ.get("LLPACK_CACHE")
    os.environ["LLPACK_CACHE"] = str(tmp_path_factory.mktemp("llpack-cache"))
    yield
    if saved is None:
        os.environ.pop("LLPACK_CACHE", None)
    else:
        os.environ["LLPACK_CACHE"] = saved
