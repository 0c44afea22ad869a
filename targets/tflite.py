"""TFLite / LiteRT flatbuffers for ARM, converted with litert-torch; run with ai-edge-litert or,
on older Raspberry Pi images, tflite-runtime.

FP16 artifacts hold FP16 weights and the `reduced_precision_support` metadata ("fp16accfp16")
that makes XNNPACK run FP16 arithmetic where the CPU has it (Armv8.2 FP16: the Raspberry Pi 5's
Cortex-A76) and FP32 elsewhere. Whether it did cannot be read from the interpreter, so
`fp16_arithmetic()` asks a one-operation probe model shipped beside this module.
"""
from __future__ import annotations

import functools
from pathlib import Path

import numpy as np

from toolkit.memory import OutputBuffers

MODEL_FILE = "model.tflite"
REDUCED_PRECISION_KEY = "reduced_precision_support"  # TFLite's model metadata name, read by XNNPACK
FP16_REQUEST = b"fp16accfp16"  # FP16 inference and accumulation: XNNPACK's condition for its FP16 hint
PROBE_FILE = Path(__file__).with_name("tflite_fp16_probe.tflite")
PROBE_INPUT = (2048.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0)  # summed exactly in FP32 (2055), not in FP16


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


def reduce_precision(out_dir: Path, precision: str) -> None:
    """The FP32 artifact in `out_dir` made FP16: every convolution's weights cast to FP16 (with
    ai-edge-quantizer's float casting, which adds the DEQUANTIZE ops XNNPACK folds away), then the
    metadata that lets XNNPACK compute in FP16."""
    import tempfile

    from ai_edge_quantizer import algorithm_manager, qtyping, quantizer, recipe_manager

    if precision != "fp16":
        raise ValueError(f"TFLite has no {precision} float build")
    recipe = recipe_manager.RecipeManager()
    recipe.add_weight_only_config(regex=".*", operation_name=qtyping.TFLOperationName.ALL_SUPPORTED, num_bits=16,
                                  algorithm_key=algorithm_manager.AlgorithmName.FLOAT_CASTING)
    path = out_dir / MODEL_FILE
    with tempfile.TemporaryDirectory() as tmp:
        cast = Path(tmp) / MODEL_FILE
        casting = quantizer.Quantizer(str(path))
        casting.load_quantization_recipe(recipe.get_quantization_recipe())
        casting.quantize().export_model(str(cast), overwrite=True)
        path.write_bytes(with_metadata(cast.read_bytes(), REDUCED_PRECISION_KEY, FP16_REQUEST))


def _schema():
    from ai_edge_litert import schema_py_generated

    return schema_py_generated


def _pack(model) -> bytes:
    import flatbuffers

    builder = flatbuffers.Builder(1024)
    builder.Finish(model.Pack(builder), file_identifier=b"TFL3")
    return bytes(builder.Output())


def with_metadata(data: bytes, name: str, value: bytes) -> bytes:
    """A .tflite file's bytes with one metadata entry set (replaced if present). Buffers kept after
    the flatbuffer (offset/size, as ai-edge-quantizer writes them) are moved inside it first."""
    s = _schema()
    model = s.ModelT.InitFromObj(s.Model.GetRootAsModel(data, 0))
    for buffer in model.buffers:
        if buffer.data is None and buffer.size:
            buffer.data = np.frombuffer(data, np.uint8, buffer.size, buffer.offset)
            buffer.offset = buffer.size = 0
    entry = s.BufferT()
    entry.data = np.frombuffer(value, np.uint8)
    model.buffers.append(entry)
    metadata = s.MetadataT()
    metadata.name, metadata.buffer = name.encode(), len(model.buffers) - 1
    model.metadata = [m for m in (model.metadata or []) if m.name not in (name, name.encode())] + [metadata]
    return _pack(model)


