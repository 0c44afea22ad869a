"""TFLite / LiteRT flatbuffers for ARM, converted with litert-torch; run with ai-edge-litert or,
on older Raspberry Pi images, tflite-runtime."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from toolkit.memory import OutputBuffers

MODEL_FILE = "model.tflite"


LAYOUT = "NHWC"


def convert(body, shape: tuple[int, ...], path: Path) -> None:
    """The packed body for NCHW input of `shape` as a TFLite model with NHWC input and output.

    TFLite is channels-last inside; a channels-first model gets a TRANSPOSE at its input and
    output (two full-size copies per inference). Taking and giving NHWC, the packing and UnPack
    in numpy produce and read that order directly, and the graph holds no TRANSPOSE at all."""
    import litert_torch
    import torch

    n, c, h, w = shape
    with torch.inference_mode():
        channels_last = litert_torch.to_channel_last_io(body, args=[0], outputs=[0])
        litert_torch.convert(channels_last, (torch.zeros(n, h, w, c),)).export(str(path))


def build(body, size: tuple[int, int], out_dir: Path) -> list[str]:
    """The FP32 artifact (INT8 is `quantization.quantize`, which converts through this module)."""
    convert(body, (1, 256, size[0] // 16, size[1] // 16), out_dir / MODEL_FILE)
    return [MODEL_FILE]


def interpreter(path: Path, threads: int | None):
    """ai-edge-litert if installed, else tflite-runtime (same Interpreter API)."""
    try:
        from ai_edge_litert.interpreter import Interpreter
    except ImportError:
        from tflite_runtime.interpreter import Interpreter
    return Interpreter(model_path=str(path), num_threads=int(threads) if threads else None)


def xnnpack_applied(interpreter) -> bool:
    """Whether the XNNPACK delegate took over part of the graph (call after allocate_tensors).

    ai-edge-litert and tflite-runtime apply it silently and fall back to their own kernels just as
    silently (unsupported op types, int8 I/O on tflite-runtime 2.14, a CPU they cannot identify): a
    delegated partition shows up as a DELEGATE node in the graph.
    """
    try:
        ops = interpreter._get_ops_details()
    except (AttributeError, ValueError, RuntimeError):
        return False
    return any(op.get("op_name") == "DELEGATE" for op in ops)


class TfliteRunner:
    """Quantises float input and dequantises output when the model has integer I/O; `layout` is the
    model file's (NHWC for this toolkit's exports, NCHW for graph version 2 and older)."""

    def __init__(self, interp, layout: str = LAYOUT):
        self.interp, self.layout = interp, layout
        interp.allocate_tensors()
        self.input = interp.get_input_details()[0]
        self.output = interp.get_output_details()[0]
        self.outputs = OutputBuffers()

    def io_quantization(self) -> dict:
        def describe(detail):
            scale, zero = detail["quantization"]
            return {"dtype": np.dtype(detail["dtype"]).name, "scale": float(scale), "zero_point": int(zero)}

        return {"input": describe(self.input), "output": describe(self.output)}

    def runtime_details(self) -> dict:
        """Which interpreter runs this, and whether XNNPACK took the graph (a DELEGATE op appears)."""
        return {"interpreter": type(self.interp).__module__.split(".")[0], "xnnpack": xnnpack_applied(self.interp)}

    def run(self, packed: np.ndarray) -> np.ndarray:
        from toolkit.camera.bayer import run_in_layout

        return run_in_layout(self.run_native, packed, self.layout)

    def run_native(self, packed: np.ndarray) -> np.ndarray:
        x = packed
        if np.dtype(self.input["dtype"]) != np.float32:
            scale, zero = self.input["quantization"]
            info = np.iinfo(self.input["dtype"])
            x = np.clip(np.rint(packed / scale + zero), info.min, info.max).astype(self.input["dtype"])
        self.interp.set_tensor(self.input["index"], x)
        self.interp.invoke()
        # Read the interpreter's own output buffer (a view, gone before the next invoke) into a
        # reused array: get_tensor's fresh copy costs its page faults on every call.
        out, _ = self.outputs.take(self.output["shape"])
        if np.dtype(self.output["dtype"]) != np.float32:
            scale, zero = self.output["quantization"]
            np.subtract(self.interp.tensor(self.output["index"])(), np.float32(zero), out=out)
            out *= np.float32(scale)
        else:
            np.copyto(out, self.interp.tensor(self.output["index"])())
        return out


def load(artifact_dir: Path, manifest: dict, threads: int | None) -> TfliteRunner:
    layout = manifest.get("input", {}).get("layout", LAYOUT)  # an artifact being exported has no manifest yet
    return TfliteRunner(interpreter(artifact_dir / MODEL_FILE, threads), layout)
