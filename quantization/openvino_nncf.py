"""OpenVINO INT8 with NNCF post-training quantization.

Calibrated once on a dynamic-shape model (crops of 512x512 carry over to any resolution), then
reshaped to the artifact's static size. Defaults from measurements on AVX2 without VNNI: the
MIXED preset (symmetric weights, asymmetric activations) and the overflow fix, without which
AVX2 int8 saturates.
"""
from __future__ import annotations

import logging
from pathlib import Path

log = logging.getLogger(__name__)

MODEL_FILE, WEIGHTS_FILE = "model.xml", "model.bin"
REMEDIES = [
    {"preset": "mixed", "overflow_fix": True},
    {"preset": "performance", "overflow_fix": True},
    {"preset": "mixed", "overflow_fix": False},
]


def quantize(body, calibration, size: tuple[int, int], out_dir: Path, preset: str = "mixed", overflow_fix: bool = True) -> list[str]:
    try:
        import nncf
    except ImportError as exc:
        from toolkit.errors import MissingDependencyError

        raise MissingDependencyError("nncf", "x86", "OpenVINO INT8 quantization") from exc
    import openvino as ov
    import torch
    from nncf.quantization.advanced_parameters import AdvancedQuantizationParameters, OverflowFix

    with torch.inference_mode():
        model = ov.convert_model(body, example_input=torch.from_numpy(calibration.inputs[0]), input=[(1, 256, -1, -1)])
    presets = {"mixed": nncf.QuantizationPreset.MIXED, "performance": nncf.QuantizationPreset.PERFORMANCE}
    advanced = AdvancedQuantizationParameters(overflow_fix=OverflowFix.ENABLE if overflow_fix else OverflowFix.DISABLE)
    quantized = nncf.quantize(model, nncf.Dataset(calibration.inputs), preset=presets[preset],
                              subset_size=len(calibration), advanced_parameters=advanced)
    quantized.reshape([1, 256, size[0] // 16, size[1] // 16])
    ov.save_model(quantized, str(out_dir / MODEL_FILE), compress_to_fp16=False)
    return [MODEL_FILE, WEIGHTS_FILE]