def fp16_probe_bytes() -> bytes:
    """The probe model (`PROBE_FILE`): one 1x1 convolution summing 8 channels with weights of one,
    asking for FP16 inference. Fed `PROBE_INPUT` it gives 2055 in FP32 arithmetic and something
    else in FP16 (2048 + 1 rounds back to 2048 there)."""
    s = _schema()
    channels = len(PROBE_INPUT)

    def buffer(array=None):
        b = s.BufferT()
        if array is not None:
            b.data = np.frombuffer(np.ascontiguousarray(array).tobytes(), np.uint8)
        return b

    def tensor(name: str, shape: tuple, index: int):
        t = s.TensorT()
        t.name, t.shape, t.type, t.buffer = name.encode(), list(shape), s.TensorType.FLOAT32, index
        return t

    code = s.OperatorCodeT()
    code.builtinCode = code.deprecatedBuiltinCode = s.BuiltinOperator.CONV_2D
    code.version = 1
    options = s.Conv2DOptionsT()
    options.padding, options.strideH, options.strideW = s.Padding.VALID, 1, 1
    options.dilationHFactor = options.dilationWFactor = 1
    op = s.OperatorT()
    op.opcodeIndex, op.inputs, op.outputs = 0, [0, 1, 2], [3]
    op.builtinOptionsType, op.builtinOptions = s.BuiltinOptions.Conv2DOptions, options
    graph = s.SubGraphT()
    graph.name = b"main"
    graph.tensors = [tensor("input", (1, 1, 1, channels), 1), tensor("weights", (1, 1, 1, channels), 2),
                     tensor("bias", (1,), 3), tensor("output", (1, 1, 1, 1), 4)]
    graph.inputs, graph.outputs, graph.operators = [0], [3], [op]
    model = s.ModelT()
    model.version, model.description = 3, b"llpacknet-edge: does XNNPACK run FP16 arithmetic here?"
    model.operatorCodes, model.subgraphs = [code], [graph]
    model.buffers = [buffer(), buffer(), buffer(np.ones((1, 1, 1, channels), np.float32)), buffer(np.zeros(1, np.float32)),
                     buffer()]
    return with_metadata(_pack(model), REDUCED_PRECISION_KEY, FP16_REQUEST)


@functools.cache
def fp16_arithmetic() -> bool | None:
    """Whether XNNPACK, in the installed interpreter on this CPU, computes in FP16 when a model asks
    (None: the probe could not run, e.g. no XNNPACK). Asked once per process, in a few milliseconds."""
    try:
        probe = interpreter(PROBE_FILE, 1)
        probe.allocate_tensors()
        if not xnnpack_applied(probe):
            return None
        probe.set_tensor(probe.get_input_details()[0]["index"], np.array(PROBE_INPUT, np.float32).reshape(1, 1, 1, -1))
        probe.invoke()
        return bool(probe.get_tensor(probe.get_output_details()[0]["index"]).item() != sum(PROBE_INPUT))
    except (OSError, ValueError, RuntimeError):
        return None


def interpreter(path: Path, threads: int | None):
    """ai-edge-litert if installed, else tflite-runtime (same Interpreter API)."""
    try:
        from ai_edge_litert.interpreter import Interpreter
    except ImportError:
        from tflite_runtime.interpreter import Interpreter
    return Interpreter(model_path=str(path), num_threads=int(threads) if threads else None)


def xnnpack_applied(interpreter, dtype=None) -> bool:
    """Whether the XNNPACK delegate took over part of the graph (call after allocate_tensors); with
    `dtype`, a part that computes in that type (an INT8 model whose float layers alone went to
    XNNPACK, as on tflite-runtime 2.14, has its integer layers on other kernels).

    ai-edge-litert and tflite-runtime apply it silently and fall back to their own kernels just as
    silently (unsupported op types, int8 I/O on tflite-runtime 2.14, a CPU they cannot identify): a
    delegated partition shows up as a DELEGATE node in the graph, reading and writing its tensors.
    """
    try:
        delegated = [op for op in interpreter._get_ops_details() if op.get("op_name") == "DELEGATE"]
        if dtype is None or not delegated:
            return bool(delegated)
        types = {t["index"]: np.dtype(t["dtype"]) for t in interpreter.get_tensor_details()}
    except (AttributeError, ValueError, RuntimeError, KeyError, TypeError):
        return False
    return any(types.get(int(i)) == np.dtype(dtype) for op in delegated for i in (*op["inputs"], *op["outputs"]))


class TfliteRunner:
    """Quantises float input and dequantises output when the model has integer I/O; `layout` is the
    model file's (NHWC for this toolkit's exports, NCHW for graph version 2 and older)."""

    def __init__(self, interp, layout: str = LAYOUT, precision: str = "fp32"):
        self.interp, self.layout, self.precision = interp, layout, precision
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
        """Which interpreter runs this, whether XNNPACK took the graph (for INT8, its integer layers) and, for
        an FP16 artifact, whether its arithmetic ran in FP16 (`arithmetic`: f16, f32 or unknown)."""
        xnnpack = xnnpack_applied(self.interp, np.int8 if self.precision == "int8" else None)
        details = {"interpreter": type(self.interp).__module__.split(".")[0], "xnnpack": xnnpack}
        if self.precision == "fp16":
            fp16 = fp16_arithmetic() if xnnpack else False
            details["arithmetic"] = {True: "f16", False: "f32", None: "unknown"}[fp16]
        elif self.precision == "fp32":
            details["arithmetic"] = "f32"
        return details

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
    return TfliteRunner(interpreter(artifact_dir / MODEL_FILE, threads), layout, manifest.get("precision", "fp32"))
