"""`llpack`: a thin command line over the toolkit's Python API.

Every command is one entry in `COMMANDS` (name, help, argument builder, runner); the runner
makes one call into the library and returns a JSON-ready dict. Exit codes: 0 success, 2 a user
error (bad input, unwritable output, missing extra), 3 a batch that partly failed (the result is
still printed), 1 a bug, 130 interrupted.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from . import __version__
from .errors import UserError
from .deploy.warm import DEFAULT_IDLE_TIMEOUT
from .fileio import DEFAULT_QUALITY, IMAGE_FORMATS
from .progress import StderrHandler

log = logging.getLogger("toolkit")

EXIT_OK, EXIT_BUG, EXIT_USER, EXIT_PARTIAL, EXIT_INTERRUPTED = 0, 1, 2, 3, 130


class PartialFailure(Exception):
    """Some items of a batch command failed; the result is still printed, the exit code says so."""

    def __init__(self, result: dict, summary: str):
        super().__init__(summary)
        self.result = result


@dataclass(frozen=True)
class Command:
    name: str
    help: str
    add_arguments: Callable[[argparse.ArgumentParser], None]
    run: Callable[[argparse.Namespace], dict]
    render: Callable[[dict], str]


# ---------------------------------------------------------------- enhance
def _add_enhance(p: argparse.ArgumentParser) -> None:
    p.add_argument("input", help="camera RAW file (DNG, ARW, NEF, CR2, ...) or a .npy Bayer mosaic; or a folder of them")
    p.add_argument("-o", "--output", required=True,
                   help="output image, .jpg/.jpeg, .png or .tif/.tiff; for a folder of inputs, the output folder (created if missing)")
    p.add_argument("--ratio", default="auto", help="'auto' (the paper's amplifier) or the exposure ratio, e.g. 100")
    p.add_argument("--checkpoint", help="LLPackNet checkpoint (.pt/.pth); default: the built-in weights")
    p.add_argument("--model", help="an exported artifact folder (llpack export) to run instead of PyTorch")
    p.add_argument("--threads", type=int, help="inference threads for an artifact (default: the runtime's choice)")
    p.add_argument("--bits", type=int, choices=(8, 16), default=8, help="bits per channel of the output")
    p.add_argument("--white-balance", default="file",
                   help="for weights trained on white-balanced input: 'file' (the RAW's as-shot balance; grey world "
                        "if it has none), 'auto' (grey world), or R,G,B gains such as 2.1,1,1.6")
    p.add_argument("--format", choices=tuple(IMAGE_FORMATS), default="png",
                   help="for a folder of inputs: write OUTPUT/<name>.png (default), .jpg or .tif")
    p.add_argument("--quality", type=int, default=DEFAULT_QUALITY, help="JPEG quality, 1-100 (default %(default)s)")
    p.add_argument("--ray", nargs="?", const="auto", metavar="auto|ADDRESS",
                   help="for a folder of RAW files (or of ROS 2 bags, with --topic): spread them over a Ray cluster (the one "
                        "this machine belongs to, else a local instance; or give its address); outputs already there are skipped")
    p.add_argument("--workers", type=int, help="with --ray: how many workers (default: one per machine of the cluster; each uses all its cores)")
    p.add_argument("--sequential", action="store_true",
                   help="for a folder: one photo at a time, instead of reading the next and writing the previous "
                        "during inference (same files, slower)")
    warm = p.add_argument_group("warm start (Linux)")
    warm.add_argument("--warm", nargs="?", type=float, const=DEFAULT_IDLE_TIMEOUT, metavar="SECONDS",
                      help="run on the warm server (llpack serve), starting one in the background if none is running: "
                           "later calls skip start-up and loading the model; it leaves after SECONDS idle (default %(const)g). "
                           "A running server is used even without this flag")
    warm.add_argument("--cold", action="store_true", help="run in this process even when a warm server is running")
    mem = p.add_argument_group("memory")
    mem.add_argument("--tile", default="auto",
                     help="'auto' (tile when the image is larger than the artifact or over the budget: strips for "
                          "the PyTorch model, windows for artifacts), 'off', or a window size in pixels, e.g. 1024")
    mem.add_argument("--memory-budget", type=float, help="MB the enhancement may use above the runtime; tiles are sized to fit")
    mem.add_argument("--device", help="take the memory budget and threads from a device profile (x86-2core, rpi4, rpi5)")
    npy = p.add_argument_group("for .npy mosaics and raw camera frames")
    npy.add_argument("--black-level", type=float, help="sensor black level in counts (integer arrays; a frame's own bit scale)")
    npy.add_argument("--white-level", type=float, help="sensor white level in counts (integer arrays; a frame's own bit scale)")
    npy.add_argument("--pattern", help=".npy: Bayer pattern: RGGB, BGGR, GRBG or GBRG (default RGGB)")
    bag = p.add_argument_group("for ROS 2 bags (a rosbag2 folder or .mcap in, a rosbag2 folder out)")
    bag.add_argument("--topic", help="the Bayer sensor_msgs/Image topic to enhance, e.g. /camera/image_raw; "
                                     "written as TOPIC/enhanced (rgb8), every other topic copied")
    frame = p.add_argument_group("for raw camera frames (a picamera2 buffer saved as it came)")
    frame.add_argument("--pixel-format", help="the frame's libcamera format, e.g. SRGGB12_CSI2P, SBGGR10, SRGGB16")
    frame.add_argument("--size", help="the frame's HEIGHTxWIDTH in pixels, e.g. 3040x4056 (picamera2 writes (width, height))")
    frame.add_argument("--stride", type=int, help="bytes per row in the buffer, padding included (default: unpadded)")
    frame.add_argument("--sensor", help="black and white levels from a sensor profile: imx477, imx708, imx296")
    frame.add_argument("--alignment", default="auto", choices=("auto", "low", "high"),
                       help="unpacked 10/12-bit values: low bits (Raspberry Pi 4), top of 16 bits (Pi 5), or auto")


def _frame(args: argparse.Namespace):
    """`--pixel-format`: the input file is a raw camera frame; read it into a `Mosaic`."""
    from toolkit.camera.frames import read_frame
    from toolkit.camera.sizes import parse_size
    from toolkit.errors import InputError
    from toolkit.fileio import check_output_path, image_format

    if args.size is None:
        raise InputError("a raw frame needs its size", "give --size HEIGHTxWIDTH, e.g. --size 3040x4056")
    image_format(args.output)  # cheap checks on the output before reading a large frame
    check_output_path(args.output)
    try:
        data = Path(args.input).read_bytes()
    except OSError as exc:
        raise InputError(f"cannot read {args.input} ({exc.strerror or exc})", "give the path of a saved raw frame") from exc
    return read_frame(data, args.pixel_format, parse_size(args.size, multiple_of=1), args.stride, sensor=args.sensor,
                      black_level=args.black_level, white_level=args.white_level, alignment=args.alignment,
                      source=str(args.input))


def _run_enhance_bag(args: argparse.Namespace, enhancer, model: dict) -> dict:
    from toolkit.deploy.bags import enhance_bag

    if not args.topic:
        raise UserError(f"{args.input} is a ROS 2 bag", "give the image topic to enhance with --topic")
    result = enhance_bag(enhancer, args.input, args.output, args.topic, args.black_level, args.white_level,
                         show_progress=not args.quiet)
    result.update(model, variant=enhancer.backend.variant, trained_weights=enhancer.trained)
    if result["skipped"]:
        raise PartialFailure(result, f"{result['skipped']} of {result['images']} images skipped")
    return result


def _run_enhance_ray(args: argparse.Namespace, threads: int | None, budget: float | None) -> dict:
    from toolkit.deploy.cluster import enhance_on_ray

    settings = {"checkpoint": args.checkpoint, "ratio": args.ratio, "model": args.model, "threads": threads,
                "tile": args.tile, "memory_budget_mb": budget, "white_balance": args.white_balance}
    result = enhance_on_ray(settings, args.input, args.output, args.bits, args.format, args.quality, args.black_level,
                            args.white_level, args.pattern, address=args.ray, workers=args.workers,
                            show_progress=not args.quiet, topic=args.topic)
    return _folder_outcome(result, result["files"] - result["skipped_complete"])


def _folder_outcome(result: dict, tried: int) -> dict:
    """A folder run's exit: 2 when none of the `tried` files could be enhanced, 3 when some failed."""
    if result["failed"] and result["failed"] == tried:
        raise UserError(f"none of the {tried} files in {result['input']} could be enhanced (reasons above)",
                        "check that they are Bayer RAW files or 2-D .npy mosaics")
    if result["failed"]:
        raise PartialFailure(result, f"{result['failed']} of {result['files']} files failed")
    return result


