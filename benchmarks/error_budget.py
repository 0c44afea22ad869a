"""Where the 42-image set's PSNR goes: exposure, colour, borders, and what is left.

    python benchmarks/error_budget.py [--checkpoint W] [--ring 32] [--json out.json]

Runs LLPackNet at the true ratio on every held-out image and reports the mean PSNR four ways: as
`llpack evaluate` scores it; after one global gain per image (what a wrong guess of the scene's
brightness costs: the set's synthesis darkens each raw by an unknown factor drawn from N(0.8, 0.1),
which no network can read from a noisy mosaic exactly); after the 3x4 colour fit (colour rendering
too); and separately on the outer `--ring` pixels and on the interior (whether the network's 16x16
cells lose more at the image border, where training crops of 256x256 spend a quarter of their area).
It also prints the exposure-blind oracle: the ground truth re-rendered with the one constant
brightness factor that fits the set best, i.e. a perfect restorer that must guess the brightness.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def exposure_blind_oracle(scenes) -> tuple[float, float]:
    """(mean PSNR, the factor): each ground truth re-rendered with its brightness factor replaced by one
    constant guess, through the set's own tone curve."""
    from toolkit.data.metrics import psnr
    from toolkit.data.synth import gamma_expand, inverse_tone

    def render(linear: np.ndarray) -> np.ndarray:
        x = np.clip(linear, 0, 1) ** (1 / 2.2)
        return 3 * x ** 2 - 2 * x ** 3

    linear = [(gamma_expand(inverse_tone(s.pair.target)), 1.0 / s.pair.unprocess.brightness_gain, s.pair.target) for s in scenes]
    best = (-np.inf, 0.0)
    for guess in np.arange(0.60, 1.0001, 0.01):
        score = float(np.mean([psnr(render(lin * factor / guess), target) for lin, factor, target in linear]))
        best = max(best, (score, round(float(guess), 2)))
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", help="weights to score (default: the built-in weights)")
    parser.add_argument("--ring", type=int, default=32, help="width in pixels of the border ring, default 32")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()

    from toolkit.data.dataset import evaluation_scenes
    from toolkit.data.metrics import psnr
    from toolkit.deploy.enhance import Enhancer
    from toolkit.progress import Progress
    from toolkit.training.evaluate import aligned_psnr, gain_aligned_psnr, least_squares_gain, scene_mosaic

    enhancer = Enhancer(checkpoint=args.checkpoint, ratio=1.0)
    scenes = evaluation_scenes()
    rows = []
    bar = Progress(len(scenes), "images", True)
    for i, scene in enumerate(scenes):
        image = np.clip(enhancer.enhance(scene_mosaic(scene), ratio=scene.ratio).image, 0, 1).astype(np.float64)
        target = scene.pair.target.astype(np.float64)
        inner = np.zeros(target.shape[:2], bool)
        inner[args.ring : -args.ring, args.ring : -args.ring] = True
        gain = least_squares_gain(image, target)
        rows.append({"name": scene.name, "psnr": psnr(image, target), "gain_aligned": gain_aligned_psnr(image, target),
                     "colour_aligned": aligned_psnr(image, target), "gain": gain,
                     "interior": psnr(image[inner], target[inner]), "ring": psnr(image[~inner], target[~inner])})
        bar.update(i + 1)
    oracle, guess = exposure_blind_oracle(scenes)

    def mean(key: str) -> float:
        return round(float(np.mean([r[key] for r in rows])), 2)

    gains = np.array([r["gain"] for r in rows])
    report = {"psnr_db": mean("psnr"), "gain_aligned_db": mean("gain_aligned"), "colour_aligned_db": mean("colour_aligned"),
              "interior_db": mean("interior"), "ring_db": mean("ring"), "ring_px": args.ring,
              "ring_fraction": round(1 - float(inner.mean()), 3),
              "fitted_gain": {"median": round(float(np.median(gains)), 3), "p10": round(float(np.quantile(gains, 0.1)), 3),
                              "p90": round(float(np.quantile(gains, 0.9)), 3)},
              "exposure_blind_oracle_db": round(oracle, 2), "oracle_factor": guess, "images": rows}
    print(f"42 images at the true ratio: PSNR {report['psnr_db']:.2f} dB; after one gain per image {report['gain_aligned_db']:.2f} "
          f"(+{report['gain_aligned_db'] - report['psnr_db']:.2f}); after the 3x4 colour fit {report['colour_aligned_db']:.2f}")
    print(f"the gain that fits each image: median {report['fitted_gain']['median']}, p10-p90 {report['fitted_gain']['p10']}-"
          f"{report['fitted_gain']['p90']}")
    print(f"outer {args.ring}-pixel ring ({report['ring_fraction']:.0%} of the pixels) {report['ring_db']:.2f} dB, "
          f"interior {report['interior_db']:.2f} dB")
    print(f"exposure-blind oracle (ground truth at one guessed brightness, {guess}): {oracle:.2f} dB")
    if args.json:
        from toolkit.fileio import atomic_write_json

        atomic_write_json(args.json, report)


if __name__ == "__main__":
    main()
