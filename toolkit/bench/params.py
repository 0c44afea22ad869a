"""Parameter count read from an artifact's own model file, so a report can prove what was shipped.

The manifest's `model.parameters` is what the toolkit *meant* to export (the whole network,
amplifier included); these functions count the weights and biases the converted graph really
holds. The amplifier is not in any graph (its gain is computed from the manifest's constants),
so every target should give the packed body's count, whatever the precision. Each runtime is
imported only by its own function: this module needs none of them to be imported.
"""
from __future__ import annotations

import math
import os
from pathlib import Path

from toolkit.errors import MissingDependencyError, UserError, closest_hint


def is_data_movement(weights) -> bool:
    """A one-hot transposed convolution (the exported PixelShuffle, `toolkit.model.llpacknet.DepthToSpaceConv`):
    one equal non-zero per input channel. It moves values, it learns nothing: not parameters."""
    import numpy as np

    w = np.asarray(weights)
    nonzero = w[w != 0]
    return w.ndim == 4 and nonzero.size == max(w.shape) and bool(np.all(nonzero == nonzero.flat[0]))


def _torch_parameters(folder: Path) -> int:
    """Elements of the checkpoint's body tensors: the amplifier never reaches an exported graph."""
    try:
        import torch
    except ImportError as exc:
        raise MissingDependencyError("torch", "export", "counting the parameters of a torch artifact") from exc
    blob = torch.load(folder / "model.pt", map_location="cpu", weights_only=True)
    state = blob["model"] if isinstance(blob, dict) and isinstance(blob.get("model"), dict) else blob
    return sum(
        t.numel()
        for key, t in state.items()
        if isinstance(t, torch.Tensor)
        and not key.removeprefix("module.").startswith("amplifier.")
        and not key.endswith(".weight_g")  # weight norm: g * v / |v| folds into one tensor shaped like v
    )


# Ops a weight passes through between its Constant(s) and the convolution (decompression, NNCF, layout).
_OV_WEIGHT_PATH = {"Constant", "Convert", "Subtract", "Multiply", "Divide", "Add", "FakeQuantize", "Reshape",
                   "Transpose", "Squeeze", "Unsqueeze"}
_OV_CONVS = {"Convolution", "GroupConvolution", "ConvolutionBackpropData", "GroupConvolutionBackpropData"}


def _ov_size(node) -> int:
    return math.prod(node.get_output_shape(0))


def _ov_largest_constant(node):
    """The largest Constant upstream of `node` along a pure weight path (INT8 weights: not the scales)."""
    best, stack, seen = None, [node], set()
    while stack:
        current = stack.pop()
        name = current.get_name()  # unique, unlike friendly names
        if name in seen or current.get_type_name() not in _OV_WEIGHT_PATH:
            continue  # a Parameter or activation: not part of a constant weight
        seen.add(name)
        if current.get_type_name() == "Constant":
            if best is None or _ov_size(current) > _ov_size(best):
                best = current
            continue
        stack.extend(current.input_value(i).get_node() for i in range(current.get_input_size()))
    return best


def _openvino_parameters(folder: Path) -> int:
    """Each convolution's weight constant (FP32 or NNCF's int8 + scales) plus constant bias Adds."""
    try:
        import openvino as ov
    except ImportError as exc:
        raise MissingDependencyError("openvino", "openvino", "counting the parameters of an openvino artifact") from exc
    model = ov.Core().read_model(str(folder / "model.xml"))
    counted: dict[str, int] = {}  # constant name -> elements, so a shared constant counts once
    for op in model.get_ordered_ops():
        if op.get_type_name() not in _OV_CONVS:
            continue
        weight = _ov_largest_constant(op.input_value(1).get_node())
        if weight is not None and "Backprop" in op.get_type_name() and is_data_movement(weight.get_data()):
            continue
        if weight is not None:
            counted[weight.get_name()] = _ov_size(weight)
        for target in op.output(0).get_target_inputs():
            add = target.get_node()
            if add.get_type_name() != "Add":
                continue
            other = add.input_value(1 - target.get_index()).get_node()
            while other.get_type_name() == "Convert":  # a bias stored in another precision
                other = other.input_value(0).get_node()
            if other.get_type_name() == "Constant":
                counted[other.get_name()] = _ov_size(other)
    return sum(counted.values())