def _run_enhance(args: argparse.Namespace) -> dict:
    """On the warm server the result also says which process ran it and whether the model was loaded."""
    backends = getattr(args, "backends", None)
    if backends is None:
        return _enhance(args, None)
    try:
        result = _enhance(args, backends)
    except PartialFailure as partial:
        partial.result["warm_server"] = backends.last_use()
        raise
    result["warm_server"] = backends.last_use()
    return result


def _enhance(args: argparse.Namespace, backends) -> dict:
    from toolkit.deploy.enhance import Enhancer, enhance_folder

    budget, threads = args.memory_budget, args.threads
    if args.device:
        from profiles import load_device_profile

        device = load_device_profile(args.device)
        budget = budget or device["memory_budget_mb"]
        threads = threads or device["threads"]
    enhancer = Enhancer(checkpoint=args.checkpoint, ratio=args.ratio, model=args.model, threads=threads,
                        tile=args.tile, memory_budget_mb=budget, white_balance=args.white_balance, backends=backends)
    model = {"ratio": "auto" if enhancer.ratio is None else enhancer.ratio}
    if (args.size or args.stride or args.sensor) and not args.pixel_format:
        raise UserError("--size, --stride and --sensor describe a raw camera frame", "give its --pixel-format too")
    from toolkit.deploy.bags import is_bag

    if args.ray and (not Path(args.input).is_dir() or is_bag(args.input)):
        raise UserError("--ray spreads a folder of RAW files, or of ROS 2 bags with --topic",
                        "give such a folder as the input")
    if args.ray and args.topic:
        return _run_enhance_ray(args, threads, budget)
    if args.topic or is_bag(args.input):
        return _run_enhance_bag(args, enhancer, model)
    if Path(args.input).is_dir():
        if args.pixel_format:
            raise UserError("--pixel-format reads one raw frame, not a folder", "give the frame's file")
        if args.ray:
            return _run_enhance_ray(args, threads, budget)
        result = enhance_folder(enhancer, args.input, args.output, args.bits, args.format,
                                args.black_level, args.white_level, args.pattern, show_progress=not args.quiet,
                                quality=args.quality, overlap=not args.sequential)
        result.update(model, variant=enhancer.backend.variant, trained_weights=enhancer.trained,
                      load_seconds=round(enhancer.load_seconds, 4),
                      runtime_import_seconds=round(enhancer.runtime_import_seconds, 4))
        return _folder_outcome(result, result["files"])
    source = _frame(args) if args.pixel_format else args.input
    result = enhancer.enhance_file(
        source, args.output, bits=args.bits,
        black_level=args.black_level, white_level=args.white_level, pattern=args.pattern, quality=args.quality,
    )
    return {
        "input": str(args.input),
        "output": str(Path(args.output)),
        "size": list(result.image.shape[:2]),
        "gain": result.gain,
        **model,
        "variant": enhancer.backend.variant,
        "trained_weights": enhancer.trained,
        "seconds": {k: round(v, 4) for k, v in result.seconds.items()},
        "load_seconds": round(enhancer.load_seconds, 4),
        "runtime_import_seconds": round(enhancer.runtime_import_seconds, 4),
        "tiles": result.tiles,
        "white_balance": result.white_balance.as_dict() if result.white_balance else None,
        "input_warning": result.input_warning,
    }


