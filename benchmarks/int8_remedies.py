"""The INT8 remedies table of docs/export.md: every quantization setting tried, scored the way the gate scores it.

    python benchmarks/int8_remedies.py [--size 512x512] [--targets openvino,tflite,onnxruntime] [--checkpoint W] [--only TEXT] [--json out.json]

For each setting the default weights (or `--checkpoint`'s) are quantized through `quantization.quantize` (the export's
own path) and run on the held-out scenes and the stress set next to FP32 PyTorch: stress mean,
worst stress image and held-out mean, in dB against FP32, and whether the export gate passes.
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

SETTINGS = {
    "openvino": [
        ("NNCF defaults (mean of per-sample extremes)", {"overflow_fix": False, "range": "mean_minmax"}),
        ("+ stress calibration", {"overflow_fix": False, "range": "mean_minmax", "calibration": "stress"}),
        ("true min/max", {"overflow_fix": False, "range": "minmax"}),
        ("true min/max + stress calibration", {"overflow_fix": False, "range": "minmax", "calibration": "stress"}),
        ("histogram + stress calibration + fusion 1x1 FP32", {"overflow_fix": False, "range": "histogram", "calibration": "stress",
                                                              "keep_float": ["fusion_1x1"]}),
        ("true min/max + fusion 1x1 FP32", {"overflow_fix": False, "range": "minmax", "keep_float": ["fusion_1x1"]}),
        ("equalised + true min/max + fusion 1x1 FP32", {"overflow_fix": False, "range": "minmax", "keep_float": ["fusion_1x1"],
                                                        "equalise": True}),
    ],
    "tflite": [
        ("true min/max merge", {"merge": "min_max"}),
        ("+ stress calibration", {"merge": "min_max", "calibration": "stress"}),
        ("stress calibration, moving-average merge", {"merge": "moving_average", "calibration": "stress"}),
        ("true min/max + fusion 1x1 float", {"merge": "min_max", "keep_float": ["fusion_1x1"]}),
        ("stress calibration, 90th percentile", {"merge": "quantile", "quantile": 0.9, "calibration": "stress"}),
        ("equalised + stress calibration, 90th pct + fusion 1x1 float", {"merge": "quantile", "quantile": 0.9, "calibration": "stress",
                                                                          "keep_float": ["fusion_1x1"], "equalise": True}),
        ("equalised + stress calibration, 85th pct + fusion 1x1 float", {"merge": "quantile", "quantile": 0.85, "calibration": "stress",
                                                                          "keep_float": ["fusion_1x1"], "equalise": True}),
    ],
    "onnxruntime": [
        ("per-channel, 7-bit weights, MinMax", {"per_channel": True, "reduce_range": True}),
        ("+ fusion 1x1 float", {"per_channel": True, "reduce_range": True, "keep_float": ["fusion_1x1"]}),
        ("+ stress calibration, Percentile", {"per_channel": True, "reduce_range": True, "method": "Percentile", "calibration": "stress"}),
        ("equalised + fusion 1x1 float", {"per_channel": True, "reduce_range": True, "keep_float": ["fusion_1x1"], "equalise": True}),
    ],
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", default="512x512")
    parser.add_argument("--targets", default="openvino,tflite,onnxruntime")
    parser.add_argument("--checkpoint", help="weights to quantize (default: the built-in weights)")
    parser.add_argument("--only", default="", help="run only the settings whose label contains this text")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()

    import torch

    from quantization import quantize, synthetic_calibration
    from targets import get_target
    from toolkit.camera.sizes import parse_size
    from toolkit.deploy.export import meets_bar, stress_inputs, validate, validation_inputs
    from toolkit.model.checkpoint import load_model
    from toolkit.model.llpacknet import PackedBody

    size = parse_size(args.size)
    model = load_model(args.checkpoint)
    body = PackedBody(model).eval()
    white_balance = model.input_contract["white_balance"]
    images = validation_inputs(size, white_balance=white_balance) + stress_inputs(size, white_balance)
    with torch.inference_mode():
        references = [body(torch.from_numpy(item.packed)).numpy() for item in images]
    calibration = synthetic_calibration(white_balance=white_balance)
    rows = []
    print(f"{'target':<12} {'settings':<55} {'stress mean':>11} {'worst':>7} {'held-out':>9}  gate")
    for target in args.targets.split(","):
        for label, settings in SETTINGS[target]:
            if args.only not in label:
                continue
            start = time.perf_counter()
            with tempfile.TemporaryDirectory() as folder:
                quantize(body, calibration, target, size, Path(folder), settings, white_balance)
                result = validate(get_target(target).load(Path(folder), {}), images, references)
            stress = result["stress"]
            row = {"target": target, "label": label, "settings": settings, "stress_mean_db": stress["mean_db"],
                   "stress_worst_db": stress["worst_db"], "worst_image": stress["worst_image"],
                   "held_out_db": result["psnr_vs_fp32_db"], "passes": meets_bar("int8", result),
                   "categories": stress["categories"], "seconds": round(time.perf_counter() - start, 1)}
            rows.append(row)
            print(f"{target:<12} {label:<55} {stress['mean_db']:>11.2f} {stress['worst_db']:>7.2f} {result['psnr_vs_fp32_db']:>9.2f}"
                  f"  {'pass' if row['passes'] else 'fail'}", flush=True)
    if args.json:
        args.json.write_text(json.dumps({"size": list(size), "rows": rows}, indent=1))


if __name__ == "__main__":
    np.seterr(all="ignore")
    main()
