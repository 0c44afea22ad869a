"""One model measured in a fresh process: `python -m toolkit.bench.worker SPEC.json`.

The profiler starts one of these per model and repeat, so memory, thread pools and crashes never
leak from one target into the next. It imports numpy, psutil and the one runtime it measures
(no torch unless the model is a PyTorch one), writes its result JSON atomically and exits;
a crash or hang is seen by the parent as a missing result.
"""
from __future__ import annotations

import json
import sys
import time
import traceback
from pathlib import Path

import numpy as np

from toolkit.camera.bayer import GRID, Placement, features_to_image, pack_window, plan_placement, to_network_grid
from toolkit.data.metrics import psnr, ssim
from toolkit.fileio import IMAGE_FORMATS, atomic_write_json, encode_image, to_integer_image
from toolkit.isolation import inject_fault
from toolkit.memory import OutputBuffers

STAGE_REPEATS = 3
CAMERA_IMAGES = OutputBuffers()  # post-processing writes each repeat into the image memory the last one let go of


# ---------------------------------------------------------------- memory
def _status_kb(field: str) -> int | None:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except OSError:
        pass
    return None


def rss_mb() -> float:
    kb = _status_kb("VmRSS")
    if kb is None:
        import psutil

        return psutil.Process().memory_info().rss / 2**20
    return kb / 1024


def reset_peak_rss() -> bool:
    """Restart the kernel's high-water mark (VmHWM) so the peak covers inference alone."""
    try:
        with open("/proc/self/clear_refs", "w") as fh:
            fh.write("5")
        return True
    except OSError:
        return False


def peak_rss_mb() -> float:
    """VmHWM of this process (ru_maxrss where /proc is missing; it cannot be reset)."""
    kb = _status_kb("VmHWM")
    if kb is None:
        import resource

        kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return kb / 1024


# ---------------------------------------------------------------- helpers
def latency_stats(times_ms: list[float]) -> dict:
    t = np.asarray(times_ms, np.float64)
    p10, p50, p90, p99 = np.percentile(t, [10, 50, 90, 99])
    return {"runs": int(t.size), "mean": float(t.mean()), "std": float(t.std(ddof=1)) if t.size > 1 else 0.0,
            "min": float(t.min()), "max": float(t.max()), "p10": float(p10), "p50": float(p50), "p90": float(p90), "p99": float(p99)}


def _median_ms(fn, repeats: int = STAGE_REPEATS):
    times, value = [], None
    for _ in range(repeats):
        value = None  # let go of the last result first, as a camera loop does
        start = time.perf_counter()
        value = fn()
        times.append((time.perf_counter() - start) * 1e3)
    return float(np.median(times)), value


def load_scenes(path: Path) -> list[tuple[np.ndarray, np.ndarray, Placement]]:
    """(packed input, ground truth, placement) per scene, from the profiler's scenes.npz."""
    with np.load(path, allow_pickle=False) as data:
        count = int(data["count"])
        return [(data[f"packed_{i}"], data[f"target_{i}"], Placement(*(int(v) for v in data[f"place_{i}"]))) for i in range(count)]


def write_references(path: Path, images: list[np.ndarray]) -> None:
    """The FP32 reference's images of the quality scenes, read back by `load_references`."""
    from toolkit.fileio import atomic_write_npz

    atomic_write_npz(path, count=np.array(len(images)), **{f"image_{i}": im.astype(np.float32) for i, im in enumerate(images)})


def load_references(path: Path) -> list[np.ndarray] | None:
    if not path.exists():
        return None
    with np.load(path, allow_pickle=False) as data:
        return [data[f"image_{i}"] for i in range(int(data["count"]))]


