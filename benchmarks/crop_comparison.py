"""The README's crop comparison: held-out scenes at the paper's full resolution, six ways, cropped at 100 %.

    python benchmarks/crop_comparison.py ARTIFACT [--ratio 100] [--out docs/images/crop-comparison.png]

ARTIFACT is an INT8 artifact folder exported at 2848x4256 (`llpack export --precision int8 --size
2848x4256`). Each row is a procedural detail scene (text, textured leaves) of a seed that neither
training nor the `detail` evaluation set uses, made at 2848x4256 and darkened to `--ratio` with the
A7S II noise model. Columns: the dark input x ratio, LibRaw at the true ratio, LibRaw followed by
`llpack evaluate`'s tuned non-local means, LLPackNet FP32 (the default weights in PyTorch), the INT8
artifact, the ground truth; the crop is the window with the most fine detail, shown pixel for pixel.
Non-local means runs on the crop and a 32-pixel margin (it is local; on 12 MP it would take
minutes). The PSNR and colour-aligned PSNR of each column on the crop are printed.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

SIZE = (2848, 4256)
CROP = (256, 256)
MARGIN = 32
KINDS = ("text", "textured_leaves")
SEED_OFFSET = 1000  # detail scenes' third seed word: the held-out detail set uses 0 and 1


def detailed_window(target: np.ndarray, crop: tuple[int, int], step: int = 128) -> tuple[int, int]:
    """Top-left corner of the crop window (on a `step` grid, away from the border) whose ground truth
    has the most gradient energy: where losing detail shows."""
    grey = target.mean(axis=-1)
    energy = np.abs(np.diff(grey, axis=0))[:, :-1] + np.abs(np.diff(grey, axis=1))[:-1, :]
    best, corner = -1.0, (MARGIN, MARGIN)
    for top in range(MARGIN, grey.shape[0] - crop[0] - MARGIN, step):
        for left in range(MARGIN, grey.shape[1] - crop[1] - MARGIN, step):
            score = float(energy[top : top + crop[0], left : left + crop[1]].sum())
            if score > best:
                best, corner = score, (top, left)
    return corner


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("artifact", type=Path)
    parser.add_argument("--ratio", type=float, default=100.0)
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "images" / "crop-comparison.png")
    args = parser.parse_args()

    from toolkit.data.dataset import DETAIL_SEED, EvalScene
    from toolkit.data.metrics import psnr
    from toolkit.data.scenes import DETAIL_KINDS, detail_scene
    from toolkit.data.synth import A7S2, make_dark_pair
    from toolkit.deploy.artifact import read_manifest
    from toolkit.deploy.enhance import Enhancer
    from toolkit.training.evaluate import (aligned_psnr, brightened_input, denoised_baseline, libraw_baseline, save_grid,
                                           scene_mosaic)

    manifest = read_manifest(args.artifact)
    if tuple(manifest["size"]) != SIZE:
        raise SystemExit(f"the artifact is {manifest['size']}, not the full resolution {SIZE}: export one with --size 2848x4256")
    fp32, int8 = Enhancer(ratio=args.ratio, tile="off"), Enhancer(model=args.artifact, ratio=args.ratio, tile="off")
    columns = ("dark input x ratio", "LibRaw", "LibRaw + non-local means", "LLPackNet FP32", f"LLPackNet {manifest['precision'].upper()}",
               "ground truth")
    rows = []
    for kind in KINDS:
        k = DETAIL_KINDS.index(kind)
        clean = detail_scene(SIZE, np.random.default_rng([DETAIL_SEED, k, SEED_OFFSET]), kind)
        pair = make_dark_pair(clean, args.ratio, np.random.default_rng([DETAIL_SEED, k, SEED_OFFSET, int(args.ratio)]), A7S2)
        scene = EvalScene(f"{kind}@x{args.ratio:g}", kind, pair)
        target = pair.target
        top, left = detailed_window(target, CROP)
        window = (slice(top, top + CROP[0]), slice(left, left + CROP[1]))
        rendered = libraw_baseline(pair)
        wide = (slice(top - MARGIN, top + CROP[0] + MARGIN), slice(left - MARGIN, left + CROP[1] + MARGIN))
        denoised = denoised_baseline(rendered[wide])[MARGIN:-MARGIN, MARGIN:-MARGIN]
        mosaic = scene_mosaic(scene)
        images = [brightened_input(scene)[window], rendered[window], denoised,
                  fp32.enhance(mosaic).image[window], int8.enhance(mosaic).image[window], target[window]]
        print(f"{scene.name}, crop at ({top}, {left}), PSNR / colour-aligned PSNR on the crop:")
        for title, image in zip(columns[1:-1], images[1:-1]):
            print(f"  {title:26s} {psnr(image, target[window]):6.2f} / {aligned_psnr(image, target[window]):6.2f} dB")
        rows.append(tuple(images))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    save_grid(args.out, rows, titles=columns)
    print(f"-> {args.out}")


if __name__ == "__main__":
    main()