def _render_enhance(r: dict) -> str:
    if "enhanced_topic" in r:  # a ROS 2 bag
        return "\n".join([f"SKIPPED {reason}" for reason in r["reasons"]] + [
            f"enhanced {r['enhanced']} of {r['images']} images of {r['topic']} into {r['output']} ({r['enhanced_topic']}, "
            f"rgb8); copied {r['copied']} other messages" + (f"; skipped {r['skipped']}" if r["skipped"] else "")])
    if "results" in r:  # a folder of inputs
        lines = [f"FAILED {Path(row['input']).name}: {row['error']}" for row in r["results"] if "error" in row]
        lines.append(f"enhanced {r['ok']} of {r['files']} files into {r['output']} in {r['seconds']:.1f} s"
                     + (f"; {r['failed']} failed" if r["failed"] else "")
                     + (f"; skipped {len(r['skipped'])} other files" if r["skipped"] else ""))
        return "\n".join(lines)
    h, w = r["size"]
    tiles = f", {r['tiles']} tiles" if r.get("tiles", 1) > 1 else ""
    return f"wrote {r['output']} ({w}x{h}, gain {r['gain']:.1f}, {sum(r['seconds'].values()):.2f} s{tiles})"


# ---------------------------------------------------------------- serve
def _add_serve(p: argparse.ArgumentParser) -> None:
    p.add_argument("--idle-timeout", type=float, default=DEFAULT_IDLE_TIMEOUT, metavar="SECONDS",
                   help="leave after this many seconds without a request (default %(default)g)")
    p.add_argument("--status", action="store_true", help="describe the running server (exit 3 if there is none)")
    p.add_argument("--stop", action="store_true", help="stop the running server")
    p.add_argument("--socket", help=argparse.SUPPRESS)  # tests and `enhance --warm` name the socket


def _run_serve(args: argparse.Namespace) -> dict:
    from toolkit.deploy import warm
    from toolkit.deploy.enhance import BackendCache

    path = Path(args.socket) if args.socket else None
    if args.status or args.stop:
        reply = warm.request("stop" if args.stop else "status", path)
        if reply is None:
            raise PartialFailure({"running": False}, "no warm server is running")
        return {"running": not args.stop, **reply}
    backends = BackendCache()
    return warm.serve(lambda argv: main(argv, backends=backends), args.idle_timeout, path,
                      describe=lambda: {"models": backends.describe()})


def _render_serve(r: dict) -> str:
    if "stopped" in r:
        return f"stopped the warm server (pid {r['stopped']})"
    if "ended" in r:
        return f"warm server {r['pid']} answered {r['requests']} requests and ended ({r['ended']})"
    if not r["running"]:
        return "no warm server is running"
    models = ", ".join(f"{m['path']} ({m['kind']})" for m in r.get("models", [])) or "none yet"
    return (f"warm server {r['pid']} at {r['socket']}: {r['requests']} requests in {r['uptime_seconds']:.0f} s, "
            f"leaves after {r['idle_timeout']:g} s idle; models loaded: {models}")


# ---------------------------------------------------------------- info
def _add_info(p: argparse.ArgumentParser) -> None:
    p.add_argument("--checkpoint", help="checkpoint to describe; default: the built-in weights")
    p.add_argument("--size", default="2848x4256", help="HxW at which to quote GMACs (default 2848x4256)")


def _run_info(args: argparse.Namespace) -> dict:
    from .errors import require_torch

    require_torch("describing the PyTorch model")
    from toolkit.camera.sizes import parse_size
    from toolkit.model.checkpoint import load_model
    from toolkit.model.llpacknet import count_parameters, macs_per_pixel

    height, width = parse_size(args.size)
    model = load_model(args.checkpoint)
    return {
        "variant": model.variant,
        "description": model.config.description,
        "parameters": count_parameters(model),
        "checkpoint": model.checkpoint_info,
        "size": [height, width],
        "gmacs": round(macs_per_pixel() * height * width / 1e9, 2),
    }


def _render_info(r: dict) -> str:
    ck = r["checkpoint"]
    source = ck["path"] or "built-in (UNTRAINED: no default weights installed)"
    return "\n".join([
        f"model       {r['variant']} ({r['description']})",
        f"parameters  {r['parameters']:,}",
        f"GMACs       {r['gmacs']} at {r['size'][0]}x{r['size'][1]}",
        f"checkpoint  {source}" + (f"\nsha256      {ck['sha256']}" if ck["sha256"] else ""),
    ])


