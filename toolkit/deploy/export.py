"""`llpack export`: FP32 PyTorch -> deployable artifact, checked against FP32 before it is kept.

One function per step, each timed: load the reference, build with the target's converter in a
staging folder, run the artifact on held-out scenes next to the reference, write the manifest,
and only then move the folder into place. An artifact that misses its accuracy bar is not
written as if it were fine.
"""
from __future__ import annotations

import datetime
import importlib.metadata
import logging
import platform
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from toolkit.camera.bayer import Placement, features_to_image
from toolkit.camera.sizes import parse_size
from toolkit.data.metrics import psnr
from toolkit.errors import UserError, require_torch
from toolkit.isolation import inject_fault

from .artifact import io_contract, staged_folder, write_manifest

log = logging.getLogger(__name__)

# Accuracy bars: FP32 within 1e-4 of PyTorch; INT8 and FP16 at least 40 dB against the FP32 output
# and at most 0.3 dB lower PSNR against ground truth.
FP32_MAX_ABS = 1e-4
REDUCED_MIN_PSNR_VS_FP32 = 40.0
REDUCED_MAX_GT_LOSS_DB = 0.3
VALIDATION_SCENES = 4
# INT8 must also hold on the stress set (`toolkit.data.stress`): a mean and a worst image against FP32.
STRESS_MIN_MEAN_DB = 40.0
STRESS_MIN_WORST_DB = 32.0
STRESS_PER_CATEGORY = 2
STRESS_CONTENT = (768, 1024)  # stress scenes are made no larger, and padded into larger artifacts
IDENTICAL_DB = 99.0
# What the exported graph looks like; artifacts of another graph version are rebuilt, never reused.
# 2: the inner PixelShuffle as a one-hot transposed convolution (no 6-D transposes).
# 3 (TFLite): input and output in NHWC, the order TFLite computes in, so the graph has no TRANSPOSE.
GRAPH_VERSION = 2
GRAPH_VERSIONS = {"tflite": 3}


def graph_version(target: str) -> int:
    return GRAPH_VERSIONS.get(target, GRAPH_VERSION)


def meets_bar(precision: str, validation: dict) -> bool:
    if precision == "fp32":
        return validation["max_abs_error"] <= FP32_MAX_ABS
    psnr_vs_fp32 = validation["psnr_vs_fp32_db"]  # None: identical to FP32
    held_out = (psnr_vs_fp32 is None or psnr_vs_fp32 >= REDUCED_MIN_PSNR_VS_FP32) and validation["delta_psnr_vs_gt_db"] >= -REDUCED_MAX_GT_LOSS_DB
    stress = validation.get("stress")
    return held_out and stress is not None and stress["mean_db"] >= STRESS_MIN_MEAN_DB and stress["worst_db"] >= STRESS_MIN_WORST_DB


def _bar_text(precision: str) -> str:
    if precision == "fp32":
        return f"max abs error <= {FP32_MAX_ABS:g} against FP32 PyTorch"
    return (f">= {REDUCED_MIN_PSNR_VS_FP32:g} dB against FP32 and <= {REDUCED_MAX_GT_LOSS_DB:g} dB loss against ground truth on "
            f"held-out scenes; on the stress set a mean >= {STRESS_MIN_MEAN_DB:g} dB and every image >= {STRESS_MIN_WORST_DB:g} dB against FP32")


def _version(package: str) -> str | None:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return None


@dataclass
class ValidationImage:
    """One image an artifact is checked on: its packed input, what it should look like, where it sits
    in the padded input, and what its input asks of the network (`input_exposure`)."""

    name: str
    group: str  # "held_out", or the stress category
    packed: np.ndarray
    target: np.ndarray
    placement: Placement
    exposure: dict


def _images(scenes, size: tuple[int, int], white_balance: str, group=None) -> list[ValidationImage]:
    from toolkit.camera.bayer import input_exposure
    from toolkit.data.dataset import packed_input

    out = []
    for scene in scenes:
        gain = scene.gain if hasattr(scene, "gain") else scene.ratio
        packed, place = packed_input(scene.pair, gain, white_balance, size)
        out.append(ValidationImage(scene.name, group or scene.group, packed, scene.pair.target, place,
                                   input_exposure(scene.pair.normalised(), gain)))
    return out


