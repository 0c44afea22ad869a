"""OpenVINO INT8 with NNCF post-training quantization.

Calibrated once on a dynamic-shape model (crops of 512x512 carry over to any resolution), then
reshaped to the artifact's static size. The default, measured on the stress set
(`docs/export.md`): the MIXED preset (symmetric per-channel weights, asymmetric activations),
activation ranges from the true min/max over the calibration set (NNCF's default averages the
per-sample extremes, which clips the rare bright or noisy input), and the two 1x1 fusion
convolutions kept in FP32 (`FLOAT_LAYERS`, under 2 % of the MACs), after channel equalisation
(`equalise.py`: without it the white-balanced default weights missed the bar at 2848x4256 by
0.001 dB). The second remedy also keeps the four convolutions that read the raw input in FP32:
weights whose first remedy misses the bar lose most where the raw input itself is rounded to 8 bits
(about 1.2x the first remedy's time, still about 0.4x FP32's). NNCF's full bias correction
(`bias_correction="full"`) is available but not a remedy: at 512x512 it ran for over 12 minutes
on two cores without finishing. `overflow_fix` halves the
weight range for AVX2 CPUs without VNNI, whose int8 products saturate otherwise.
"""
from __future__ import annotations

import logging
from pathlib import Path

log = logging.getLogger(__name__)

MODEL_FILE, WEIGHTS_FILE = "model.xml", "model.bin"
# Layer groups that mixed precision can keep in FP32, as patterns over OpenVINO node names.
# Shares of the body's MACs: fusion_1x1 under 2 %; input_planes (the four per-plane 3x3 convolutions
# that read the packed raw input, so the raw values are never rounded to 8 bits) 8.4 %; output_conv
# (the last 3x3 convolution) 6.3 %; high_res_block (the dense block after the upsampling) 38.5 %.
FLOAT_LAYERS = {"fusion_1x1": [r".*before_identity/.*", r".*after_rdb/.*"],
                "input_planes": [r".*RDB(r|g1|g2|b)/.*"],
                "output_conv": [r".*final\.2/.*"],
                "high_res_block": [r".*final\.1\..*"]}
REMEDIES = [
    {"preset": "mixed", "overflow_fix": False, "range": "minmax", "keep_float": ["fusion_1x1"], "equalise": True},
    {"preset": "mixed", "overflow_fix": False, "range": "minmax", "keep_float": ["fusion_1x1", "input_planes"], "equalise": True},
    {"preset": "mixed", "overflow_fix": False, "range": "minmax", "keep_float": ["fusion_1x1"]},
    {"preset": "mixed", "overflow_fix": False, "range": "histogram", "keep_float": ["fusion_1x1"], "calibration": "stress"},
    {"preset": "mixed", "overflow_fix": True, "range": "mean_minmax"},
]


def quantize(body, calibration, size: tuple[int, int], out_dir: Path, preset: str = "mixed", overflow_fix: bool = True,
             range: str = "mean_minmax", keep_float: list[str] | None = None, bias_correction: str = "fast") -> list[str]:
    try:
        import nncf
    except ImportError as exc:
        from toolkit.errors import MissingDependencyError

        raise MissingDependencyError("nncf", "x86", "OpenVINO INT8 quantization") from exc
    import openvino as ov
    import torch
    from nncf.quantization.advanced_parameters import AdvancedQuantizationParameters, OverflowFix
    from nncf.quantization.range_estimator import RangeEstimatorParameters, RangeEstimatorParametersSet

    with torch.inference_mode():
        model = ov.convert_model(body, example_input=torch.from_numpy(calibration.inputs[0]), input=[(1, 256, -1, -1)])
    presets = {"mixed": nncf.QuantizationPreset.MIXED, "performance": nncf.QuantizationPreset.PERFORMANCE}
    estimators = {"minmax": RangeEstimatorParametersSet.MINMAX, "histogram": RangeEstimatorParametersSet.HISTOGRAM,
                  "mean_minmax": RangeEstimatorParameters()}  # the last: NNCF's own default
    advanced = AdvancedQuantizationParameters(overflow_fix=OverflowFix.ENABLE if overflow_fix else OverflowFix.DISABLE,
                                              activations_range_estimator_params=estimators[range])
    patterns = [p for group in keep_float or [] for p in FLOAT_LAYERS[group]]
    ignored = nncf.IgnoredScope(patterns=patterns, validate=False) if patterns else None
    quantized = nncf.quantize(model, nncf.Dataset(calibration.inputs), preset=presets[preset], subset_size=len(calibration),
                              fast_bias_correction=bias_correction == "fast", advanced_parameters=advanced, ignored_scope=ignored)
    quantized.reshape([1, 256, size[0] // 16, size[1] // 16])
    ov.save_model(quantized, str(out_dir / MODEL_FILE), compress_to_fp16=False)
    return [MODEL_FILE, WEIGHTS_FILE]