def _tflite_parameters(folder: Path) -> int:
    """Filter and (non-zero) bias tensors of every convolution / fully connected op."""
    try:
        from ai_edge_litert.interpreter import Interpreter, OpResolverType
    except ImportError:
        try:
            from tflite_runtime.interpreter import Interpreter, OpResolverType
        except ImportError as exc:
            raise MissingDependencyError("ai-edge-litert", "runtime", "counting the parameters of a tflite artifact") from exc
    import numpy as np

    # No default delegate: XNNPACK would take the ops over; we want the file's graph as written.
    # Constant tensors are readable without allocate_tensors(), which would allocate every activation.
    interp = Interpreter(model_path=str(folder / "model.tflite"),
                         experimental_op_resolver_type=OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES)
    shapes = {t["index"]: t["shape"] for t in interp.get_tensor_details()}
    bias_slot = {"CONV_2D": 2, "DEPTHWISE_CONV_2D": 2, "FULLY_CONNECTED": 2, "TRANSPOSE_CONV": 3}
    counted: dict[int, int] = {}  # tensor index -> elements, so a shared tensor counts once
    ops = interp._get_ops_details()
    # FP16 artifacts keep weights in FP16 constants that a DEQUANTIZE op turns into the op's FP32 input.
    stored = {op["outputs"][0]: op["inputs"][0] for op in ops if op["op_name"] == "DEQUANTIZE"}
    for op in ops:
        slot = bias_slot.get(op["op_name"])
        if slot is None:
            continue
        inputs = list(op["inputs"])
        if op["op_name"] == "TRANSPOSE_CONV":
            try:
                if is_data_movement(interp.get_tensor(stored.get(inputs[1], inputs[1]))):
                    continue
            except ValueError:  # not a constant buffer: a learned (or computed) filter, counted below
                pass
        counted[inputs[1]] = int(np.prod(shapes[inputs[1]]))
        bias = inputs[slot] if len(inputs) > slot else -1
        if bias < 0:
            continue
        try:
            zero = not np.any(interp.get_tensor(stored.get(bias, bias)))
        except ValueError:
            # Not a constant buffer (computed at run time), so not a converter-added zero: count it.
            zero = False
        if not zero:  # the converter gives bias-free convs an all-zero bias; the network has none there
            counted[bias] = int(np.prod(shapes[bias]))
    return sum(counted.values())


def _onnx_parameters(folder: Path) -> int:
    """Initializers feeding Conv (weights, biases), through DequantizeLinear to the quantized ones."""
    try:
        import onnx
        from onnx import numpy_helper
    except ImportError as exc:
        raise MissingDependencyError("onnx", "onnx", "counting the parameters of an onnxruntime artifact") from exc
    import numpy as np

    graph = onnx.load(str(folder / "model.onnx")).graph
    sizes = {t.name: int(numpy_helper.to_array(t).size) for t in graph.initializer}
    producers = {out: node for node in graph.node for out in node.output}
    for node in graph.node:  # weights folded into Constant nodes count like initializers
        if node.op_type == "Constant" and node.attribute and node.attribute[0].name == "value":
            sizes[node.output[0]] = int(numpy_helper.to_array(node.attribute[0].t).size)

    def source(name: str) -> str | None:
        """The constant a Conv input comes from: the quantized tensor, not its scale/zero point."""
        while name not in sizes:
            node = producers.get(name)
            if node is None or node.op_type not in ("DequantizeLinear", "QuantizeLinear", "Identity"):
                return None
            name = node.input[0]
        return name

    arrays = {t.name: t for t in graph.initializer}

    def centred(name: str):
        """A ConvTranspose kernel's stored values less their zero point (u8 weights store 0 as 128)."""
        values = numpy_helper.to_array(arrays[source(name)])
        node = producers.get(name)
        if node is not None and node.op_type == "DequantizeLinear" and len(node.input) > 2 and node.input[2] in arrays:
            zero = numpy_helper.to_array(arrays[node.input[2]]).astype(np.int64)
            if zero.ndim == 1:
                axis = next((a.i for a in node.attribute if a.name == "axis"), 1)
                zero = zero.reshape([-1 if i == axis else 1 for i in range(values.ndim)])
            values = values.astype(np.int64) - zero
        return values

    counted = {src for node in graph.node if node.op_type in ("Conv", "ConvTranspose")
               if not (node.op_type == "ConvTranspose" and source(node.input[1]) in arrays
                       and is_data_movement(centred(node.input[1])))
               for name in node.input[1:] if name and (src := source(name)) is not None}
    return sum(sizes[name] for name in counted)


_COUNTERS = {"torch": _torch_parameters, "openvino": _openvino_parameters, "tflite": _tflite_parameters,
             "onnxruntime": _onnx_parameters}


def count_artifact_parameters(folder: str | os.PathLike, manifest: dict) -> int:
    """Weights + biases in the artifact's model file (the packed body: amplifier excluded)."""
    target = manifest["target"]
    if target not in _COUNTERS:
        raise UserError(f"cannot count the parameters of a '{target}' artifact", closest_hint(target, _COUNTERS))
    return _COUNTERS[target](Path(folder))