def validation_inputs(size: tuple[int, int], count: int = VALIDATION_SCENES, white_balance: str = "none") -> list[ValidationImage]:
    """Held-out scenes padded to `size` (true ratio as gain), white-balanced for weights whose input
    contract asks for it: what every artifact is checked on."""
    from toolkit.data.dataset import evaluation_scenes

    scenes = evaluation_scenes(crop=size, crops_per_photo=1, ratios=(100, 300))[:count]
    return _images(scenes, size, white_balance, "held_out")


def stress_inputs(size: tuple[int, int], white_balance: str = "none") -> list[ValidationImage]:
    """The stress set (`toolkit.data.stress`, validation split) at the artifact's shape: what INT8
    artifacts must also survive. Scenes are made at most `STRESS_CONTENT` and padded beyond it."""
    from toolkit.data.stress import stress_scenes

    content = (min(size[0], STRESS_CONTENT[0]), min(size[1], STRESS_CONTENT[1]))
    return _images(stress_scenes(content, per_category=STRESS_PER_CATEGORY), size, white_balance)


def _summary(values: list[float]) -> dict:
    finite = [v for v in values if np.isfinite(v)]
    return {"mean_db": round(float(np.mean(finite)), 3) if finite else None,
            "worst_db": round(float(min(values)), 3) if values else None, "images": len(values)}


def validate(runner, images: list[ValidationImage], references: list[np.ndarray]) -> dict:
    """Compare an artifact with the FP32 reference outputs: the held-out scenes' mean PSNR against
    FP32 and change against ground truth, and, when stress images are given, the stress set's mean
    and worst image per category and over all (identical outputs count as 99 dB)."""
    max_abs, vs_ref, delta, stress = 0.0, [], [], {}
    for item, ref in zip(images, references):
        ours = runner.run(item.packed)
        image, ref_image = features_to_image(ours[0], item.placement), features_to_image(ref[0], item.placement)
        score = psnr(image, ref_image)
        if item.group == "held_out":
            max_abs = max(max_abs, float(np.max(np.abs(ours - ref))))
            vs_ref.append(score)
            delta.append(psnr(image, item.target) - psnr(ref_image, item.target))
        else:
            stress.setdefault(item.group, []).append((item.name, min(score, IDENTICAL_DB)))
    finite = [v for v in vs_ref if np.isfinite(v)]
    result = {
        "scenes": len(vs_ref),
        "psnr_vs_fp32_db": round(float(np.mean(finite)), 3) if finite else None,  # None: identical output
        "max_abs_error": max_abs,
        "delta_psnr_vs_gt_db": round(float(np.mean(delta)), 4),
    }
    if stress:
        scores = [item for group in stress.values() for item in group]
        worst = min(scores, key=lambda item: item[1])
        result["stress"] = {**_summary([v for _, v in scores]), "worst_image": worst[0],
                            "categories": {group: _summary([v for _, v in items]) for group, items in stress.items()}}
    return result


def validated_input(images: list[ValidationImage]) -> dict:
    """The most an input asked of the network among the images an artifact passed: `llpack enhance`
    warns when a photo asks more of an INT8 artifact."""
    return {"clipped_fraction": round(max(i.exposure["clipped_fraction"] for i in images), 6),
            "mean": round(max(i.exposure["mean"] for i in images), 6)}


def artifact_folder(root: str | Path, target: str, precision: str, size: tuple[int, int]) -> Path:
    """Where an artifact goes by default: ROOT/TARGET-PRECISION-HxW."""
    return Path(root) / f"{target}-{precision}-{size[0]}x{size[1]}"


