"""ONNX Runtime: the peer a user would otherwise pick, exported with the TorchScript-based exporter."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from toolkit.memory import OutputBuffers

from .base import ChannelsFirstRunner

MODEL_FILE = "model.onnx"
OPSET = 17


def export_onnx(body, shape: tuple[int, ...], path: Path, dynamic_size: bool = False) -> None:
    """The packed body as ONNX (input 'packed', output 'features'); optionally any height/width."""
    import torch

    axes = {"packed": {2: "h", 3: "w"}, "features": {2: "h2", 3: "w2"}} if dynamic_size else None
    with torch.inference_mode():
        torch.onnx.export(body, (torch.zeros(shape),), str(path), input_names=["packed"], output_names=["features"],
                          opset_version=OPSET, dynamo=False, dynamic_axes=axes)


def build(body, size: tuple[int, int], out_dir: Path) -> list[str]:
    """The FP32 artifact (INT8 is `quantization.quantize`, which converts through this module)."""
    export_onnx(body, (1, 256, size[0] // 16, size[1] // 16), out_dir / MODEL_FILE)
    return [MODEL_FILE]


class OnnxRuntimeRunner(ChannelsFirstRunner):
    """Output bound to an array handed to the caller (`OutputBuffers`), not one ONNX Runtime
    allocates afresh on each call."""

    def __init__(self, session):
        self.session = session
        self.input_name = session.get_inputs()[0].name
        self.output_name = session.get_outputs()[0].name
        self.outputs = OutputBuffers()

    def run(self, packed: np.ndarray) -> np.ndarray:
        packed = np.ascontiguousarray(packed, np.float32)
        n, _, h, w = packed.shape
        out, _ = self.outputs.take((n, 192, 2 * h, 2 * w))
        # Bound by address for this call only: bind_cpu_input would keep the input alive afterwards,
        # and a binding per call keeps concurrent calls apart.
        binding = self.session.io_binding()
        binding.bind_input(self.input_name, "cpu", 0, np.float32, packed.shape, packed.ctypes.data)
        binding.bind_output(self.output_name, "cpu", 0, np.float32, out.shape, out.ctypes.data)
        self.session.run_with_iobinding(binding)
        return out


def load(artifact_dir: Path, manifest: dict, threads: int | None) -> OnnxRuntimeRunner:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = int(threads or 0)
    options.enable_cpu_mem_arena = False  # the arena nearly doubles peak memory at full size
    session = ort.InferenceSession(str(artifact_dir / MODEL_FILE), options, providers=["CPUExecutionProvider"])
    return OnnxRuntimeRunner(session)
