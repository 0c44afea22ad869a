"""The README's INT8 robustness picture: one stress category's worst image, FP32 beside INT8.

    python benchmarks/int8_stress_example.py ARTIFACT [--category bright_saturated] [--out docs/images/int8-stress.png]

ARTIFACT is an INT8 artifact folder (`llpack export --precision int8 ...`). The script re-runs the
artifact and the FP32 PyTorch model on the stress set at the artifact's size, picks the category's
worst image against FP32, and writes [dark input x gain | FP32 | INT8 | |INT8 - FP32| x 8] side by
side, printing the PSNR it measured (which must match the manifest's figure).
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("artifact", type=Path)
    parser.add_argument("--category", default="bright_saturated")
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "images" / "int8-stress.png")
    args = parser.parse_args()

    import torch

    from targets import get_target
    from toolkit.camera.bayer import features_to_image
    from toolkit.data.metrics import psnr
    from toolkit.deploy.artifact import read_manifest
    from toolkit.deploy.export import stress_inputs
    from toolkit.fileio import write_image
    from toolkit.model.checkpoint import load_model
    from toolkit.model.llpacknet import PackedBody

    manifest = read_manifest(args.artifact)
    size = tuple(manifest["size"])
    model = load_model(None)
    body = PackedBody(model).eval()
    runner = get_target(manifest["target"]).load(args.artifact, manifest)
    rows = []
    for item in stress_inputs(size, model.input_contract["white_balance"]):
        if item.group != args.category:
            continue
        with torch.inference_mode():
            reference = features_to_image(body(torch.from_numpy(item.packed)).numpy()[0], item.placement)
        quantized = features_to_image(runner.run(item.packed)[0], item.placement)
        rows.append((psnr(quantized, reference), item, reference, quantized))
    if not rows:
        raise SystemExit(f"no stress image in category {args.category}")
    score, item, reference, quantized = min(rows, key=lambda row: row[0])
    # The network's input, shown as a demosaiced preview: each 2x2 cell's R, mean G and B, amplified.
    packed = item.packed[0].reshape(4, 8, 8, *item.packed.shape[2:])  # planes, i, j, y, x
    planes = packed.transpose(0, 3, 1, 4, 2).reshape(4, packed.shape[3] * 8, packed.shape[4] * 8)
    preview = np.stack([planes[0], (planes[1] + planes[2]) / 2, planes[3]], axis=-1)
    preview = np.repeat(np.repeat(preview, 2, axis=0), 2, axis=1)
    top, left = item.placement.top, item.placement.left
    preview = np.clip(preview[top : top + reference.shape[0], left : left + reference.shape[1]], 0, 1) ** (1 / 2.2)
    gap = np.ones((reference.shape[0], 8, 3), np.float32)
    difference = np.clip(np.abs(quantized - reference) * 8, 0, 1)
    write_image(args.out, np.concatenate([preview, gap, reference, gap, quantized, gap, difference], axis=1))
    recorded = manifest["validation"]["stress"]["categories"][args.category]["worst_db"]
    print(f"{item.name}: INT8 {score:.2f} dB against FP32 (manifest: {recorded:.2f} dB) -> {args.out}")


if __name__ == "__main__":
    main()