# ---------------------------------------------------------------- demo
def _add_demo(p: argparse.ArgumentParser) -> None:
    p.add_argument("--out", default="runs/demo", help="folder for the demo's files (default runs/demo)")
    p.add_argument("--seed", type=int, default=0, help="seed of the generated sample scene")


def _run_demo(args: argparse.Namespace) -> dict:
    from .demo import run_demo

    return run_demo(Path(args.out), seed=args.seed)


def _render_demo(r: dict) -> str:
    lines = [f"sample dark RAW   {r['sample']}", f"enhanced image    {r['enhanced']}"]
    lines.append(f"LibRaw baseline   {r['baseline']}")
    lines.append(f"ground truth      {r['ground_truth']}")
    lines.append(f"PSNR vs truth     LLPackNet {r['psnr_db']:.2f} dB (gain {r['gain']:.1f}), "
                 f"LibRaw scaled by the true ratio {r['baseline_psnr_db']:.2f} dB")
    if not r["trained_weights"]:
        lines.append("note: the built-in weights are UNTRAINED, so the image is not restored yet")
    return "\n".join(lines)


# ---------------------------------------------------------------- train
def _add_train(p: argparse.ArgumentParser) -> None:
    from dataclasses import fields

    from toolkit.training.config import RECIPES, TrainConfig

    p.add_argument("--out", default="runs/train", help="run folder: loss log and plot, best and final checkpoints")
    p.add_argument("--state", help="folder of the resume state (default: the user's cache, ~/.cache/llpack/train/<name of --out>, "
                                   "outside any work tree, so a new checkout goes on where the last one stopped)")
    p.add_argument("--init", help="checkpoint to start from when there is no resume state (fresh optimiser; a checkpoint "
                                  "of the same recipe also sets the step to go on from, and its record goes on)")
    p.add_argument("--max-minutes", type=float, help="stop cleanly after this many minutes (the state and the weights so far, latest.pt, are saved; "
                        "run again to go on; SIGTERM and Ctrl-C stop the same way)")
    p.add_argument("--stop-at", dest="stop_at", type=int, metavar="STEP",
                   help="stop cleanly after this step, the schedule still that of --steps (to re-run a run's first steps)")
    p.add_argument("--photos", dest="photos_dir", help="folder of extra clean sRGB photos to train on")
    p.add_argument("--no-resume", dest="resume", action="store_false", help="start over even if a resume state exists")
    defaults = {f.name: f.default for f in fields(TrainConfig)}
    p.add_argument("--recipe", choices=sorted(RECIPES), default=defaults["recipe"],
                   help="what to learn: " + "; ".join(f"{r.name}: {r.description}" for r in RECIPES.values()))
    later = {"crop": "; may grow on resume (larger patches late in a run: validation keeps the first crop)",
             "batch_size": "; may change on resume"}
    for name in ("steps", "batch_size", "crop", "seed", "pool_size", "amplifier_samples", "checkpoint_every", "validate_every", "warmup"):
        p.add_argument("--" + name.replace("_", "-"), type=int, default=defaults[name], help=f"default {defaults[name]}{later.get(name, '')}")
    p.add_argument("--lr", type=float, default=defaults["lr"], help=f"peak learning rate, default {defaults['lr']}")
    p.add_argument("--ema", type=float, default=defaults["ema"], metavar="DECAY",
                   help="validate, keep and write a moving average of the weights with this decay (0.999: about the last "
                        "1,000 steps) instead of the raw weights; may be turned on mid-run; default off")
    p.add_argument("--precision", choices=("fp32", "bf16"), default=defaults["precision"],
                   help="bf16: autocast (fast on CPUs with AMX or AVX-512 BF16, and on GPUs); default fp32")
    p.add_argument("--device", default="auto", help="auto (GPU if available), cpu or cuda")
    p.add_argument("--synthesis", choices=("auto", "numpy", "torch"), default=defaults["synthesis"],
                   help="where the sensor noise is made: numpy on a CPU thread, or torch on the training device "
                        "(auto: torch on a GPU, so data generation keeps up with it)")
    p.add_argument("--publish-default", action="store_true",
                   help="maintainers: install the result as the built-in weights, with its record and evaluation")


def _run_train(args: argparse.Namespace) -> dict:
    from dataclasses import fields

    from toolkit.training.config import TrainConfig
    from toolkit.training.trainer import default_state_dir, train

    options = {f.name: getattr(args, f.name) for f in fields(TrainConfig) if hasattr(args, f.name)}
    cfg = TrainConfig(**options)
    if args.max_minutes is not None and not args.max_minutes > 0:
        raise UserError(f"--max-minutes must be positive, not {args.max_minutes}")
    state = args.state or default_state_dir(args.out)
    result = train(cfg, args.out, resume=args.resume, show_progress=not args.quiet, state_dir=state, init=args.init,
                   stop_after_s=None if args.max_minutes is None else args.max_minutes * 60, command=" ".join(["llpack"] + sys.argv[1:]),
                   stop_at_step=args.stop_at)
    if args.publish_default:
        from toolkit.training.trainer import publish_default_weights

        result["published"] = publish_default_weights(args.out, show_progress=not args.quiet)
    return result


def _render_train(r: dict) -> str:
    if r.get("stopped_early"):
        return (f"stopped at step {r['steps']} as asked ({r['train_seconds']:.0f} s in all); weights so far {r['checkpoint']}; "
                f"state {r['state']}: run the same command to go on")
    return f"trained {r['steps']} steps in {r['train_seconds']:.0f} s; checkpoint {r['checkpoint']} (final L1 {r['final_l1']})"


