"""Deployment targets, one module per runtime, found by name in one table.

`get_target("openvino")` returns the target's description; its module (`targets/openvino.py`)
is imported only when an artifact is built or run, so nothing here needs torch or a converter.
"""
from __future__ import annotations

from toolkit.errors import UserError, closest_hint

from .base import ChannelsFirstRunner, Runner, Target

TARGETS: dict[str, Target] = {
    t.name: t
    for t in (
        Target("torch", "FP32 PyTorch reference (the full-precision model)", ("fp32",), "torch", "torch", "export", "export"),
        # FP32 IR: on an Arm CPU with FP16 arithmetic (Raspberry Pi 5) OpenVINO runs it in f16 itself.
        Target("openvino", "OpenVINO IR for x86 and Arm CPUs", ("fp32", "int8"), "openvino", "openvino", "openvino", "x86"),
        Target("tflite", "TFLite / LiteRT flatbuffer for ARM (Raspberry Pi)", ("fp32", "fp16", "int8"),
               "ai_edge_litert|tflite_runtime", "ai-edge-litert|tflite-runtime", "runtime", "arm",
               (("litert_torch", "litert-torch"), ("ai_edge_quantizer", "ai-edge-quantizer")), layout="NHWC"),
        Target("onnxruntime", "ONNX model run by ONNX Runtime (the common peer)", ("fp32", "int8"), "onnxruntime", "onnxruntime", "onnx", "onnx",
               (("onnx", "onnx"),)),
    )
}


def get_target(name: str) -> Target:
    if name not in TARGETS:
        raise UserError(f"unknown target '{name}'", closest_hint(name, TARGETS))
    return TARGETS[name]


__all__ = ["TARGETS", "ChannelsFirstRunner", "Runner", "Target", "get_target"]