# ---------------------------------------------------------------- models
class LLPackNetModel:
    """An exported artifact (any target, the PyTorch reference included)."""

    def __init__(self, spec: dict):
        from targets import get_target
        from toolkit.deploy.artifact import read_manifest

        self.manifest = read_manifest(spec["path"])
        self.folder = Path(spec["path"])
        self.target = get_target(self.manifest["target"])
        self.target.check_runtime(f"profiling a {self.target.name} artifact")  # imports the runtime: the baseline
        self.threads = spec.get("threads")
        self.params = spec.get("params")

    def load(self):
        self.runner = self.target.load(self.folder, self.manifest, self.threads)

    def describe(self) -> dict:
        from .params import count_artifact_parameters

        model = self.manifest["model"]
        details = getattr(self.runner, "runtime_details", None)
        # Counted by the parent where it could, so reading the file (onnx, a second interpreter) adds nothing here.
        params = self.params if self.params is not None else count_artifact_parameters(self.folder, self.manifest)
        return {"params": params,
                "file_bytes": sum((self.folder / name).stat().st_size for name in self.manifest["files"]),
                "macs_per_pixel": model.get("macs_per_pixel"), "runtime": self.target.runtime_version(),
                "runtime_details": details() if details else None,
                "degraded": bool(self.manifest["validation"].get("degraded")),
                "stress_worst_db": (self.manifest["validation"].get("stress") or {}).get("worst_db")}

    def output_scale(self) -> float | None:
        """The int8 output's quantisation step, to express differences in steps."""
        quant = self.manifest["output"].get("quantization")
        return float(quant["scale"]) if quant else None

    def preprocess(self, mosaic, size, ratio: float):
        """The camera path of `Enhancer.enhance`: white balance (if the artifact takes it), gain and
        clip, then Pack straight from the unpadded mosaic, in the model's own layout (what
        `run_native` and `native_image` take)."""
        from toolkit.deploy.artifact import camera_input_gains

        place = plan_placement(*mosaic.shape, mosaic.pattern, size=size)
        rows, columns = (0, place.padded_height // GRID), (0, place.padded_width // GRID)
        gains, ceiling = camera_input_gains(self.manifest, mosaic, ratio)
        return pack_window(mosaic.data, place, rows, columns, gains, self.runner.layout, ceiling), place

    def run(self, packed: np.ndarray) -> np.ndarray:
        """NCHW in and out, whatever the model's layout (quality and parity checks)."""
        return self.runner.run(packed)

    def run_native(self, x: np.ndarray) -> np.ndarray:
        return self.runner.run_native(x)

    def native_image(self, output: np.ndarray, place: Placement, bits: int | None = None) -> np.ndarray:
        return features_to_image(output[0], place, bits=bits, layout=self.runner.layout, buffers=CAMERA_IMAGES)

    @staticmethod
    def to_image(output: np.ndarray, place: Placement, bits: int | None = None) -> np.ndarray:
        return features_to_image(output[0], place, bits=bits)


class SidUNetModel:
    """The SID U-Net baseline in PyTorch, seeded random weights (speed and memory only)."""

    def __init__(self, spec: dict):
        import torch

        self.torch, self.threads = torch, spec.get("threads")

    def load(self):
        from toolkit.model.sid_unet import create_sid_unet

        if self.threads:
            self.torch.set_num_threads(int(self.threads))
        self.model = create_sid_unet()

    def describe(self) -> dict:
        import io

        from toolkit.model.sid_unet import sid_macs_per_pixel

        buffer = io.BytesIO()
        self.torch.save(self.model.state_dict(), buffer)
        return {"params": sum(p.numel() for p in self.model.parameters()), "file_bytes": buffer.getbuffer().nbytes,
                "macs_per_pixel": sid_macs_per_pixel(), "runtime": f"torch {self.torch.__version__}", "degraded": False}

    def preprocess(self, mosaic, size, ratio: float):
        from toolkit.model.sid_unet import pack_2x2

        grid, place = to_network_grid(mosaic.data, mosaic.pattern, size=size)
        return pack_2x2(grid, ratio), place

    def run(self, packed: np.ndarray) -> np.ndarray:
        with self.torch.inference_mode():
            return self.model(self.torch.from_numpy(packed)).numpy()

    @staticmethod
    def to_image(output: np.ndarray, place: Placement, bits: int | None = None) -> np.ndarray:
        image = np.clip(place.crop(output[0]), 0.0, 1.0).transpose(1, 2, 0)
        return image if bits is None else to_integer_image(image, bits)

    run_native, native_image = run, to_image


# ---------------------------------------------------------------- the measurement
def measure(spec: dict) -> dict:
    from toolkit.camera.raw import read_mosaic

    inputs = Path(spec["inputs"])
    size = tuple(spec["size"])
    model = SidUNetModel(spec) if spec["kind"] == "sid-unet" else LLPackNetModel(spec)
    baseline = rss_mb()  # numpy, the toolkit's light modules and the runtime imported, nothing loaded

    start = time.perf_counter()
    model.load()
    load_ms = (time.perf_counter() - start) * 1e3
    inject_fault(spec["label"])
    facts = model.describe()

    decode_ms, mosaic = _median_ms(lambda: read_mosaic(inputs / "sample.dng"))
    pre_ms, (packed, place) = _median_ms(lambda: model.preprocess(mosaic, size, spec["ratio"]))

    reset = reset_peak_rss()
    start = time.perf_counter()
    output = model.run_native(packed)
    first_ms = (time.perf_counter() - start) * 1e3
    output = None
    for _ in range(spec["warmup"]):
        model.run_native(packed)
    times = []
    for _ in range(spec["runs"]):
        output = None  # let go of the last output first, as the camera path does (runners reuse its memory)
        start = time.perf_counter()
        output = model.run_native(packed)
        times.append((time.perf_counter() - start) * 1e3)
    peak = peak_rss_mb()
    post_ms, image = _median_ms(lambda: model.native_image(output, place, bits=8))
    output = None
    encode_ms = {}
    for fmt in IMAGE_FORMATS:
        try:
            encode_ms[fmt] = _median_ms(lambda fmt=fmt: encode_image(image, fmt))[0]
        except ImportError:  # an install without that format's encoder: the rest of the profile still holds
            continue
    image = None

    latency = latency_stats(times)
    result = {
        "status": "ok", **facts, "load_ms": load_ms, "first_ms": first_ms, "latency_ms": latency,
        "baseline_rss_mb": baseline, "peak_rss_mb": peak, "peak_rss_above_baseline_mb": peak - baseline,
        "peak_covers": "inference" if reset else "whole process",
        "stages_ms": {"decode": decode_ms, "preprocess": pre_ms, "inference": latency["p50"], "postprocess": post_ms},
        "encode_ms": encode_ms,  # the 8-bit image to each output format's file bytes (default settings)
        "quality": quality(model, spec, inputs) if spec["kind"] != "sid-unet" else None,
    }
    if spec.get("parity"):
        result["parity"] = parity(model, spec["parity"])
    return result


def parity(model: LLPackNetModel, expected: dict) -> dict:
    """This machine's output for the exact input another machine recorded, against that machine's output."""
    packed = np.load(expected["input"], allow_pickle=False)
    reference = np.load(expected["output"], allow_pickle=False)
    difference = float(np.max(np.abs(model.run(packed) - reference)))
    scale = model.output_scale()
    return {"against": expected["against"], "max_abs_diff": difference,
            "quantisation_steps": round(difference / scale, 3) if scale else None}


def quality(model: LLPackNetModel, spec: dict, inputs: Path) -> dict:
    """PSNR/SSIM against the FP32 reference's images and against ground truth, per scene and mean."""
    scenes = load_scenes(inputs / "scenes.npz")
    images = [model.to_image(model.run(packed), place) for packed, _, place in scenes]
    reference_path = inputs / "reference.npz"
    if spec.get("reference"):
        write_references(reference_path, images)
    references = load_references(reference_path)
    vs_gt = [psnr(image, target) for image, (_, target, _) in zip(images, scenes)]
    out = {"scenes": len(scenes), "psnr_vs_gt_db": float(np.mean(vs_gt)),
           "ssim_vs_gt": float(np.mean([ssim(image, target) for image, (_, target, _) in zip(images, scenes)])),
           "psnr_vs_fp32_db": None, "ssim_vs_fp32": None, "identical_to_fp32": None}
    if references is not None:
        vs_ref = [psnr(image, ref) for image, ref in zip(images, references)]
        finite = [v for v in vs_ref if np.isfinite(v)]
        reference_vs_gt = [psnr(ref, target) for ref, (_, target, _) in zip(references, scenes)]
        out.update(psnr_vs_fp32_db=float(np.mean(finite)) if finite else None, identical_to_fp32=not finite,
                   delta_psnr_vs_gt_db=float(np.mean(vs_gt) - np.mean(reference_vs_gt)),
                   ssim_vs_fp32=float(np.mean([ssim(image, ref) for image, ref in zip(images, references)])),
                   max_abs_vs_fp32=float(max(np.max(np.abs(image - ref)) for image, ref in zip(images, references))))
    return out


def main(argv: list[str] | None = None) -> int:
    spec_path = Path((argv or sys.argv[1:])[0])
    spec = json.loads(spec_path.read_text())
    try:
        result = measure(spec)
        code = 0
    except KeyboardInterrupt:
        return 130
    except BaseException as exc:  # reported as this model's failure; the profiler goes on with the others
        from toolkit.errors import UserError

        message = str(exc) if isinstance(exc, UserError) else f"{type(exc).__name__}: {exc}"
        traceback.print_exc(file=sys.stderr)
        result, code = {"status": "failed", "error": message}, 1
    atomic_write_json(spec["result"], result)
    return code


if __name__ == "__main__":
    sys.exit(main())
