"""OpenVINO IR for x86 CPUs, converted straight from PyTorch (no ONNX step)."""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from toolkit.memory import OutputBuffers

from .base import ChannelsFirstRunner

MODEL_FILE, WEIGHTS_FILE = "model.xml", "model.bin"
os.environ.setdefault("OPENVINO_TELEMETRY_DISABLE", "1")


def build(body, size: tuple[int, int], out_dir: Path) -> list[str]:
    """The FP32 artifact (INT8 is `quantization.quantize`, which converts through this module)."""
    import openvino as ov
    import torch

    shape = (1, 256, size[0] // 16, size[1] // 16)
    with torch.inference_mode():
        model = ov.convert_model(body, example_input=torch.zeros(shape), input=[shape])
    # Keep FP32 weights: the default FP16 compression costs about 1.7e-3 of accuracy.
    ov.save_model(model, str(out_dir / MODEL_FILE), compress_to_fp16=False)
    return [MODEL_FILE, WEIGHTS_FILE]


class OpenVinoRunner(ChannelsFirstRunner):
    """Zero-copy I/O: the input is read where it lies, and the output is written straight into an
    array handed to the caller (`OutputBuffers`: reused once the caller lets go of it, so neither a
    copy of a 145 MB feature map nor a fresh one's page faults on each call)."""

    def __init__(self, compiled):
        import openvino as ov

        self.ov, self.request = ov, compiled.create_infer_request()
        self.output_shape = tuple(compiled.output(0).shape)
        self.outputs = OutputBuffers(lambda array: ov.Tensor(array, shared_memory=True))
        # Set in place of a shared input after each call, so the request never keeps the caller's
        # input alive; its pages are never written, so it takes no resident memory.
        port = compiled.input(0)
        self._idle_input = ov.Tensor(port.get_element_type(), port.shape) if port.get_partial_shape().is_static else None

    def run(self, packed: np.ndarray) -> np.ndarray:
        out, tensor = self.outputs.take(self.output_shape)
        self.request.set_output_tensor(tensor)
        # The input is set as a tensor sharing its memory (infer(inputs) would keep a reference to
        # it in the request) and swapped out afterwards; share_outputs: no numpy copy of the output
        # made, and thrown away, on the way back.
        self.request.set_input_tensor(self.ov.Tensor(np.ascontiguousarray(packed, np.float32), shared_memory=True))
        try:
            self.request.infer(share_outputs=True)
        finally:
            if self._idle_input is not None:
                self.request.set_input_tensor(self._idle_input)
        return out


def load(artifact_dir: Path, manifest: dict, threads: int | None) -> OpenVinoRunner:
    import openvino as ov

    config = {"PERFORMANCE_HINT": "LATENCY", "INFERENCE_PRECISION_HINT": "f32"}  # no silent bf16
    if threads:
        config["INFERENCE_NUM_THREADS"] = int(threads)
    compiled = ov.Core().compile_model(str(artifact_dir / MODEL_FILE), "CPU", config)
    return OpenVinoRunner(compiled)
