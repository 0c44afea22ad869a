"""ONNX Runtime static INT8 (QDQ), the peer's own quantizer, for comparison.

The FP32 graph is exported with dynamic height and width so the 512x512 calibration crops fit,
then quantized. `reduce_range` (7-bit weights) is first because AVX2 without VNNI saturates
the u8 x s8 products otherwise.
"""
from __future__ import annotations

import tempfile
from pathlib import Path

MODEL_FILE = "model.onnx"
REMEDIES = [
    {"per_channel": True, "reduce_range": True},
    {"per_channel": False, "reduce_range": True},
    {"per_channel": True, "reduce_range": False},
]


def quantize(body, calibration, size: tuple[int, int], out_dir: Path, per_channel: bool = True, reduce_range: bool = True) -> list[str]:
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static

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
        quantize_static(str(source), str(out_dir / MODEL_FILE), Reader(), quant_format=QuantFormat.QDQ,
                        per_channel=per_channel, reduce_range=reduce_range,
                        activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8)
    return [MODEL_FILE]
