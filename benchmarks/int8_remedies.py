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

# Settings tried on the way to each backend's remedies and kept here for the record: they are measured after
# the remedies themselves (`quantization.remedies(target)`, which export tries in order), so both stay comparable.
ALSO_TRIED = {
    "openvino": [
        {"overflow_fix": False, "range": "mean_minmax"},  # NNCF's defaults
        {"overflow_fix": False, "range": "mean_minmax", "calibration": "stress"},
        {"overflow_fix": False, "range": "minmax"},
        {"overflow_fix": False, "range": "minmax", "calibration": "stress"},
        # one more layer group in FP32 beside the first remedy's: which part of the network loses most in 8 bits
        {"overflow_fix": False, "range": "minmax", "keep_float": ["fusion_1x1", "output_conv"], "equalise": True},
        {"overflow_fix": False, "range": "minmax", "keep_float": ["fusion_1x1", "high_res_block"], "equalise": True},
    ],
    "tflite": [
        {"merge": "min_max", "calibration": "stress"},
        {"merge": "moving_average", "calibration": "stress"},
    ],
    "onnxruntime": [],
}


def settings_to_measure(target: str) -> list[tuple[str, dict]]:
    """(label, settings): the export's remedies in the order it tries them, then the other settings tried."""
    from quantization import describe, remedies

    rows = [(f"remedy {n}: {describe(remedy)}", remedy) for n, remedy in enumerate(remedies(target), 1)]
    return rows + [(f"tried: {describe(settings)}", settings) for settings in ALSO_TRIED[target]]


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
    print(f"{'target':<12} {'settings':<78} {'stress mean':>11} {'worst':>7} {'held-out':>9}  gate")
    for target in args.targets.split(","):
        for label, settings in settings_to_measure(target):
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
            print(f"{target:<12} {label:<78} {stress['mean_db']:>11.2f} {stress['worst_db']:>7.2f} {result['psnr_vs_fp32_db']:>9.2f}"
                  f"  {'pass' if row['passes'] else 'fail'}", flush=True)
    if args.json:
        args.json.write_text(json.dumps({"size": list(size), "rows": rows}, indent=1))


if __name__ == "__main__":
    np.seterr(all="ignore")
    main()
