"""Issue 8's figures in one run: each target's achieved GMAC/s against this machine's FP32 peak,
the speed ratios between targets, and tiled against untiled memory and latency at full size.

    python benchmarks/full_resolution.py [--size 2848x4256] [--budget 512] [--out runs/bench-full]

Everything is measured in this run on this machine, in fresh processes, and printed as ratios:
the machines are shared and noisy, so no absolute figure is asserted anywhere.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

ENHANCE = r"""
import json, statistics, sys, time
from pathlib import Path
from toolkit.deploy.enhance import Enhancer
from toolkit.camera.raw import read_mosaic

source, budget, modes = sys.argv[1], float(sys.argv[2]), sys.argv[3].split(",")
def status_mb(field):
    return int(next(l for l in Path('/proc/self/status').read_text().splitlines() if l.startswith(field)).split()[1]) / 1024
enhancers = {mode: Enhancer(tile=mode, memory_budget_mb=budget if mode == "auto" else None, ratio=300) for mode in modes}
for enhancer in enhancers.values():
    enhancer.backend
mosaic = read_mosaic(source)
baseline = status_mb("VmRSS")
Path('/proc/self/clear_refs').write_text('5')
times, tiles, result = {mode: [] for mode in modes}, {}, None
for _ in range(3 if len(modes) == 1 else 5):
    for mode in modes:  # alternating: both see the same machine noise
        result = None  # the previous image is freed first, as a camera loop writing each photo would
        start = time.perf_counter()
        result = enhancers[mode].enhance(mosaic, bits=8)
        times[mode].append(time.perf_counter() - start)
        tiles[mode] = result.tiles
print(json.dumps({"seconds": {m: statistics.median(t) for m, t in times.items()}, "tiles": tiles,
                  "peak_mb": status_mb("VmHWM"), "above_mb": status_mb("VmHWM") - baseline,
                  "loaded_mb": baseline, "image_mb": result.image.nbytes / 2**20}))
"""


EFFICIENCY = r"""
import json, statistics, sys, time
import numpy as np
from targets import get_target
from toolkit.deploy.artifact import read_manifest
from toolkit.bench.peak import conv_gmac, peak_runner

folder, threads = sys.argv[1], int(sys.argv[2])
manifest = read_manifest(folder)
runner = get_target(manifest["target"]).load(folder, manifest, threads)
peak = peak_runner(manifest["target"], threads)
x = np.random.default_rng(0).random(manifest["input"]["shape"], dtype=np.float32) * 0.05
gmac = manifest["model"]["macs_per_pixel"] * manifest["size"][0] * manifest["size"][1] / 1e9
runner.run_native(x)
peak()
model_s, peak_s = [], []
for _ in range(7):  # alternating: the model and the peak convolution see the same machine
    start = time.perf_counter(); runner.run_native(x); model_s.append(time.perf_counter() - start)
    for _ in range(3):
        start = time.perf_counter(); peak(); peak_s.append(time.perf_counter() - start)