def export(
    target_name: str,
    precision: str = "fp32",
    size: str | tuple[int, int] = "512x512",
    out: str | Path | None = None,
    checkpoint: str | Path | None = None,
    allow_degraded: bool = False,
    calibration: str | Path | None = None,
) -> dict:
    """Build, validate and write one artifact folder; returns its manifest."""
    from targets import get_target

    target = get_target(target_name)
    if precision not in target.precisions:
        raise UserError(f"{target.name} does not offer precision '{precision}'", f"choose from {', '.join(target.precisions)}")
    height, width = parse_size(size) if isinstance(size, str) else size
    out_dir = Path(out) if out else artifact_folder("runs/artifacts", target.name, precision, (height, width))
    torch = require_torch("exporting a model")
    target.check_runtime(f"exporting to {target.name}")
    target.check_converter()
    from toolkit.model.checkpoint import load_model
    from toolkit.model.llpacknet import PackedBody, amplifier_affine, count_parameters, macs_per_pixel

    model = load_model(checkpoint)
    body = PackedBody(model).eval()

    white_balance = model.input_contract["white_balance"]
    images = validation_inputs((height, width), white_balance=white_balance)
    if precision != "fp32":
        images += stress_inputs((height, width), white_balance)
    with torch.inference_mode():  # the FP32 answers every attempt is compared with, computed once
        references = [body(torch.from_numpy(item.packed)).numpy() for item in images]

    calibration_sets: dict[str, object] = {}
    attempts_to_try: list[dict | None] = [None]
    if precision == "int8":
        from quantization import raw_folder_calibration, remedies, synthetic_calibration

        if calibration:
            if not model.config.amplifier:  # the amplifier brings the user's RAW files to the network's range
                raise UserError(f"{model.variant} has no amplifier to set the gain of calibration RAW files",
                                "leave --calibration out to use the synthetic calibration set")
            calibration_sets["base"] = raw_folder_calibration(calibration, model.automatic_gain, white_balance=white_balance)
        else:
            calibration_sets["base"] = synthetic_calibration(white_balance=white_balance)
        attempts_to_try = list(remedies(target.name))

    with staged_folder(out_dir) as stage:
        inject_fault(f"export:{target.name}-{precision}")
        attempts = []
        for remedy in attempts_to_try:
            for old in stage.iterdir():
                old.unlink()
            start = time.perf_counter()
            calibration_set, remedy_text = None, ""
            if precision == "int8":
                from quantization import describe, quantize, with_stress

                remedy_text = f" with {describe(remedy)}"

                coverage = remedy.get("calibration", "base")  # "stress": plus the stress categories, made once
                if coverage not in calibration_sets:
                    calibration_sets[coverage] = with_stress(calibration_sets["base"], white_balance)
                calibration_set = calibration_sets[coverage]
                files = quantize(body, calibration_set, target.name, (height, width), stage, remedy, white_balance)
            else:
                files = target.build(body, (height, width), stage, precision)
            build_s = time.perf_counter() - start
            size_mb = sum((stage / f).stat().st_size for f in files) / 1e6
            log.info("%s %s: built %s in %.1f s (%.2f MB)%s", target.name, precision, ", ".join(files), build_s, size_mb,
                     remedy_text)
            start = time.perf_counter()
            runner = target.load(stage, {"precision": precision})
            validation = validate(runner, images, references)
            validation["seconds"] = round(time.perf_counter() - start, 2)
            stress = validation.get("stress")
            attempts.append({"settings": remedy, **{k: validation[k] for k in ("psnr_vs_fp32_db", "max_abs_error", "delta_psnr_vs_gt_db")},
                             **({"stress_mean_db": stress["mean_db"], "stress_worst_db": stress["worst_db"]} if stress else {})})
            if meets_bar(precision, validation):
                break
            log.warning("%s %s%s misses the bar (%s): PSNR vs FP32 %s dB%s, max abs error %.2e", target.name, precision,
                        remedy_text, _bar_text(precision), validation["psnr_vs_fp32_db"],
                        f", stress mean {stress['mean_db']} dB, worst {stress['worst_db']} dB ({stress['worst_image']})" if stress else "",
                        validation["max_abs_error"])
        degraded = not meets_bar(precision, validation)
        validation.update({"degraded": degraded, "bar": _bar_text(precision), "attempts": attempts})
        if precision == "int8":
            validation["validated_input"] = validated_input(images)
        if precision == "fp16":  # x86 CPUs without FP16 arithmetic check the FP16 weights only: say so
            validation["arithmetic"] = runner.runtime_details().get("arithmetic", "unknown")
        if degraded and not allow_degraded:
            raise UserError(
                f"{target.name} {precision} misses the accuracy bar ({_bar_text(precision)}) after {len(attempts)} attempt(s): "
                f"max abs error {validation['max_abs_error']:.2e}, {validation['psnr_vs_fp32_db']} dB against FP32"
                + (f", stress set mean {stress['mean_db']} dB, worst {stress['worst_db']} dB" if stress else "") + "; nothing was written",
                "re-run with --allow-degraded to keep it anyway (the manifest will say so)",
            )
        inputs, outputs = io_contract((height, width), amplifier_affine(model), model.config.sigmoid, target.layout,
                                      model.input_contract["white_balance"])
        if hasattr(runner, "io_quantization"):  # integer I/O: the caller quantises and dequantises
            quant = runner.io_quantization()
            for section, key in ((inputs, "input"), (outputs, "output")):
                section["dtype"] = quant[key]["dtype"]
                if quant[key]["dtype"] != "float32":
                    section["quantization"] = {**quant[key], "formula": "real = scale * (q - zero_point)"}
        manifest = {
            "target": target.name,
            "precision": precision,
            "size": [height, width],
            "model": {
                "variant": model.variant,
                "parameters": count_parameters(model),
                "macs_per_pixel": macs_per_pixel(),
                "graph_version": graph_version(target.name),
                "weights_sha256": model.checkpoint_info["sha256"],
                "trained": model.checkpoint_info["trained"],
            },
            "input": inputs,
            "output": outputs,
            "files": files,
            "runtime": {"name": target.runtime_package, "version": target.runtime_version()},
            "versions": {"llpacknet-edge": _version("llpacknet-edge"), "torch": str(torch.__version__),
                         "onnx": _version("onnx"), "openvino": _version("openvino"), "numpy": np.__version__,
                         "python": platform.python_version()},
            "build": {"seconds": round(build_s, 2), "megabytes": round(size_mb, 3),
                      "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")},
            "calibration": calibration_set.source if calibration_set else None,
            "validation": validation,
        }
        write_manifest(stage, manifest)
    log.info("%s %s: max abs error %.2e vs FP32, written to %s", target.name, precision, validation["max_abs_error"], out_dir)
    return {**manifest, "path": str(out_dir)}


