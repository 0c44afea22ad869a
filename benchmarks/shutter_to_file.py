"""From shutter to file: photos per second for a folder of full-size DNGs, each stage's share, one by
one against pipelined, and what the compiled-model cache and the warm server save on load.

    python benchmarks/shutter_to_file.py [--model ARTIFACT ...] [--photos 8] [--size 2848x4256]
                                         [--formats jpeg,png,tiff] [--out runs/bench-shutter]

Without --model it exports (once) the OpenVINO INT8 artifact of --size into --out. Every figure
comes from `llpack enhance` commands run here, in fresh processes, and is printed as a ratio
against the inference time of one photo measured in the same run (the machines are shared and
noisy: nothing here is compared with a figure from another run):
- the command's wall time per photo, and the folder loop's (without start-up and model load), against
  decode + pre + inference + post of one photo (medians of the one-by-one run), for each format;
- each stage's share of the one-by-one run: start-up, load/compile, decode, pre, inference, post,
  encode, write;
- peak memory (the process's max RSS) of the pipelined run against the one-by-one run;
- the same folder pipelined on a warm server (`--warm`) that has the model loaded already;
- whether the runs wrote the same bytes;
- load time of single-file commands: the first (compiles into an empty cache) against later ones,
  in fresh processes (the compiled-model cache) and on the warm server (`--warm`).
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
STAGES = ("decode", "preprocess", "inference", "postprocess", "encode", "write")


def make_photos(folder: Path, count: int, size: tuple[int, int]) -> list[Path]:
    """`count` dark DNGs of `size` (dead-leaves scenes at exposure ratios 100-300), made once."""
    from toolkit.camera.dng import write_dng
    from toolkit.data.synth import sample_scene

    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for k in range(count):
        path = folder / f"photo_{k:02d}.dng"
        if not path.exists():
            pair = sample_scene(100 + k, size=size, ratio=(100, 250, 300)[k % 3])
            write_dng(path, pair.raw, "RGGB", pair.sensor.black_level, pair.sensor.white_level,
                      as_shot_neutral=pair.unprocess.as_shot_neutral, orientation=(1, 6, 8)[k % 3],
                      captured=f"2026:11:30 12:00:{k:02d}")
            print(f"  made {path.name}", flush=True)
        paths.append(path)
    return paths


def llpack(*args: str, env: dict | None = None) -> tuple[dict, float, float]:
    """`llpack ARGS --json -q` in a fresh process: (its JSON, wall seconds, its peak RSS in MB from /proc VmHWM)."""
    script = ("import json, sys; from pathlib import Path; from toolkit.cli import main; sys.argv = ['llpack', *sys.argv[1:]]; "
              "code = main(); hwm = next(l for l in Path('/proc/self/status').read_text().splitlines() if l.startswith('VmHWM'));"
              "print('PEAK', int(hwm.split()[1]) / 1024, file=sys.stderr); sys.exit(code)")
    start = time.perf_counter()
    proc = subprocess.run([sys.executable, "-c", script, *args, "--json", "-q"], capture_output=True, text=True, cwd=ROOT,
                          env={**os.environ, **(env or {})})
    wall = time.perf_counter() - start
    if proc.returncode:
        raise SystemExit(f"llpack {' '.join(args)} failed ({proc.returncode}): {proc.stderr.strip()[-400:]}")
    peak = float(next(line.split()[1] for line in proc.stderr.splitlines() if line.startswith("PEAK")))
    return json.loads(proc.stdout), wall, peak


def same_files(a: Path, b: Path) -> bool:
    names = sorted(p.name for p in a.iterdir())
    return names == sorted(p.name for p in b.iterdir()) and all((a / n).read_bytes() == (b / n).read_bytes() for n in names)


def folder_runs(model: Path, photos: Path, out: Path, fmt: str, env: dict) -> dict:
    """The folder to `fmt`, one by one, pipelined, and pipelined on a warm server that has the model
    loaded already (in turns, three times each: the lowest wall of each kept)."""
    runs: dict[str, list] = {"sequential": [], "pipelined": [], "warm": []}
    warm_env = {"LLPACK_CACHE": str(out / "cache-warm-folder")}
    llpack("enhance", str(sorted(photos.iterdir())[0]), "-o", str(out / "warm.jpg"), "--model", str(model), "--threads", "2",
           "--warm", "600", env=warm_env)  # starts the server, which loads the model
    try:
        for turn in range(3):
            for mode in (("sequential", "pipelined", "warm") if turn % 2 == 0 else ("warm", "pipelined", "sequential")):
                target = out / f"{fmt}-{mode}"
                shutil.rmtree(target, ignore_errors=True)
                flags = {"sequential": ["--sequential"], "pipelined": ["--cold"], "warm": []}[mode]
                runs[mode].append((*llpack("enhance", str(photos), "-o", str(target), "--format", fmt, "--model", str(model),
                                            "--threads", "2", *flags, env=warm_env if mode == "warm" else env), target))
    finally:
        stop_server(warm_env)
    best = {mode: min(r, key=lambda run: run[1]) for mode, r in runs.items()}
    seq, pipe = best["sequential"], best["pipelined"]
    files = seq[0]["results"]
    stage = {s: statistics.median(r["seconds"][s] for r in files) for s in STAGES}
    core = sum(stage[s] for s in ("decode", "preprocess", "inference", "postprocess"))
    n = len(files)
    return {
        "format": fmt, "photos": n, "stage_s": stage, "core_s": core,
        "load_s": seq[0]["load_seconds"],
        "startup_s": seq[1] - seq[0]["load_seconds"] - sum(sum(r["seconds"].values()) for r in files),
        "wall_per_photo": {m: best[m][1] / n for m in best}, "loop_per_photo": {m: best[m][0]["seconds"] / n for m in best},
        "peak_mb": {m: best[m][2] for m in best},
        "identical": same_files(seq[3], pipe[3]) and same_files(seq[3], best["warm"][3]),
    }


def cache_runs(model: Path, photo: Path, out: Path, rounds: int = 3) -> dict:
    """Single-file commands into an empty compile cache, `rounds` times: the first compiles and writes
    the blob, the two after it import the blob; one more with the cache off. Medians over the rounds."""
    cache = out / "cache-single"
    env = {"LLPACK_CACHE": str(cache)}
    args = ("enhance", str(photo), "-o", str(out / "single.jpg"), "--model", str(model))
    first, later, off, imports, wall_first, wall_later = [], [], [], [], [], []
    for _ in range(rounds):
        shutil.rmtree(cache, ignore_errors=True)
        runs = [llpack(*args, env=env) for _ in range(3)]
        first.append(runs[0][0]["load_seconds"])
        wall_first.append(runs[0][1])
        later += [r[0]["load_seconds"] for r in runs[1:]]
        wall_later += [r[1] for r in runs[1:]]
        imports += [r[0]["runtime_import_seconds"] for r in runs]
        off.append(llpack(*args, env={**env, "LLPACK_COMPILE_CACHE": "off"})[0]["load_seconds"])
    median = statistics.median
    return {"off": median(off), "first": median(first), "later": median(later), "runtime_import": median(imports),
            "wall_first": median(wall_first), "wall_later": median(wall_later)}


def stop_server(env: dict) -> None:
    subprocess.run([sys.executable, "-m", "toolkit.cli", "serve", "--stop", "-q"], cwd=ROOT, env={**os.environ, **env},
                   stderr=subprocess.DEVNULL)


def warm_runs(model: Path, photo: Path, out: Path, rounds: int = 3) -> dict:
    """Single-file commands with `--warm`, `rounds` times from no server and an empty cache: the first
    starts the warm server, which loads the model; the two after it find the model loaded. Medians."""
    cache = out / "cache-warm"
    env = {"LLPACK_CACHE": str(cache)}
    args = ("enhance", str(photo), "-o", str(out / "warm.jpg"), "--model", str(model), "--warm", "120")
    first, later, wall_first, wall_later, reused = [], [], [], [], []
    for _ in range(rounds):
        stop_server(env)
        shutil.rmtree(cache, ignore_errors=True)
        runs = [llpack(*args, env=env) for _ in range(3)]
        stop_server(env)
        first.append(runs[0][0]["load_seconds"])
        wall_first.append(runs[0][1])
        later += [r[0]["load_seconds"] for r in runs[1:]]
        wall_later += [r[1] for r in runs[1:]]
        reused += [r[0]["warm_server"]["model"] == "reused" for r in runs[1:]]
    median = statistics.median
    return {"first": median(first), "later": median(later), "wall_first": median(wall_first),
            "wall_later": median(wall_later), "all_reused": all(reused)}


def png_levels(image_path: Path, levels=(0, 1, 3, 6), repeats: int = 3) -> dict:
    """Pillow's PNG at several zlib levels on one of this run's outputs: (median seconds, bytes) each."""
    import io

    from PIL import Image

    from toolkit.fileio import read_image

    image = Image.fromarray(read_image(image_path))
    found = {}
    for level in levels:
        times = []
        for _ in range(repeats):
            buffer = io.BytesIO()
            start = time.perf_counter()
            image.save(buffer, "PNG", compress_level=level)
            times.append(time.perf_counter() - start)
        found[level] = (statistics.median(times), buffer.tell())
    return found


def export_default(size: str, out: Path) -> Path:
    folder = out / f"openvino-int8-{size}"
    if not (folder / "manifest.json").exists():
        print(f"exporting the OpenVINO INT8 artifact of {size} (once)...", flush=True)
        subprocess.run([sys.executable, "-c", "import sys; from toolkit.cli import main; sys.exit(main())", "export", "--target", "openvino", "--precision", "int8", "--size", size, "--out", str(folder)],
                       check=True, cwd=ROOT)
    return folder


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", action="append", type=Path, help="artifact folder(s); default: OpenVINO INT8 of --size")
    parser.add_argument("--photos", type=int, default=8)
    parser.add_argument("--size", default="2848x4256")
    parser.add_argument("--formats", default="jpeg,png,tiff")
    parser.add_argument("--out", type=Path, default=ROOT / "runs" / "bench-shutter")
    args = parser.parse_args()
    height, width = (int(v) for v in args.size.split("x"))
    args.out.mkdir(parents=True, exist_ok=True)
    print(f"making {args.photos} dark DNGs of {args.size}...", flush=True)
    photos = make_photos(args.out / "dngs", args.photos, (height, width))
    models = args.model or [export_default(args.size, args.out)]
    env = {"LLPACK_CACHE": str(args.out / "cache")}
    for model in models:
        print(f"\n== {model}")
        from toolkit.fileio import png_encoder

        print(f"PNG encoder: {png_encoder()}")
        cache = cache_runs(model, photos[0], args.out)
        print(f"model load (read, check, compile or import the cached blob) of single-file commands: cache off "
              f"{cache['off'] / cache['later']:.1f}x a later call's, the first into an empty cache {cache['first'] / cache['later']:.1f}x "
              f"(runtime import, part of start-up: {cache['runtime_import'] / cache['later']:.1f}x); whole command, "
              f"first against later: {cache['wall_first'] / cache['wall_later']:.2f}x")
        warm = warm_runs(model, photos[0], args.out)
        print(f"with --warm (the first call starts the warm server): the first call's model load {warm['first'] / warm['later']:.0f}x "
              f"a later call's ({'model reused' if warm['all_reused'] else 'NOT always reused'}), later loads "
              f"{cache['later'] / warm['later']:.0f}x faster than with the file cache alone; whole command, first against later: "
              f"{warm['wall_first'] / warm['wall_later']:.2f}x, a later one against a later cached cold one: "
              f"{cache['wall_later'] / warm['wall_later']:.2f}x faster")
        for fmt in [f for f in args.formats.split(",") if f]:  # --formats "": the load figures only
            r = folder_runs(model, args.out / "dngs", args.out, fmt, env)
            infer, core = r["stage_s"]["inference"], r["core_s"]
            print(f"\n{fmt}: {r['photos']} photos; one photo's decode + pre + inference + post = {core / infer:.2f}x its inference")
            shares = {"start-up": r["startup_s"] / r["photos"], "load/compile": r["load_s"] / r["photos"], **r["stage_s"]}
            total = sum(shares.values())
            print("  one-by-one stages per photo (x inference; share): " + ", ".join(
                f"{k} {v / infer:.2f}x {100 * v / total:.0f}%" for k, v in shares.items()))
            for mode in ("sequential", "pipelined", "warm"):
                print(f"  {mode:10}: {1 / r['wall_per_photo'][mode]:.2f} photos/s per command wall; wall per photo "
                      f"{r['wall_per_photo'][mode] / core:.2f}x core (loop alone {r['loop_per_photo'][mode] / core:.2f}x)"
                      + (f"; peak RSS {r['peak_mb'][mode]:.0f} MB" if mode != "warm" else " (pipelined, on the warm server)"))
            print(f"  pipelined / one-by-one: wall {r['wall_per_photo']['pipelined'] / r['wall_per_photo']['sequential']:.2f}x, "
                  f"peak memory {r['peak_mb']['pipelined'] / r['peak_mb']['sequential']:.2f}x; "
                  f"same bytes: {'yes' if r['identical'] else 'NO'}")
        tiff = args.out / "tiff-sequential"
        if tiff.exists():
            found = png_levels(sorted(tiff.iterdir())[0])
            base_t, base_b = found[6]
            print("\n8-bit PNG through Pillow by zlib level, on one output of this run (against level 6, Pillow's default): "
                  + "; ".join(f"level {k}: {base_t / t:.2f}x faster, {b / base_b:.2f}x the bytes" for k, (t, b) in found.items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
