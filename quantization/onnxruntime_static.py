"""ONNX Runtime static INT8 (QDQ), the peer's own quantizer, for comparison.

The FP32 graph is exported with dynamic height and width so the 512x512 calibration crops fit,
then quantized. `reduce_range` (7-bit weights) is first because AVX2 without VNNI saturates
the u8 x s8 products otherwise. Where that still misses the stress bar (AVX2 without VNNI: stress mean
39.7 dB on the default weights), u8 weights (`weights="u8"`, U8U8 kernels, which do not saturate) gave
41.0 dB and a 40.5 dB stress mean. `method` is ONNX Runtime's range estimator (MinMax, Percentile,
Entropy); `keep_float` leaves layer groups (`FLOAT_LAYERS`) in float32.
"""
from __future__ import annotations

import re
import tempfile
from pathlib import Path

MODEL_FILE = "model.onnx"
FLOAT_LAYERS = {"fusion_1x1": r"/(before_identity|after_rdb)/Conv$"}
REMEDIES = [
    {"per_channel": True, "reduce_range": True},
    {"per_channel": True, "reduce_range": False, "weights": "u8"},
    {"per_channel": True, "reduce_range": True, "keep_float": ["fusion_1x1"]},
    {"per_channel": True, "reduce_range": True, "keep_float": ["fusion_1x1"], "equalise": True},
    {"per_channel": True, "reduce_range": True, "method": "Percentile", "calibration": "stress"},
    {"per_channel": False, "reduce_range": True},
    {"per_channel": True, "reduce_range": False},
]


def quantize(body, calibration, size: tuple[int, int], out_dir: Path, per_channel: bool = True, reduce_range: bool = True,
             method: str = "MinMax", keep_float: list[str] | None = None, weights: str = "s8") -> list[str]:
    import onnx
    from onnxruntime.quantization import CalibrationDataReader, CalibrationMethod, QuantFormat, QuantType, quantize_static

    class Reader(CalibrationDataReader):
        def __init__(self):
            self.items = iter(calibration.inputs)

        def get_next(self):
            item = next(self.items, None)
            return None if item is None else {"packed": item}

    from targets.onnxruntime import export_onnx

    with tempfile.TemporaryDirectory() as tmp:
        source = Path(tmp) / "fp32.onnx"
        export_onnx(body, calibration.inputs[0].shape, source, dynamic_size=True)
        patterns = [re.compile(FLOAT_LAYERS[group]) for group in keep_float or []]
        excluded = [node.name for node in onnx.load(str(source)).graph.node
                    if node.op_type == "Conv" and any(p.match(node.name) for p in patterns)]
        quantize_static(str(source), str(out_dir / MODEL_FILE), Reader(), quant_format=QuantFormat.QDQ,
                        per_channel=per_channel, reduce_range=reduce_range, calibrate_method=CalibrationMethod[method],
                        activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8 if weights == "s8" else QuantType.QUInt8,
                        nodes_to_exclude=excluded)
    return [MODEL_FILE]