def weights_sha256(checkpoint: str | Path | None) -> str | None:
    """The hash an artifact's manifest records for these weights (None: untrained fallback)."""
    from toolkit.fileio import file_sha256
    from toolkit.model.variants import DEFAULT_CHECKPOINT

    if checkpoint is None:
        return file_sha256(DEFAULT_CHECKPOINT) if DEFAULT_CHECKPOINT.exists() else None
    try:
        return file_sha256(checkpoint)
    except OSError as exc:
        from toolkit.errors import CheckpointError

        raise CheckpointError(f"cannot read the checkpoint {checkpoint} ({exc.strerror or exc})",
                              "give the path of an LLPackNet .pt/.pth file") from exc


def reusable_artifact(folder: Path, target: str, precision: str, size: tuple[int, int], weights: str | None,
                      calibration: str | Path | None = None, allow_degraded: bool = False) -> dict | None:
    """The manifest of a finished, intact artifact built from the same weights and settings, else None."""
    from .artifact import ArtifactError, read_manifest

    if weights is None or not (folder / "manifest.json").exists():
        return None
    try:
        manifest = read_manifest(folder)  # checks every file's checksum
    except ArtifactError:
        return None
    wanted_calibration = str(Path(calibration).resolve()) if calibration else None
    source = manifest.get("calibration")
    used = source.get("folder") if isinstance(source, dict) else None
    used = str(Path(used).resolve()) if used else None
    same = (manifest["target"] == target and manifest["precision"] == precision and manifest["size"] == list(size)
            and manifest["model"].get("weights_sha256") == weights and (allow_degraded or not manifest["validation"]["degraded"])
            and manifest["model"].get("graph_version") == graph_version(target) and (precision == "fp32" or used == wanted_calibration))
    return manifest if same else None


