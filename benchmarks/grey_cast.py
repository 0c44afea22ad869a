"""Cast or noise? The neutral set's greys over several noise draws.

    python benchmarks/grey_cast.py [--checkpoint W] [--draws 8] [--size 288x384] [--json out.json]

`llpack evaluate --sets neutral` scores one noise draw per chart: its figure, the worst |a*| or |b*|
of any grey, mixes a cast (a colour every draw shares: what a wrong white balance gives) with noise
(each draw's own error, of random sign). This renders the neutral set's charts `--draws` times with
other noise (draw 0 is the evaluation set itself), and reports per condition, for LLPackNet and for
LibRaw + NLM: the worst single grey of any draw, the cast (the largest |a*| or |b*| of a grey's mean
over the draws) and the noise (the standard deviation of a grey's a* and b* across draws). `--size`
renders larger charts, whose patches average more pixels.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def summarise(labs: np.ndarray) -> dict:
    """labs [draws, 6 greys, 3]: worst single grey, cast (worst |mean over draws|), noise (rms std)."""
    ab = labs[..., 1:]
    return {"worst_single": round(float(np.abs(ab).max()), 2), "cast": round(float(np.abs(ab.mean(axis=0)).max()), 2),
            "noise_std": round(float(np.sqrt((ab.std(axis=0) ** 2).mean())), 2)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", help="weights (default: the built-in ones)")
    parser.add_argument("--draws", type=int, default=8)
    parser.add_argument("--size", default="288x384", help="chart size HxW (the neutral set's is 288x384)")
    parser.add_argument("--json", type=Path, help="also write the table here")
    args = parser.parse_args()

    from toolkit.data.dataset import NEUTRAL_SEED, neutral_scenes
    from toolkit.deploy.enhance import Enhancer
    from toolkit.fileio import atomic_write_json
    from toolkit.training.evaluate import denoised_baseline, grey_lab, libraw_baseline, scene_mosaic

    size = tuple(int(v) for v in args.size.lower().split("x"))
    enhancer = Enhancer(checkpoint=args.checkpoint)
    labs: dict[str, dict[str, list]] = {}
    for draw in range(args.draws):
        for scene in neutral_scenes(NEUTRAL_SEED + draw, size):
            image = enhancer.enhance(scene_mosaic(scene), ratio=scene.ratio).image
            condition = labs.setdefault(scene.name.split("@", 1)[1], {"LLPackNet": [], "LibRaw + NLM": []})
            condition["LLPackNet"].append(grey_lab(image))
            condition["LibRaw + NLM"].append(grey_lab(denoised_baseline(libraw_baseline(scene.pair))))
        print(f"draw {draw + 1}/{args.draws}", file=sys.stderr, flush=True)
    table = {name: {method: summarise(np.stack(values)) for method, values in methods.items()} for name, methods in labs.items()}
    print(f"greys over {args.draws} noise draws, {size[0]}x{size[1]} charts: worst single grey | cast | noise (std of a*, b*)")
    for name, methods in table.items():
        cells = "   ".join(f"{m}: {r['worst_single']:5.2f} | {r['cast']:5.2f} | {r['noise_std']:5.2f}" for m, r in methods.items())
        print(f"{name:<40} {cells}")
    if args.json:
        atomic_write_json(args.json, {"draws": args.draws, "size": list(size), "checkpoint": args.checkpoint, "conditions": table})


if __name__ == "__main__":
    main()