def _add_publish(p: argparse.ArgumentParser) -> None:
    p.add_argument("weights", help="a finished run folder of llpack train, or weights it wrote (best.pt, a committed "
                                   "in-training .pt) with their JSON record beside them")


def _run_publish(args: argparse.Namespace) -> dict:
    from toolkit.training.trainer import publish_default_weights

    return publish_default_weights(args.weights, show_progress=not args.quiet)


def _render_publish(r: dict) -> str:
    true, auto = r["evaluation"]["true"]["model"], r["evaluation"]["auto"]
    return (f"installed {r['file']} ({r['recipe']}, step {r['steps']}): 42-image set {true['psnr_db']:.2f} dB / SSIM {true['ssim']:.3f} "
            f"at the true ratio, {auto['model']['psnr_db']:.2f} dB with --ratio auto")


# ---------------------------------------------------------------- evaluate
def _add_evaluate(p: argparse.ArgumentParser) -> None:
    p.add_argument("--checkpoint", help="checkpoint to evaluate; default: the built-in weights")
    p.add_argument("--ratio", choices=("auto", "true"), default="auto",
                   help="gain from the amplifier (auto) or the true exposure ratio (true)")
    p.add_argument("--out", default="runs/evaluate", help="folder for evaluation.json and grid.png")
    p.add_argument("--photos", help="evaluate on your own clean photos instead of the built-in held-out set")
    p.add_argument("--sets", default="",
                   help="extra held-out sets, comma-separated, always at the true ratio: detail (fine detail, milder noise), "
                        "clean (no noise at ratio 1: the ceiling), cameras (4 unseen cameras, tungsten to daylight, a balanced raw), "
                        "neutral (a colour chart's greys under a balanced raw and tungsten: is there a cast?)")
    p.add_argument("--limit", type=int, help="only the first N images of each set (quick checks)")
    p.add_argument("--tune-denoiser", action="store_true",
                   help="maintainers: score the LibRaw + denoiser baseline's strengths on training scenes, and stop")


def _comma_list(text: str | None) -> list[str]:
    """`--sets detail,clean` and the like: the non-empty items, stripped ([] for none)."""
    return [item.strip() for item in (text or "").split(",") if item.strip()]


def _run_evaluate(args: argparse.Namespace) -> dict:
    from toolkit.training.evaluate import evaluate, tune_denoiser

    if args.tune_denoiser:
        return {"denoiser_tuning": tune_denoiser()}
    return evaluate(args.checkpoint, args.ratio, args.out, args.photos, args.limit, show_progress=not args.quiet,
                    sets=_comma_list(args.sets))


def _render_evaluate(r: dict) -> str:
    if "denoiser_tuning" in r:
        scores = r["denoiser_tuning"]["scores_db"]
        return "LibRaw + non-local means on training scenes: " + ", ".join(f"strength {k}: {v:.2f} dB" for k, v in scores.items()) + \
            f"; best {r['denoiser_tuning']['best']}"
    head = f"{'':12}{'LLPackNet':>20}{'LibRaw baseline':>22}"
    rows = [f"{r['images']} held-out images, gain from {'the amplifier' if r['ratio_mode'] == 'auto' else 'the true ratio'}",
            head, f"{'':12}{'PSNR dB':>11}{'SSIM':>9}{'PSNR dB':>13}{'SSIM':>9}"]
    for key in r["model"]["per_ratio"]:
        m, b = r["model"]["per_ratio"][key], r["baseline"]["per_ratio"][key]
        rows.append(f"{'x' + key:12}{m['psnr_db']:11.2f}{m['ssim']:9.3f}{b['psnr_db']:13.2f}{b['ssim']:9.3f}")
    m, b = r["model"], r["baseline"]
    rows.append(f"{'overall':12}{m['psnr_db']:11.2f}{m['ssim']:9.3f}{b['psnr_db']:13.2f}{b['ssim']:9.3f}")
    rows.append(f"LLPackNet - baseline: {r['gain_db']:+.2f} dB")
    methods = r.get("methods", {}).get("overall")
    if methods:
        rows.append("with LibRaw + denoiser, colour-aligned PSNR and CIEDE2000: " + "; ".join(
            f"{name} {methods[key]['psnr_db']:.2f} dB / aligned {methods[key]['aligned_psnr_db']:.2f} dB / dE {methods[key]['ciede2000']:.2f}"
            for key, name in (("model", "LLPackNet"), ("libraw", "LibRaw"), ("denoised", "LibRaw + denoiser"))))
    if "exposure" in r:
        e = r["exposure"]
        rows.append(f"exposure: error median {e['error_stops_median']:.2f} stops, p90 {e['error_stops_p90']:.2f}; one-gain-aligned PSNR "
                    f"auto {e['gain_aligned_psnr_db']['auto']:.2f} dB vs true ratio {e['gain_aligned_psnr_db']['true_ratio']:.2f} dB")
    for name, s in r.get("sets", {}).items():
        rows.append(f"set {name}: {s['description']}")
        for group, g in s["groups"].items():
            rows.append(f"  {group:36}" + "  ".join(f"{label} {g[key]['psnr_db']:6.2f} dB ({g[key]['aligned_psnr_db']:6.2f} aligned, dE {g[key]['ciede2000']:5.2f})"
                                                   for key, label in (("model", "LLPackNet"), ("libraw", "LibRaw"), ("denoised", "+NLM"))))
        if "neutral_ab_worst" in s:
            w = s["neutral_ab_worst"]
            rows.append(f"  greys' worst |a*| or |b*| (no cast: <= 3): LLPackNet {w['model']:.2f}, LibRaw {w['libraw']:.2f}, "
                        f"+NLM {w['denoised']:.2f}")
    if "report" in r:
        rows.append(f"report {r['report']}" + (f", grid {r['grid']}" if "grid" in r else ""))
    return "\n".join(rows)


