"""Files per second on a local Ray instance with 1 and 2 workers, against the plain folder loop.

    python benchmarks/cluster_throughput.py [--photos 8] [--size 1024x1536] [--model ARTIFACT]

All three runs enhance the same folder of dark DNGs into fresh output folders, in this process,
after Ray has started (its start-up is printed apart). Ratios are against the plain loop measured
in this run; the outputs are checked to be byte for byte the same.
"""
from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--photos", type=int, default=8)
    parser.add_argument("--size", default="1024x1536")
    parser.add_argument("--model", help="an artifact folder; default: the PyTorch model")
    args = parser.parse_args()
    from toolkit.camera.dng import write_dng
    from toolkit.deploy.cluster import connect, enhance_on_ray
    from toolkit.deploy.enhance import Enhancer, enhance_folder

    height, width = (int(v) for v in args.size.split("x"))
    settings = {"ratio": 100, "model": args.model}
    with tempfile.TemporaryDirectory() as folder:
        root = Path(folder)
        (root / "in").mkdir()
        for k in range(args.photos):
            mosaic = (np.random.default_rng(k).random((height, width)) * 300 + 512).astype(np.uint16)
            write_dng(root / "in" / f"p{k}.dng", mosaic)
        start = time.perf_counter()
        enhance_folder(Enhancer(**settings), root / "in", root / "plain")
        plain = time.perf_counter() - start
        start = time.perf_counter()
        connect("local", num_cpus=2)
        print(f"Ray start-up: {time.perf_counter() - start:.1f} s (not counted below)")
        reference = {p.name: p.read_bytes() for p in (root / "plain").iterdir()}
        print(f"plain loop: {args.photos / plain:.2f} files/s")
        for workers in (1, 2):
            out = root / f"ray{workers}"
            start = time.perf_counter()
            enhance_on_ray(settings, root / "in", out, address="local", workers=workers)
            seconds = time.perf_counter() - start
            same = {p.name: p.read_bytes() for p in out.iterdir()} == reference
            print(f"Ray, {workers} worker{'s' if workers > 1 else ''}: {args.photos / seconds:.2f} files/s, "
                  f"{plain / seconds:.2f}x the plain loop (model loads included); same bytes: {'yes' if same else 'NO'}")
            shutil.rmtree(out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