EXPORT_TIMEOUT_S = 3600.0


def export_isolated(target: str, precision: str, size: tuple[int, int], folder: Path, checkpoint: str | Path | None,
                    allow_degraded: bool, calibration: str | Path | None, timeout: float) -> dict:
    """One export in a fresh process (`llpack export ... --json`) under a time limit: a converter that
    segfaults or hangs fails this row only. A killed export's staging folder is removed."""
    import json
    import sys

    from toolkit.isolation import run_isolated

    command = [sys.executable, "-m", "toolkit.cli", "export", "--target", target, "--precision", precision,
               "--size", f"{size[0]}x{size[1]}", "--out", str(folder), "--json"]
    command += ["--checkpoint", str(checkpoint)] if checkpoint else []
    command += ["--calibration", str(calibration)] if calibration else []
    command += ["--allow-degraded"] if allow_degraded else []
    logs = folder.parent / "logs"
    log_path, out_path = logs / f"{folder.name}.log", logs / f"{folder.name}.json"
    outcome = run_isolated(command, log_path, timeout, stdout_path=out_path)
    if outcome.returncode == 0:
        return json.loads(out_path.read_text())
    for stale in folder.parent.glob(f".{folder.name}.*.partial"):  # what a killed build left behind
        shutil.rmtree(stale, ignore_errors=True)
    said = [line for line in log_path.read_text(errors="replace").splitlines() if line.startswith(("error: ", "internal error: "))]
    if outcome.returncode == 2 and said:  # the export's own one-line explanation
        raise UserError(said[-1][len("error: "):])
    raise UserError(outcome.reason(timeout, log_path) + (f": {said[-1]}" if said else ""))


def export_all(size: str | tuple[int, int] = "512x512", out_root: str | Path = "runs/artifacts",
               checkpoint: str | Path | None = None, calibration: str | Path | None = None, reuse: bool = True,
               only: list[str] | None = None, allow_degraded: bool = False, timeout: float = EXPORT_TIMEOUT_S) -> dict:
    """Every target and precision, each in its own process; a failure becomes a row with its reason.

    With `reuse`, a finished artifact of the same weights and settings whose checksums still hold
    is kept as it is, so an interrupted run picks up where it stopped. `allow_degraded` keeps INT8
    builds that miss the bar (their manifest says so): the profiler measures them, marked."""
    from targets import TARGETS

    height, width = parse_size(size) if isinstance(size, str) else size
    weights = weights_sha256(checkpoint) if reuse else None
    rows = []
    for target in TARGETS.values():
        if only and target.name not in only:
            continue
        for precision in target.precisions:
            folder = artifact_folder(out_root, target.name, precision, (height, width))
            start = time.perf_counter()
            try:
                manifest = reusable_artifact(folder, target.name, precision, (height, width), weights,
                                             calibration if precision == "int8" else None, allow_degraded)
                reused = manifest is not None
                if reused:
                    log.info("%s %s: reusing the verified artifact in %s", target.name, precision, folder)
                else:
                    log.info("%s %s: exporting to %s", target.name, precision, folder)
                    manifest = export_isolated(target.name, precision, (height, width), folder, checkpoint, allow_degraded,
                                               calibration if precision == "int8" else None, timeout)
                rows.append({"target": target.name, "precision": precision, "status": "ok", "path": str(folder),
                             "reused": reused, "seconds": round(time.perf_counter() - start, 1),
                             "megabytes": manifest["build"]["megabytes"], "validation": manifest["validation"]})
            except UserError as exc:
                rows.append({"target": target.name, "precision": precision, "status": "failed", "error": str(exc),
                             "seconds": round(time.perf_counter() - start, 1)})
                log.error("%s %s failed after %.1f s: %s", target.name, precision, time.perf_counter() - start, exc)
    return {"size": [height, width], "results": rows, "failed": sum(r["status"] != "ok" for r in rows)}