# ---------------------------------------------------------------- export
def _add_export(p: argparse.ArgumentParser) -> None:
    from targets import TARGETS

    which = p.add_mutually_exclusive_group(required=True)
    which.add_argument("--target", choices=sorted(TARGETS), help="deployment target")
    which.add_argument("--all", action="store_true", help="every target and precision (--out is then the parent folder)")
    p.add_argument("--precision", default="fp32", choices=("fp32", "fp16", "int8"),
                   help="fp32 (default), fp16 (TFLite: FP16 weights, FP16 arithmetic where the CPU has it) or int8")
    p.add_argument("--calibration", help="INT8: folder of your own RAW files to calibrate on (default: synthetic dark RAW data)")
    p.add_argument("--size", default="512x512", help="HxW input size of the artifact, multiples of 16 (default 512x512)")
    p.add_argument("--out", help="artifact folder (default runs/artifacts/TARGET-PRECISION-HxW)")
    p.add_argument("--checkpoint", help="weights to export; default: the built-in weights")
    p.add_argument("--allow-degraded", action="store_true", help="keep an artifact that misses its accuracy bar (marked in the manifest)")
    p.add_argument("--timeout", type=float, default=3600.0, help="--all: seconds one export may take before it is killed (default 3600)")
    p.add_argument("--no-reuse", dest="reuse", action="store_false", help="--all: rebuild artifacts that are already there and intact")


def _run_export(args: argparse.Namespace) -> dict:
    from toolkit.deploy.export import export, export_all

    if args.all:
        result = export_all(args.size, args.out or "runs/artifacts", args.checkpoint, args.calibration,
                            reuse=args.reuse, allow_degraded=args.allow_degraded, timeout=args.timeout)
        if result["failed"]:
            raise PartialFailure(result, f"{result['failed']} of {len(result['results'])} exports failed")
        return result
    return export(args.target, args.precision, args.size, args.out, args.checkpoint, args.allow_degraded, args.calibration)


def _render_export(r: dict) -> str:
    if "results" in r:
        lines = [f"{'target':<13}{'precision':<11}{'status':<9}{'MB':>7}{'max abs err':>13}{'dB vs FP32':>12}{'dB vs GT':>10}"
                 f"{'stress mean/worst':>19}"]
        for row in r["results"]:
            if row["status"] == "ok":
                v = row["validation"]
                stress = v.get("stress")
                lines.append(f"{row['target']:<13}{row['precision']:<11}{'DEGRADED' if v['degraded'] else 'ok':<9}{row['megabytes']:>7.2f}"
                             f"{v['max_abs_error']:>13.2e}{str(v['psnr_vs_fp32_db'] or 'same'):>12}{v['delta_psnr_vs_gt_db']:>+10.3f}"
                             + (f"{stress['mean_db']:>12.2f} / {stress['worst_db']:.2f}" if stress else ""))
            else:
                lines.append(f"{row['target']:<13}{row['precision']:<11}FAILED  {row['error']}")
        return "\n".join(lines)
    v = r["validation"]
    return (f"{r['target']} {r['precision']} {r['size'][0]}x{r['size'][1]} -> {r['path']} ({r['build']['megabytes']:.2f} MB)\n"
            f"vs FP32 PyTorch on {v['scenes']} held-out scenes: max abs error {v['max_abs_error']:.2e}, "
            f"PSNR {v['psnr_vs_fp32_db'] or 'identical'} dB, change vs ground truth {v['delta_psnr_vs_gt_db']:+.3f} dB"
            + (f"\nstress set ({v['stress']['images']} images): mean {v['stress']['mean_db']:.2f} dB, worst {v['stress']['worst_db']:.2f} dB "
               f"({v['stress']['worst_image']})" if v.get("stress") else "")
            + (" [DEGRADED]" if v["degraded"] else ""))


# ---------------------------------------------------------------- profile
def _add_profile(p: argparse.ArgumentParser) -> None:
    from targets import TARGETS

    p.add_argument("artifacts", nargs="*", metavar="ARTIFACT", help="artifact folders written by 'llpack export'")
    p.add_argument("--all", action="store_true", help="export (or reuse) every target and precision, then profile them all")
    p.add_argument("--target", dest="targets", action="append", choices=sorted(TARGETS), help="with --all: only this target (repeatable)")
    p.add_argument("--size", dest="sizes", action="append", help="HxW to profile at with --all (repeatable; default 512x512)")
    p.add_argument("--device", help="device profile from profiles/devices (threads, sizes): x86-2core, rpi4, rpi5")
    p.add_argument("--threads", type=int, help="inference threads (default: the device profile's, else the runtime's choice)")
    p.add_argument("--runs", type=int, default=10, help="timed runs per process (default 10)")
    p.add_argument("--warmup", type=int, default=2, help="untimed runs after the first (default 2)")
    p.add_argument("--repeats", type=int, default=2, help="fresh processes per model, for run-to-run spread (default 2)")
    p.add_argument("--timeout", type=float, help="seconds one model process may take before it is killed (default 900)")
    p.add_argument("--out", default="runs/profile", help="report folder (default runs/profile)")
    p.add_argument("--artifacts", dest="artifacts_root", default="runs/artifacts", help="where --all keeps the artifacts it exports (default runs/artifacts)")
    p.add_argument("--checkpoint", help="weights for --all exports and the reference; default: the built-in weights")
    p.add_argument("--no-sid", dest="sid", action="store_false", help="leave out the SID U-Net baseline")
    p.add_argument("--peak", action="store_true", help="also measure each runtime's FP32 convolution peak (GMAC/s) on this machine")