model, best = gmac / statistics.median(model_s), conv_gmac() / statistics.median(peak_s)
print(json.dumps({"model_gmac_per_s": round(model, 2), "peak_gmac_per_s": round(best, 2), "fraction": round(model / best, 4)}))
"""


def run_script(script: str, *args: str) -> dict:
    """One of the scripts above in a fresh process: its last line of JSON, or the error it ended with."""
    proc = subprocess.run([sys.executable, "-c", script, *args], capture_output=True, text=True, cwd=ROOT)
    if proc.returncode:
        return {"error": proc.stderr.strip().splitlines()[-1] if proc.stderr.strip() else f"exit {proc.returncode}"}
    return json.loads(proc.stdout.strip().splitlines()[-1])


def efficiency_run(folder: Path, threads: int) -> dict:
    """An FP32 artifact's GMAC/s against its runtime's peak convolution, alternating in one process."""
    return run_script(EFFICIENCY, str(folder), str(threads))


def enhance_run(source: Path, budget: float, *modes: str) -> dict:
    """PyTorch FP32 enhancing `source` to 8 bits in a fresh process, once per mode (tile 'off' or
    'auto' under `budget`); with several modes, alternating, for their latency ratio."""
    return run_script(ENHANCE, str(source), str(budget), ",".join(modes))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", default="2848x4256")
    parser.add_argument("--budget", type=float, default=512.0, help="memory budget (MB) for the tiled runs")
    parser.add_argument("--out", default="runs/bench-full")
    parser.add_argument("--artifacts", default="runs/artifacts-full")
    parser.add_argument("--report", help="reuse a profile report made with --peak instead of profiling again")
    args = parser.parse_args()

    from toolkit.bench.profile import profile
    from toolkit.bench.report import read_report

    if args.report:
        report = read_report(args.report)
    else:
        report = profile(all_targets=True, sizes=[args.size], out=args.out, artifacts_root=args.artifacts, runs=5, repeats=1,
                         sid=False, peak=True)
    rows = {r["label"]: r for r in report["results"] if r["status"] != "failed"}
    e2e = {k: sum(r["stages_ms"][s] for s in ("preprocess", "inference", "postprocess")) for k, r in rows.items()}
    print("machine:", report["machine"]["cpu"], report["machine"]["flags"])
    for runtime, peak in (report.get("machine_peak") or {}).items():
        print(f"FP32 peak {runtime:12} best run {peak.get('peak_gmac_per_s', peak.get('error'))} GMAC/s, "
              f"median {peak.get('median_gmac_per_s')} GMAC/s (fractions below: median against median)")

    def share(row: dict, stage: str) -> str:
        return f"{100 * row['stages_ms'][stage] / e2e[row['label']]:.1f}%"

    print("\nachieved GMAC/s and fraction of the runtime's FP32 peak; the camera stages against end to end "
          "(pre-processing + inference + post-processing):")
    for label, row in rows.items():
        peak = f"{100 * row['fraction_of_peak']:.0f}% of peak" if row.get("fraction_of_peak") else "(INT8: no FP32 peak)"
        print(f"  {label:20} {row.get('gmac_per_s')} GMAC/s  {peak};"
              f"  stages / end to end: pre {share(row, 'preprocess')}, post {share(row, 'postprocess')} (target <= 10 % each); "
              f"RAW decode {share(row, 'decode')} (outside end to end)")

    def ratio(a: str, b: str, what: dict) -> str:
        return f"{what[a] / what[b]:.3f}" if a in what and b in what else "n/a"

    p50 = {k: r["latency_ms"]["p50"] for k, r in rows.items()}
    threads = int(report["settings"].get("threads") or 2)
    # The FP32 efficiency target is read from the model and the peak convolution alternating in one
    # process: the report's medians come from separate processes, minutes apart, on a noisy machine.
    alternating = {}
    for label in ("openvino-fp32", "tflite-fp32"):
        folder = Path(args.artifacts) / f"{label}-{args.size}"
        if folder.exists():
            alternating[label] = efficiency_run(folder, threads)
    print("\nratios (same run):")
    print(f"  OpenVINO INT8 end to end / FP32 PyTorch end to end: {ratio('openvino-int8', 'torch-fp32', e2e)}  (target <= 0.55)")
    ov = alternating.get("openvino-fp32", {})
    print(f"  OpenVINO FP32 achieved / OpenVINO FP32 peak:        {ov.get('fraction', ov.get('error', 'n/a'))}  (target >= 0.85; "
          f"alternating in one process; the report's, from separate processes: "
          f"{rows.get('openvino-fp32', {}).get('fraction_of_peak', 'n/a')})")
    print(f"  TFLite INT8 / TFLite FP32 latency:                  {ratio('tflite-int8', 'tflite-fp32', p50)}  (target <= 0.7)")
    for label, found in alternating.items():
        print(f"  {label} / its runtime's FP32 peak, medians of 7 runs alternating with 21 of the peak "
              f"convolution in one process: {found}")

    sample = Path(report["inputs"][args.size]["sample"])
    if not sample.exists():
        sample = Path(args.out) / "inputs" / args.size / "sample.dng"
    # memory: one process per mode (peak resident memory is per process); latency: both in one
    # process, alternating, so the ratio is not a comparison of two moments of a noisy machine
    untiled = enhance_run(sample, args.budget, "off")
    tiled = enhance_run(sample, args.budget, "auto")
    both = enhance_run(sample, args.budget, "off", "auto")
    print(f"\nFP32 PyTorch, {args.size} to 8 bits: untiled {untiled}\n  tiled under {args.budget:g} MB: {tiled}\n  alternating: {both}")
    if all("error" not in run for run in (untiled, tiled, both)):
        print(f"  tiled peak above the loaded model / untiled's: {tiled['above_mb'] / untiled['above_mb']:.3f} (target <= 0.40); "
              f"whole process: {tiled['peak_mb'] / untiled['peak_mb']:.3f}")
        floor = tiled["loaded_mb"] + tiled["image_mb"]
        print(f"  whole-process floor of any tiling: torch imported, model loaded and mosaic read ({tiled['loaded_mb']:.0f} MB) "
              f"plus the 8-bit image ({tiled['image_mb']:.0f} MB) / untiled peak: {floor / untiled['peak_mb']:.3f}")
        print(f"  tiled latency / untiled (medians of 5 alternating runs): "
              f"{both['seconds']['auto'] / both['seconds']['off']:.3f} (target <= 1.15)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
