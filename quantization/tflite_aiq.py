"""TFLite full-integer INT8 with ai-edge-quantizer (`static_wi8_ai8`).

Not the PT2E path in litert-torch: it leaves the growing dense-block concatenation unquantized
and clips older features (21 dB against FP32). ai-edge-quantizer quantizes every op; its default
calibration averages min/max over samples and under-estimates ranges, so each sample is
calibrated alone and the ranges are merged here: by default the 90th percentile of the
per-sample extremes over a calibration set that covers the stress categories (wide enough for
bright, clipped and very noisy inputs without letting the rarest one set the step for all;
measured in `docs/export.md`), then the 82.5th and 85th (a finer step for the held-out scenes, at
some cost on the rarest stress image), or the true min/max. The default also equalises channels first
(`equalise.py`) and keeps the two 1x1 fusions in float: the white-balanced default weights pass
the bar only so (40.5 dB against FP32 at 512x512, 39.9 without). Calibration runs on a model of
the calibration crops' shape; the result carries over to the artifact's static shape.

`keep_float` names layers (`FLOAT_LAYERS`) left in float32: the mixed-precision remedy. The two
1x1 fusion convolutions are the cheapest to keep (under 2 % of the MACs) and the ones whose
ranges stray most on bright or saturated inputs.
"""
from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np

MODEL_FILE = "model.tflite"
# Layer groups that mixed precision can keep in float32, as regular expressions over TFLite tensor names.
FLOAT_LAYERS = {"fusion_1x1": r".*Conv2d_(before_identity|after_rdb).*"}
REMEDIES = [
    {"merge": "quantile", "quantile": 0.9, "calibration": "stress", "keep_float": ["fusion_1x1"], "equalise": True},
    {"merge": "quantile", "quantile": 0.825, "calibration": "stress", "keep_float": ["fusion_1x1"], "equalise": True},
    {"merge": "quantile", "quantile": 0.85, "calibration": "stress", "keep_float": ["fusion_1x1"], "equalise": True},
    {"merge": "quantile", "quantile": 0.9, "calibration": "stress"},
    {"merge": "quantile", "quantile": 0.9, "calibration": "stress", "keep_float": ["fusion_1x1"]},
    {"merge": "min_max"},
    {"merge": "min_max", "keep_float": ["fusion_1x1"]},
]


def _merge(per_sample: list[dict], merge: str, quantile: float) -> dict:
    """One tensor's range from its per-sample ranges: the true min/max, a moving average, or the
    `quantile` of the per-sample maxima (and 1 - `quantile` of the minima): wide enough for most
    inputs without letting the rarest one set the step for all."""
    from ai_edge_quantizer.utils import qsv_utils

    if merge == "quantile":
        return {"min": np.quantile(np.stack([q["min"] for q in per_sample]), 1 - quantile, axis=0),
                "max": np.quantile(np.stack([q["max"] for q in per_sample]), quantile, axis=0)}
    update = qsv_utils.min_max_update if merge == "min_max" else qsv_utils.moving_average_update
    merged: dict = {}
    for qsv in per_sample:
        merged = update(merged, qsv)
    return merged


def quantize(body, calibration, size: tuple[int, int], out_dir: Path, merge: str = "min_max",
             keep_float: list[str] | None = None, quantile: float = 0.9) -> list[str]:
    from ai_edge_quantizer import algorithm_manager, qtyping, quantizer, recipe_manager
    from targets.tflite import LAYOUT, convert, interpreter
    from toolkit.camera.bayer import to_layout

    def recipe():
        manager = recipe_manager.RecipeManager()
        manager.add_static_config(regex=".*", operation_name=qtyping.TFLOperationName.ALL_SUPPORTED, activation_num_bits=8,
                                  weight_num_bits=8, algorithm_key=algorithm_manager.AlgorithmName.MIN_MAX_UNIFORM_QUANT)
        for group in keep_float or []:
            manager.add_quantization_config(regex=FLOAT_LAYERS[group], operation_name=qtyping.TFLOperationName.CONV_2D,
                                            algorithm_key=algorithm_manager.AlgorithmName.NO_QUANTIZE)
        return manager.get_quantization_recipe()

    with tempfile.TemporaryDirectory() as tmp:
        calib_model, float_model = Path(tmp) / "calibration.tflite", Path(tmp) / "float.tflite"
        convert(body, calibration.inputs[0].shape, calib_model)
        convert(body, (1, 256, size[0] // 16, size[1] // 16), float_model)
        signatures = interpreter(calib_model, 1).get_signature_list()
        signature = next(iter(signatures))
        input_name = signatures[signature]["inputs"][0]
        calibrating = quantizer.Quantizer(str(calib_model))
        calibrating.load_quantization_recipe(recipe())
        per_tensor: dict[str, list] = {}
        for sample in calibration.inputs:
            sample = to_layout(sample, LAYOUT)
            for tensor, qsv in calibrating.calibrate({signature: [{input_name: sample}]}).items():
                per_tensor.setdefault(tensor, []).append(qsv)
        ranges = {tensor: _merge(qsvs, merge, quantile) for tensor, qsvs in per_tensor.items()}
        final = quantizer.Quantizer(str(float_model))
        final.load_quantization_recipe(recipe())
        final.quantize(ranges).export_model(str(out_dir / MODEL_FILE), overwrite=True)
    return [MODEL_FILE]
