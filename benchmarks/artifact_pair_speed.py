"""Two artifacts of the same size, timed in turns in one process: their speed ratio on a noisy machine.

    python benchmarks/artifact_pair_speed.py ARTIFACT_A ARTIFACT_B [--rounds 15] [--threads 2]

A shared machine drifts by tens of percent between runs, so two separate profiles cannot tell a
5 % change. Here each round runs A once and B once on the same packed input (the order alternating
each round); the median of the per-round ratios B/A is what is printed, with its p10-p90 range.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("a", type=Path)
    parser.add_argument("b", type=Path)
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()

    from targets import get_target
    from toolkit.camera.bayer import to_layout
    from toolkit.deploy.artifact import read_manifest

    runners, inputs = [], []
    for folder in (args.a, args.b):
        manifest = read_manifest(folder)
        runner = get_target(manifest["target"]).load(folder, manifest, args.threads)
        h, w = manifest["size"]
        packed = np.random.default_rng(0).uniform(0, 0.5, (1, 256, h // 16, w // 16)).astype(np.float32)
        runners.append(runner)
        inputs.append(to_layout(packed, runner.layout))
    if read_manifest(args.a)["size"] != read_manifest(args.b)["size"]:
        raise SystemExit("the two artifacts must have the same size")
    for runner, x in zip(runners, inputs):  # warm up: first-run allocations and compilation
        runner.run_native(x)
        runner.run_native(x)
    times: list[list[float]] = [[], []]
    for r in range(args.rounds):
        for k in ((0, 1) if r % 2 == 0 else (1, 0)):
            start = time.perf_counter()
            runners[k].run_native(inputs[k])
            times[k].append(time.perf_counter() - start)
    ratios = np.array(times[1]) / np.array(times[0])
    print(f"A {args.a}: median {1e3 * np.median(times[0]):.1f} ms; B {args.b}: median {1e3 * np.median(times[1]):.1f} ms")
    print(f"B / A time: median {np.median(ratios):.3f} (p10 {np.quantile(ratios, 0.1):.3f}, p90 {np.quantile(ratios, 0.9):.3f}) "
          f"over {args.rounds} rounds")


if __name__ == "__main__":
    main()
