"""What it costs the network not to be told the camera's colour matrix, measured without a network.

    python benchmarks/colour_matrix_cost.py [--json]

The weights are trained on white-balanced input from random mixtures of 7 cameras' colour matrices
and never see the file's matrix, so the best they can learn is one colour map for every camera.
This finds that map (least squares from white-balanced camera RGB to linear sRGB over the training
cameras' renderings of the clean evaluation crops) and scores each camera, the 4 held-out ones
included, rendered through it instead of through its own matrix: PSNR and mean CIEDE2000 of the
finished sRGB against the truth, noise-free and with nothing else wrong. If the loss is small next
to what the network loses elsewhere (its clean-input ceiling, its denoising), the matrix need not be
an input; if it were large, the file's matrix would have to enter the input contract as the white
balance does.
"""
from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def tone(linear: np.ndarray) -> np.ndarray:
    """The synthesiser's rendering (gamma 2.2, then the smoothstep curve): what `unprocess` inverts."""
    x = np.clip(linear, 0.0, 1.0) ** (1 / 2.2)
    return 3 * x**2 - 2 * x**3


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", action="store_true", help="print the table as JSON")
    args = parser.parse_args()

    from toolkit.camera.colour import CAMERA_MATRICES, HELD_OUT_CAMERAS, TRAINING_CAMERAS
    from toolkit.data.dataset import clean_scenes
    from toolkit.data.synth import gamma_expand, inverse_tone, srgb_to_cam
    from toolkit.training.evaluate import ciede2000, psnr

    targets = [scene.pair.target.astype(np.float64) for scene in clean_scenes()]
    linear = [gamma_expand(inverse_tone(t)) for t in targets]
    pixels = np.concatenate([x.reshape(-1, 3) for x in linear])

    def camera_rgb(x: np.ndarray, camera: str) -> np.ndarray:  # white-balanced, clipped as the sensor clips
        return np.clip(x @ srgb_to_cam(CAMERA_MATRICES[camera]).T, 0.0, 1.0)

    sources = np.concatenate([camera_rgb(pixels, c) for c in TRAINING_CAMERAS])
    wanted = np.concatenate([pixels] * len(TRAINING_CAMERAS))
    shared_map = np.linalg.lstsq(sources, wanted, rcond=None)[0]  # cam @ shared_map ~ linear sRGB

    rows = []
    for camera in TRAINING_CAMERAS + HELD_OUT_CAMERAS:
        rendered = [tone(camera_rgb(x, camera) @ shared_map) for x in linear]
        rows.append({"camera": camera, "held_out": camera in HELD_OUT_CAMERAS,
                     "psnr_db": round(float(np.mean([psnr(r, t) for r, t in zip(rendered, targets)])), 2),
                     "ciede2000": round(float(np.mean([ciede2000(r, t) for r, t in zip(rendered, targets)])), 2)})
    if args.json:
        print(json.dumps({"images": len(targets), "shared_map": shared_map.round(4).tolist(), "cameras": rows}, indent=1))
        return
    print(f"one colour map for every camera, on the {len(targets)} clean evaluation crops (noise-free, nothing else wrong):")
    print(f"{'camera':<24} {'':>9} {'PSNR dB':>8} {'CIEDE2000':>10}")
    for row in rows:
        print(f"{row['camera']:<24} {'held out' if row['held_out'] else 'training':>9} {row['psnr_db']:8.2f} {row['ciede2000']:10.2f}")
    sony = rows[0]["psnr_db"]  # the camera of the sid and clean sets
    print(f"squared errors add: a network otherwise exactly at 28 dB on clean input would score "
          f"{10 * math.log10(1 / (10 ** (-sony / 10) + 10 ** (-2.8))):.2f} dB on the clean set's camera ({rows[0]['camera']})")

if __name__ == "__main__":
    main()
