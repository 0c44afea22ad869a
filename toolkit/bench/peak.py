"""The machine's own FP32 convolution peak, per runtime: one large 3x3 convolution, timed in the
same runtime and with the same threads as the models, so each target's GMAC/s can be read as a
fraction of what this CPU does at best with that runtime. Run in a fresh process:
`python -m toolkit.bench.peak RUNTIME [THREADS]` prints JSON.
"""
from __future__ import annotations

import json
import sys
import time

import numpy as np

# 3x3, 128 -> 128 channels on 256x256: 9.66 GMAC, a shape every CPU backend runs at its best.
CHANNELS, SIDE, KERNEL = 128, 256, 3
RUNS = 7
RUNTIMES = ("torch", "openvino", "onnxruntime", "tflite")


def conv_gmac() -> float:
    return CHANNELS * CHANNELS * KERNEL * KERNEL * SIDE * SIDE / 1e9


def _weights() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    x = rng.standard_normal((1, CHANNELS, SIDE, SIDE), dtype=np.float32)
    w = rng.standard_normal((CHANNELS, CHANNELS, KERNEL, KERNEL), dtype=np.float32) * 0.05
    return x, w


def _torch_runner(threads: int | None):
    import torch

    if threads:
        torch.set_num_threads(threads)
    x, w = (torch.from_numpy(a) for a in _weights())

    def run():
        with torch.inference_mode():
            torch.nn.functional.conv2d(x, w, padding=1)
    return run


def _openvino_runner(threads: int | None):
    import openvino as ov
    import openvino.opset13 as ops

    x, w = _weights()
    param = ops.parameter(list(x.shape), np.float32)
    conv = ops.convolution(param, ops.constant(w), [1, 1], [1, 1], [1, 1], [1, 1])
    config = {"PERFORMANCE_HINT": "LATENCY", "INFERENCE_PRECISION_HINT": "f32"}
    if threads:
        config["INFERENCE_NUM_THREADS"] = threads
    request = ov.Core().compile_model(ov.Model([conv], [param]), "CPU", config).create_infer_request()
    # as the OpenVINO runner does: no numpy copy of the input or output (a fresh one would be timed too)
    return lambda: request.infer([x], share_inputs=True, share_outputs=True)


def _onnxruntime_runner(threads: int | None):
    import onnxruntime as ort
    from onnx import TensorProto, helper, numpy_helper

    x, w = _weights()
    graph = helper.make_graph(
        [helper.make_node("Conv", ["x", "w"], ["y"], pads=[1, 1, 1, 1])], "peak",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, list(x.shape))],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, list(x.shape))],
        [numpy_helper.from_array(w, "w")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads or 0
    session = ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
    # as the ONNX Runtime runner does: output bound to an array of its own, not allocated per call
    out = np.empty_like(x)
    binding = session.io_binding()
    binding.bind_input("x", "cpu", 0, np.float32, x.shape, x.ctypes.data)
    binding.bind_output("y", "cpu", 0, np.float32, out.shape, out.ctypes.data)

    def run():
        session.run_with_iobinding(binding)
        return x, out  # bound by address: the arrays must live as long as the binding is used
    return run


def _tflite_runner(threads: int | None):
    """Needs litert-torch to build the one-conv model (x86 hosts); a device measures the others."""
    import tempfile
    from pathlib import Path

    import litert_torch
    import torch

    from targets.tflite import interpreter

    x, w = _weights()
    conv = torch.nn.Conv2d(CHANNELS, CHANNELS, KERNEL, padding=1, bias=False).eval()
    conv.weight.data = torch.from_numpy(w)
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "peak.tflite"
        with torch.inference_mode():
            litert_torch.convert(conv, (torch.from_numpy(x),)).export(str(path))
        interp = interpreter(path, threads)
        interp.allocate_tensors()
    index = interp.get_input_details()[0]["index"]
    data = x if tuple(interp.get_input_details()[0]["shape"]) == x.shape else x.transpose(0, 2, 3, 1).copy()

    def run():
        interp.set_tensor(index, data)
        interp.invoke()
    return run


def peak_runner(runtime: str, threads: int | None = None):
    """A callable that runs the large convolution once in `runtime` (for measurements that
    alternate it with a model, so both see the same machine)."""
    return {"torch": _torch_runner, "openvino": _openvino_runner, "onnxruntime": _onnxruntime_runner,
            "tflite": _tflite_runner}[runtime](threads)


def measure_peak(runtime: str, threads: int | None = None) -> dict:
    """GMAC/s of the large convolution in `runtime`: the best of RUNS after one warm-up."""
    run = peak_runner(runtime, threads)
    run()
    times = []
    for _ in range(RUNS):
        start = time.perf_counter()
        run()
        times.append(time.perf_counter() - start)
    best, median = min(times), float(np.median(times))
    return {"runtime": runtime, "gmac": conv_gmac(), "best_ms": best * 1e3, "median_ms": median * 1e3,
            "peak_gmac_per_s": round(conv_gmac() / best, 2), "median_gmac_per_s": round(conv_gmac() / median, 2),
            "shape": f"3x3 conv {CHANNELS}->{CHANNELS} on {SIDE}x{SIDE}, FP32"}


def main(argv: list[str] | None = None) -> int:
    args = argv if argv is not None else sys.argv[1:]
    threads = int(args[1]) if len(args) > 1 and args[1] not in ("", "0", "None") else None
    print(json.dumps(measure_peak(args[0], threads)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
