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


__all__ = ["CalibrationSet", "quantize", "raw_folder_calibration", "remedies", "synthetic_calibration", "with_stress"]
