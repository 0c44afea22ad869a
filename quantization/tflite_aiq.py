"""TFLite full-integer INT8 with ai-edge-quantizer (`static_wi8_ai8`).

Not the PT2E path in litert-torch: it leaves the growing dense-block concatenation unquantized
and clips older features (21 dB against FP32). ai-edge-quantizer quantizes every op; its default
calibration averages min/max over samples and under-estimates ranges, so each sample is
calibrated alone and the ranges are merged with a true min/max. Calibration runs on a model of
the calibration crops' shape; the result carries over to the artifact's static shape.
"""
from __future__ import annotations

import tempfile
from pathlib import Path

MODEL_FILE = "model.tflite"
REMEDIES = [{"merge": "min_max"}, {"merge": "moving_average"}]


def quantize(body, calibration, size: tuple[int, int], out_dir: Path, merge: str = "min_max") -> list[str]:
    from ai_edge_quantizer import quantizer, recipe
    from ai_edge_quantizer.utils import qsv_utils

    from targets.tflite import LAYOUT, convert, interpreter
    from toolkit.camera.bayer import to_layout

    update = qsv_utils.min_max_update if merge == "min_max" else qsv_utils.moving_average_update
    with tempfile.TemporaryDirectory() as tmp:
        calib_model, float_model = Path(tmp) / "calibration.tflite", Path(tmp) / "float.tflite"
        convert(body, calibration.inputs[0].shape, calib_model)
        convert(body, (1, 256, size[0] // 16, size[1] // 16), float_model)
        signatures = interpreter(calib_model, 1).get_signature_list()
        signature = next(iter(signatures))
        input_name = signatures[signature]["inputs"][0]
        calibrating = quantizer.Quantizer(str(calib_model))
        calibrating.load_quantization_recipe(recipe.static_wi8_ai8())
        ranges: dict = {}
        for sample in calibration.inputs:
            sample = to_layout(sample, LAYOUT)
            for tensor, qsv in calibrating.calibrate({signature: [{input_name: sample}]}).items():
                ranges[tensor] = update(ranges.get(tensor, {}), qsv)
        final = quantizer.Quantizer(str(float_model))
        final.load_quantization_recipe(recipe.static_wi8_ai8())
        final.quantize(ranges).export_model(str(out_dir / MODEL_FILE), overwrite=True)
    return [MODEL_FILE]