def _run_profile(args: argparse.Namespace) -> dict:
    from toolkit.bench.profile import profile

    result = profile(args.artifacts, args.all, args.sizes, args.device, args.threads, args.runs, args.warmup, args.repeats,
                     args.timeout, args.out, args.artifacts_root, args.sid,
                     args.checkpoint, args.targets, show_progress=not args.quiet, peak=args.peak)
    if result["failed"]:
        raise PartialFailure(result, f"{result['failed']} of {len(result['results'])} models failed (see the table)")
    return result


def _render_profile(r: dict) -> str:
    from toolkit.bench.report import render_table

    plots = ", ".join(r.get("plots") or []) or "none (matplotlib not installed)"
    return f"{render_table(r)}\nreport {r['path']}/report.json, report.md; plots: {plots}"


# ---------------------------------------------------------------- pipeline
def _add_pipeline(p: argparse.ArgumentParser) -> None:
    p.add_argument("--size", default="512x512", help="HxW (default 512x512; 2848x4256 is the paper's full resolution)")
    p.add_argument("--out", default="runs/pipeline", help="report folder (default runs/pipeline)")
    p.add_argument("--artifacts", dest="artifacts_root", default="runs/artifacts", help="artifact folder root (default runs/artifacts)")
    p.add_argument("--runs", type=int, default=5, help="timed runs per process (default 5)")
    p.add_argument("--repeats", type=int, default=2, help="fresh processes per model (default 2)")
    p.add_argument("--threads", type=int, help="inference threads (default: the runtime's choice)")


def _run_pipeline(args: argparse.Namespace) -> dict:
    from toolkit.bench.profile import profile

    result = profile([], True, [args.size], None, args.threads, args.runs, 1, args.repeats, None, args.out, args.artifacts_root,
                     True, show_progress=not args.quiet)
    if result["failed"]:
        raise PartialFailure(result, f"{result['failed']} of {len(result['results'])} models failed (see the table)")
    return result


# ---------------------------------------------------------------- report
def _add_report(p: argparse.ArgumentParser) -> None:
    p.add_argument("action", choices=("show", "merge"), help="show one report, or merge several machines' reports")
    p.add_argument("reports", nargs="+", metavar="REPORT", help="report.json files or the folders holding them")
    p.add_argument("--out", help="merge: folder for merged.json, merged.md and merged.png")


def _run_report(args: argparse.Namespace) -> dict:
    from toolkit.bench.report import merge_reports, read_report

    if args.action == "show":
        if len(args.reports) != 1:
            raise UserError("'report show' takes one report", "use 'report merge' for several")
        return read_report(args.reports[0])
    return merge_reports(args.reports, args.out)


def _render_report(r: dict) -> str:
    from toolkit.bench.report import render_merged, render_table

    if r.get("schema") == "llpacknet-edge/merged-report":
        return render_merged(r) + (f"\nwritten to {r['path']}" if r.get("path") else "")
    return render_table(r)


# ---------------------------------------------------------------- bundle
def _add_bundle(p: argparse.ArgumentParser) -> None:
    p.add_argument("--device", required=True, help="rpi4 or rpi5 (profiles/devices)")
    p.add_argument("--precision", help="keep only these precisions, comma-separated (default: every artifact the device "
                                        "profile lists; rpi5: TFLite FP32, FP16, INT8 and OpenVINO FP32)")
    p.add_argument("--target", help="keep only these targets, comma-separated (tflite, openvino)")
    p.add_argument("--size", help="HxW (default: the device profile's first size)")
    p.add_argument("--out", required=True, help="bundle folder; a .tar.gz of it is written beside it")
    p.add_argument("--artifacts", dest="artifacts_root", default="runs/artifacts", help="where artifacts are exported or reused")
    p.add_argument("--checkpoint", help="weights; default: the built-in weights")
    p.add_argument("--no-x86-profile", dest="profile_x86", action="store_false", help="leave out the x86 report (faster)")


def _run_bundle(args: argparse.Namespace) -> dict:
    from toolkit.bench.bundle_builder import build_bundle

    return build_bundle(args.device, args.out, _comma_list(args.precision), args.size, args.artifacts_root, args.checkpoint,
                        args.profile_x86, show_progress=not args.quiet, targets=_comma_list(args.target))


def _render_bundle(r: dict) -> str:
    return (f"bundle for {r['device']} ({r['size'][0]}x{r['size'][1]}, {', '.join(r['labels'])}): {r['path']} "
            f"({r['megabytes']} MB), archive {r['archive']}\non the board: see {r['path']}/README.md")


# ---------------------------------------------------------------- emulate
def _add_emulate(p: argparse.ArgumentParser) -> None:
    from toolkit.bench.emulation import add_emulate_arguments

    add_emulate_arguments(p)


def _run_emulate(args: argparse.Namespace) -> dict:
    from toolkit.bench.emulation import run_emulate

    return run_emulate(args)


def _render_emulate(r: dict) -> str:
    from toolkit.bench.emulation import render_emulate

    return render_emulate(r)


