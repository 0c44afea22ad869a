"""INT8 post-training quantization: one entry point, one backend per target, imported lazily.

    from quantization import quantize, synthetic_calibration
    files = quantize(body, synthetic_calibration(), target="openvino", size=(512, 512), out_dir=folder)

Each backend also lists the remedies it can try when the first result misses the accuracy bar
(`REMEDIES`, first = default); a remedy's "calibration": "stress" asks the caller for a calibration
set that covers the stress categories (`with_stress`), "equalise": True rescales channels first
(`equalise.py`, exact in float, for every backend), everything else goes to the backend.
"""
from __future__ import annotations

import importlib
from pathlib import Path

from toolkit.errors import UserError

from .calibration import CalibrationSet, raw_folder_calibration, synthetic_calibration, with_stress

BACKENDS = {"openvino": "quantization.openvino_nncf", "onnxruntime": "quantization.onnxruntime_static",
            "tflite": "quantization.tflite_aiq"}


def backend(target: str):
    if target not in BACKENDS:
        raise UserError(f"INT8 quantization is not available for {target}", f"targets with INT8: {', '.join(BACKENDS)}")
    return importlib.import_module(BACKENDS[target])


def remedies(target: str) -> list[dict]:
    """The settings to try in order; the first is the default."""
    return backend(target).REMEDIES


# Words for the settings a remedy may carry, so that logs and the remedies benchmark name them alike.
_SETTING_WORDS = {
    ("equalise", True): "equalised",
    ("calibration", "stress"): "stress calibration",
    ("range", "minmax"): "true min/max", ("range", "mean_minmax"): "mean of per-sample extremes",
    ("range", "histogram"): "histogram ranges", ("overflow_fix", True): "overflow fix",
    ("merge", "min_max"): "true min/max merge", ("merge", "moving_average"): "moving-average merge",
    ("per_channel", True): "per-channel", ("per_channel", False): "per-tensor",
    ("reduce_range", True): "7-bit weights", ("weights", "u8"): "u8 weights",
    ("method", "Percentile"): "percentile ranges", ("method", "Entropy"): "entropy ranges",
}
_SILENT = {("preset", "mixed"), ("overflow_fix", False), ("reduce_range", False), ("calibration", "base"), ("equalise", False),
           ("weights", "s8"), ("method", "MinMax")}


def describe(remedy: dict | None) -> str:
    """A remedy in words ("equalised + stress calibration + 85th percentile + fusion_1x1 float"), for logs and reports."""
    if not remedy:
        return "defaults"
    words = []
    for key, value in sorted(remedy.items(), key=lambda item: item[0] != "equalise"):  # "equalised" first
        if key == "quantile":
            words.append(f"{value * 100:g}th percentile")  # 90th, 82.5th
        elif key == "keep_float":
            words.extend(f"{group} float" for group in value)
        elif key == "merge" and value == "quantile" or (key, value) in _SILENT:
            continue
        else:
            words.append(_SETTING_WORDS.get((key, value), f"{key} {value}"))
    return " + ".join(words) or "defaults"


def quantize(body, calibration: CalibrationSet, target: str, size: tuple[int, int], out_dir: Path, remedy: dict | None = None,
             white_balance: str = "none") -> list[str]:
    """Quantize the packed body for `target` and write its files into `out_dir`. A remedy that asks
    for stress coverage gets it here unless `calibration` has it already (`white_balance`: the
    weights' input contract, for the stress scenes)."""
    chosen = dict(remedy if remedy is not None else remedies(target)[0])
    if chosen.pop("calibration", "base") == "stress" and "stress_categories" not in calibration.source:
        calibration = with_stress(calibration, white_balance)
    if chosen.pop("equalise", False):  # the same network, rescaled so concatenations share one range
        from toolkit.model.llpacknet import PackedBody

        from .equalise import equalise

        body = PackedBody(equalise(body.model, calibration.inputs)).eval()
    return backend(target).quantize(body, calibration, size, out_dir, **chosen)


__all__ = ["CalibrationSet", "describe", "quantize", "raw_folder_calibration", "remedies", "synthetic_calibration", "with_stress"]