COMMANDS = [
    Command("enhance", "restore a dark RAW photo to sRGB", _add_enhance, _run_enhance, _render_enhance),
    Command("serve", "keep models loaded in a background process for later llpack enhance calls", _add_serve, _run_serve,
            _render_serve),
    Command("info", "describe the model and checkpoint", _add_info, _run_info, _render_info),
    Command("demo", "generate a dark sample RAW and restore it", _add_demo, _run_demo, _render_demo),
    Command("export", "convert the model to a deployable, validated artifact", _add_export, _run_export, _render_export),
    Command("profile", "latency, peak memory, parameters and quality of artifacts against FP32 PyTorch", _add_profile,
            _run_profile, _render_profile),
    Command("pipeline", "the whole chain: export every target FP32 and INT8, validate, profile", _add_pipeline, _run_pipeline,
            _render_profile),
    Command("report", "show a profiler report, or merge reports from several machines", _add_report, _run_report, _render_report),
    Command("bundle", "package a Raspberry Pi's artifacts (TFLite, OpenVINO), inputs and x86 answers", _add_bundle, _run_bundle,
            _render_bundle),
    Command("emulate", "run an llpack command as aarch64 code under qemu (Raspberry Pi 4/5)", _add_emulate, _run_emulate, _render_emulate),
    Command("train", "train LLPackNet on synthetic dark RAW data", _add_train, _run_train, _render_train),
    Command("publish", "maintainers: install trained weights as the built-in default, with their record and evaluation",
            _add_publish, _run_publish, _render_publish),
    Command("evaluate", "PSNR/SSIM on the held-out scenes against the LibRaw baseline", _add_evaluate, _run_evaluate, _render_evaluate),
]


def _common_flags(parser: argparse.ArgumentParser, defaults: bool) -> None:
    d = (lambda v: v) if defaults else (lambda v: argparse.SUPPRESS)
    g = parser.add_argument_group("output")
    g.add_argument("--json", action="store_true", default=d(False), help="print the result as JSON on stdout")
    g.add_argument("-q", "--quiet", action="store_true", default=d(False), help="print errors only")
    g.add_argument("-v", "--verbose", action="count", default=d(0), help="more detail (repeat for debug logs)")
    g.add_argument("--debug", action="store_true", default=d(False), help="show tracebacks for errors")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="llpack", description="LLPackNet Edge: restore dark RAW photos and deploy LLPackNet to devices."
    )
    parser.add_argument("--version", action="version", version=f"llpack {__version__}")
    _common_flags(parser, defaults=True)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for cmd in COMMANDS:
        p = sub.add_parser(cmd.name, help=cmd.help, description=cmd.help)
        cmd.add_arguments(p)
        _common_flags(p, defaults=False)
    return parser


def _configure_logging(args: argparse.Namespace) -> None:
    level = logging.ERROR if args.quiet else (logging.DEBUG if args.verbose > 1 else logging.INFO if args.verbose else logging.WARNING)
    handler = StderrHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(levelname)s: %(message)s" if args.verbose else "%(message)s"))
    log.handlers[:] = [handler]
    log.setLevel(level)
    log.propagate = False


@contextlib.contextmanager
def _library_output_to_stderr():
    """Converters print progress on stdout (some from C); keep stdout for our result alone."""
    sys.stdout.flush()
    try:
        saved = os.dup(1)
    except OSError:
        yield
        return
    python_stdout = sys.stdout
    try:
        os.dup2(2, 1)
        sys.stdout = sys.stderr
        yield
    finally:
        sys.stdout.flush()
        sys.stdout = python_stdout
        os.dup2(saved, 1)
        os.close(saved)


def _hand_to_warm_server(argv: list[str], args: argparse.Namespace) -> int | None:
    """`enhance` runs on a warm server when one is running (or `--warm` starts one): its exit code, or
    None to run here. Ray runs and `--cold` stay here."""
    if args.command != "enhance" or args.cold or args.ray:
        return None
    from toolkit.deploy import warm

    try:
        return warm.run_on_server(argv, start=args.warm is not None, idle_timeout=args.warm or DEFAULT_IDLE_TIMEOUT)
    except UserError as exc:  # a cache folder that cannot hold the socket: say so, run here
        log.warning("not using a warm server: %s", exc)
        return None


def main(argv: list[str] | None = None, backends=None) -> int:
    """`backends`: set by the warm server, whose requests run here with models kept loaded."""
    parser = build_parser()
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parser.parse_args(argv)
    if not args.command:
        parser.print_help(sys.stderr)
        return EXIT_USER
    _configure_logging(args)
    if backends is None:
        served = _hand_to_warm_server(argv, args)
        if served is not None:
            return served
    args.backends = backends
    command = next(c for c in COMMANDS if c.name == args.command)
    code = EXIT_OK
    try:
        with _library_output_to_stderr():
            result = command.run(args)
    except PartialFailure as partial:
        result, code = partial.result, EXIT_PARTIAL
        print(f"error: {partial}", file=sys.stderr)
    except UserError as exc:
        if args.debug:
            raise
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except Exception as exc:  # a bug: say so plainly, keep the traceback behind --debug
        if args.debug:
            raise
        print(f"internal error: {type(exc).__name__}: {exc} (re-run with --debug and report it)", file=sys.stderr)
        return EXIT_BUG
    try:
        if args.json:
            print(json.dumps(result, indent=2))
        elif not args.quiet:
            print(command.render(result))
        sys.stdout.flush()
    except BrokenPipeError:  # `llpack ... | head`: the reader left, which is not an error
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    return code


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
