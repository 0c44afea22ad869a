"""`llpack profile`: every target measured the same way, side by side with the FP32 reference.

Each model runs in its own fresh process (`toolkit.bench.worker`) under a time limit, once per
repeat, so memory and crashes never leak between targets and run-to-run noise is measured
rather than guessed. A crash, exception or hang becomes a `failed` row with its reason; the other
models are still measured. The parent prepares the inputs once per size (a sample DNG for the
camera stages, held-out scenes for quality) and needs neither torch nor a converter: on a
Raspberry Pi it is the same command.
"""
from __future__ import annotations

import datetime
import json
import logging
import os
import shutil
import sys
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from toolkit.camera.sizes import parse_size
from toolkit.deploy.artifact import read_manifest
from toolkit.errors import UserError
from toolkit.fileio import atomic_write_json, atomic_write_npz
from toolkit.isolation import child_env, run_isolated
from toolkit.progress import Progress

from .report import REFERENCE, SID_LABEL

log = logging.getLogger(__name__)

SAMPLE_SEED = 0
SAMPLE_RATIO = 300.0
QUALITY_SCENES = 4
DEFAULT_TIMEOUT_S = 900.0


@dataclass
class ModelSpec:
    """One model at one size, as the worker sees it."""

    label: str  # target-precision, e.g. openvino-int8
    kind: str  # artifact | sid-unet
    size: tuple[int, int]
    path: str | None = None
    target: str = ""
    precision: str = "fp32"
    extra: dict = field(default_factory=dict)

    @property
    def key(self) -> str:
        return f"{self.label}-{self.size[0]}x{self.size[1]}"


# ---------------------------------------------------------------- inputs
def _quality_scenes(size: tuple[int, int], white_balance: str = "none") -> tuple[list, str]:
    """Held-out evaluation scenes when their photos are installed, else synthetic dead-leaves scenes,
    packed for weights with this input contract (`white_balance` "file": balanced first)."""
    try:
        from toolkit.deploy.export import validation_inputs

        return [(item.packed, item.target, item.placement) for item in validation_inputs(size, QUALITY_SCENES, white_balance)], \
            "held-out evaluation photos (toolkit.data.dataset.evaluation_scenes, never trained on)"
    except (ImportError, UserError) as exc:  # a device without the photo packages
        log.info("evaluation photos unavailable (%s): scoring on synthetic dead-leaves scenes", exc)
    from toolkit.data.dataset import packed_input
    from toolkit.data.synth import sample_scene

    scenes = []
    crop = (min(size[0], 256), min(size[1], 384))
    for i in range(QUALITY_SCENES):
        pair = sample_scene(100 + i, size=crop, ratio=(100.0, 250.0, 300.0, 100.0)[i])
        packed, place = packed_input(pair, pair.ratio, white_balance, size)
        scenes.append((packed, pair.target, place))
    return scenes, "synthetic dead-leaves scenes (seeds 100-103)"


def prepare_inputs(folder: Path, size: tuple[int, int], white_balance: str = "none") -> dict:
    """Write the shared inputs of one size once: sample.dng (camera stages) and scenes.npz (quality),
    the scenes packed for weights with this input contract (made again when it changes)."""
    from toolkit.camera.dng import write_dng
    from toolkit.data.synth import sample_scene

    folder.mkdir(parents=True, exist_ok=True)
    sample = folder / "sample.dng"
    if not sample.exists():
        pair = sample_scene(SAMPLE_SEED, size=size, ratio=SAMPLE_RATIO)
        write_dng(sample, pair.raw, "RGGB", pair.sensor.black_level, pair.sensor.white_level,
                  as_shot_neutral=pair.unprocess.as_shot_neutral)
    scenes_file = folder / "scenes.npz"
    info_file = folder / "scenes.json"
    stale = not scenes_file.exists() or not info_file.exists() \
        or json.loads(info_file.read_text()).get("white_balance", "none") != white_balance
    if stale:
        scenes, source = _quality_scenes(size, white_balance)
        arrays = {}
        for i, (packed, target, place) in enumerate(scenes):
            arrays[f"packed_{i}"] = packed
            arrays[f"target_{i}"] = np.asarray(target, np.float32)
            arrays[f"place_{i}"] = np.array([place.top, place.left, place.height, place.width, place.padded_height, place.padded_width])
        atomic_write_npz(scenes_file, count=np.array(len(scenes)), **arrays)
        atomic_write_json(info_file, {"source": source, "count": len(scenes), "white_balance": white_balance})
    return {"sample": str(sample), "sample_ratio": SAMPLE_RATIO, **json.loads(info_file.read_text())}


def input_contract(specs: list["ModelSpec"]) -> str:
    """The white-balance contract the LLPackNet artifacts among `specs` share ("none" without any);
    artifacts of one size that disagree cannot share one set of quality inputs."""
    from toolkit.deploy.artifact import read_manifest, white_balance_contract

    contracts = {white_balance_contract(read_manifest(s.path)) for s in specs if s.kind == "artifact" and s.path}
    if len(contracts) > 1:
        raise UserError("these artifacts take different inputs (white-balanced and as read)",
                        "profile artifacts of weights with the same input contract together")
    return contracts.pop() if contracts else "none"


# ---------------------------------------------------------------- which models
def _torch_available() -> bool:
    """Whether torch really imports (not merely whether a folder of that name is on the path)."""
    try:
        import torch  # noqa: F401
    except ImportError:
        return False
    return True


def artifact_spec(folder: str | os.PathLike) -> ModelSpec:
    manifest = read_manifest(folder)
    return ModelSpec(f"{manifest['target']}-{manifest['precision']}", "artifact", tuple(manifest["size"]), str(folder),
                     manifest["target"], manifest["precision"])


def _runnable(bundle) -> tuple[list[ModelSpec], list[dict]]:
    """A bundle's artifacts whose runtime is installed here, and a `skipped` row (with the install
    command) for each of the others; a bundle none of whose runtimes is installed is refused."""
    from targets import get_target
    from toolkit.errors import MissingDependencyError

    runnable, skipped, errors = [], [], []
    device = bundle.info["device"]
    for folder in bundle.artifacts:
        spec = artifact_spec(folder)
        try:
            get_target(spec.target).check_runtime(f"profiling the {device} bundle's {spec.label}")
        except MissingDependencyError as exc:
            errors.append(exc)
            skipped.append({"label": spec.label, "size": list(spec.size), "status": "skipped", "error": str(exc)})
            continue
        runnable.append(spec)
    if errors and not runnable:
        extras = ",".join(dict.fromkeys(exc.extra for exc in errors))
        packages = " or ".join(dict.fromkeys(exc.package for exc in errors))
        raise UserError(f"profiling the {device} bundle needs {packages}, and none is installed",
                        f'install with: pip install "llpacknet-edge[{extras}]"')
    return runnable, skipped


def collect_models(artifacts: list[str], all_targets: bool, sizes: list[tuple[int, int]], artifacts_root: Path,
                   sid: bool, checkpoint: str | None = None, targets: list[str] | None = None,
                   bundle_specs: list[ModelSpec] = ()) -> tuple[list[ModelSpec], list[dict]]:
    """The models to measure, the FP32 reference first at every size; export failures become rows.

    A bundle brings its own reference (x86 PyTorch answers), so no local reference or SID is added
    at its size: the comparison is with the machine that built it."""
    from toolkit.deploy.export import artifact_folder, export_all

    specs, failures = list(bundle_specs), []
    for folder in artifacts:
        specs.append(artifact_spec(folder))
    bundle_sizes = {s.size for s in bundle_specs}
    wanted_sizes = [s for s in dict.fromkeys(list(sizes) + [s.size for s in specs]) if s not in bundle_sizes]
    have_torch = _torch_available()
    for size in wanted_sizes:
        if all_targets:
            if not have_torch:
                raise UserError("--all exports every target first, which needs PyTorch",
                                'install it with: pip install "llpacknet-edge[export]", or name artifact folders instead')
            # A build that misses its accuracy bar is still measured, marked DEGRADED in every table.
            built = export_all(size, artifacts_root, checkpoint, only=targets, allow_degraded=True)
            for row in built["results"]:
                if row["status"] == "ok":
                    specs.append(artifact_spec(row["path"]))
                else:
                    failures.append({"label": f"{row['target']}-{row['precision']}", "size": list(size), "error": row["error"],
                                     "stage": "export"})
        if have_torch and not any(s.label == REFERENCE and s.size == size for s in specs):
            from toolkit.deploy.export import export, reusable_artifact, weights_sha256

            folder = artifact_folder(artifacts_root, "torch", "fp32", size)
            if reusable_artifact(folder, "torch", "fp32", size, weights_sha256(checkpoint)) is None:
                export("torch", "fp32", size, folder, checkpoint)
            specs.append(artifact_spec(folder))
        if sid and have_torch:
            specs.append(ModelSpec(SID_LABEL, "sid-unet", size, target="sid-unet", precision="fp32"))
    unique = {s.key: s for s in specs}  # one of each label and size
    order = sorted(unique.values(), key=lambda s: (s.size[0] * s.size[1], s.label != REFERENCE, s.kind == "sid-unet", s.label))
    return order, failures


# ---------------------------------------------------------------- running workers
def worker_python() -> list[str] | None:
    """How to start a worker's Python: LLPACK_WORKER_PYTHON (a JSON list, e.g. a qemu command under
    emulation, where no binfmt handler starts an aarch64 executable by itself), else this interpreter."""
    text = os.environ.get("LLPACK_WORKER_PYTHON")
    if not text:
        return None
    try:
        command = json.loads(text)
    except json.JSONDecodeError:
        command = None
    if not isinstance(command, list) or not command or not all(isinstance(c, str) for c in command):
        raise UserError("LLPACK_WORKER_PYTHON must be a JSON list of strings, e.g. [\"/usr/bin/python3\"]", "fix or unset it")
    return command


def run_worker(spec: ModelSpec, run_dir: Path, inputs: dict, repeat: int, options: dict) -> dict:
    """Measure one model once in a fresh process; any way it can fail becomes {'status': 'failed', 'error': ...}."""
    work = run_dir / "work"
    logs = run_dir / "logs"
    work.mkdir(parents=True, exist_ok=True)
    logs.mkdir(parents=True, exist_ok=True)
    name = f"{spec.key}-r{repeat}"
    result_path = work / f"{name}.result.json"
    result_path.unlink(missing_ok=True)
    job = {"label": spec.label, "kind": spec.kind, "path": spec.path, "size": list(spec.size), "inputs": inputs["folder"],
           "ratio": inputs["sample_ratio"], "threads": options["threads"], "runs": options["runs"], "warmup": options["warmup"],
           "reference": spec.label == REFERENCE, "result": str(result_path), **spec.extra}
    spec_path = work / f"{name}.spec.json"
    atomic_write_json(spec_path, job)
    command = list(options.get("python_prefix") or [sys.executable]) + ["-m", "toolkit.bench.worker", str(spec_path)]
    env = child_env()
    if options["threads"]:
        env.setdefault("OMP_NUM_THREADS", str(options["threads"]))
    log_path = logs / f"{name}.log"
    outcome = run_isolated(command, log_path, options["timeout"], env)
    if result_path.exists():
        result = json.loads(result_path.read_text())
    else:
        result = {"status": "failed", "error": outcome.reason(options["timeout"], Path("logs") / log_path.name)}
    result["seconds"] = round(outcome.seconds, 2)
    return result


def measure_peaks(runtimes: list[str], run_dir: Path, threads: int | None, timeout: float) -> dict:
    """Each runtime's FP32 convolution peak on this machine, each in its own fresh process."""
    peaks = {}
    for runtime in runtimes:
        out_path = run_dir / "work" / f"peak-{runtime}.json"
        outcome = run_isolated(list(worker_python() or [sys.executable]) + ["-m", "toolkit.bench.peak", runtime, str(threads or 0)],
                               run_dir / "logs" / f"peak-{runtime}.log", timeout, child_env(), stdout_path=out_path)
        lines = out_path.read_text().strip().splitlines() if out_path.exists() else []
        try:
            peaks[runtime] = json.loads(lines[-1]) if outcome.returncode == 0 and lines else {"error": outcome.reason(timeout)}
        except json.JSONDecodeError:
            peaks[runtime] = {"error": "no result (see logs)"}
    return peaks


def profile(
    artifacts: list[str] | None = None,
    all_targets: bool = False,
    sizes: list[str | tuple[int, int]] | None = None,
    device: str | None = None,
    threads: int | None = None,
    runs: int = 10,
    warmup: int = 2,
    repeats: int = 2,
    timeout: float | None = None,
    out: str | os.PathLike = "runs/profile",
    artifacts_root: str | os.PathLike = "runs/artifacts",
    sid: bool = True,
    checkpoint: str | None = None,
    targets: list[str] | None = None,
    show_progress: bool = True,
    peak: bool = False,
) -> dict:
    """Measure artifacts (and always the FP32 PyTorch reference, where torch is installed); write the report."""
    from .machine import describe_machine
    from .report import build_report, write_report

    profile_info = None
    if device:
        from profiles import load_device_profile

        profile_info = load_device_profile(device)
        threads = threads or profile_info["threads"]
        if not sizes and not artifacts:
            sizes = profile_info["sizes"][:1]
    if runs < 1 or warmup < 0 or repeats < 1 or (timeout is not None and timeout <= 0):
        raise UserError("--runs and --repeats must be at least 1, --warmup at least 0 and --timeout positive")
    artifacts = list(artifacts or [])
    if not artifacts and not all_targets:
        raise UserError("nothing to profile", "name artifact folders or a bundle, or pass --all to export and profile every target")
    parsed = [parse_size(s) if isinstance(s, str) else tuple(s) for s in (sizes or ([] if artifacts else ["512x512"]))]
    run_dir = Path(out)
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UserError(f"cannot create the report folder {run_dir} ({exc.strerror})", "pass --out with a writable folder") from exc

    from .bundle import is_bundle, open_bundle

    bundles = []
    for index, path in enumerate(a for a in artifacts if is_bundle(a)):
        extract_to = run_dir / f"bundle-{index}"
        shutil.rmtree(extract_to, ignore_errors=True)  # an earlier run's extraction: never mixed with this one
        bundles.append(open_bundle(path, extract_to))
    bundle_specs, inputs, skipped = [], {}, []
    for bundle in bundles:
        if profile_info is None:
            from profiles import load_device_profile

            profile_info = load_device_profile(bundle.info["device"])
            threads = threads or profile_info["threads"]
        runnable, missing = _runnable(bundle)
        skipped += missing
        for spec in runnable:
            spec.extra["parity"] = bundle.parity_for(spec.label)
            bundle_specs.append(spec)
            folder_in = bundle.inputs_folder(spec.size)
            inputs[spec.size] = {"folder": str(folder_in), "sample": str(folder_in / "sample.dng"), "sample_ratio": SAMPLE_RATIO,
                                 **json.loads((folder_in / "scenes.json").read_text()), "from_bundle": str(bundle.root)}
    plain = [a for a in artifacts if not is_bundle(a)]
    specs, failures = collect_models(plain, all_targets, parsed, Path(artifacts_root), sid, checkpoint, targets, bundle_specs)
    failures += skipped
    for size in dict.fromkeys(s.size for s in specs):
        if size in inputs:
            continue
        folder = run_dir / "inputs" / f"{size[0]}x{size[1]}"
        (folder / "reference.npz").unlink(missing_ok=True)  # quality is scored against this run's reference only
        inputs[size] = {"folder": str(folder), **prepare_inputs(folder, size, input_contract([s for s in specs if s.size == size]))}
    from .params import count_artifact_parameters

    for spec in specs:  # read from each model file here, so no worker's memory includes the reading
        if spec.kind == "artifact":
            try:
                spec.extra["params"] = count_artifact_parameters(spec.path, read_manifest(spec.path))
            except Exception as exc:  # e.g. a runtime too old for the file: the worker counts, or fails only its row
                log.info("%s: parameters will be counted by its worker (%s)", spec.key, exc)
    options = {"threads": threads, "runs": runs, "warmup": warmup,
               "timeout": float(timeout) if timeout is not None else DEFAULT_TIMEOUT_S, "python_prefix": worker_python()}
    progress = Progress(len(specs) * repeats, "profile", enabled=show_progress, every_s=0.0)
    measured: dict[str, list[dict]] = {s.key: [] for s in specs}
    done = 0
    started = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
    for repeat in range(repeats):  # round robin: a noisy minute spreads over all models, not one
        for spec in specs:
            result = run_worker(spec, run_dir, inputs[spec.size], repeat, options)
            measured[spec.key].append(result)
            done += 1
            note = (f"{spec.key}: p50 {result['latency_ms']['p50']:.1f} ms" if result["status"] == "ok"
                    else f"{spec.key}: FAILED ({result['error']})")
            progress.update(done, note)
    peaks = None
    if peak:  # after the models, on the same quiet machine, with the same threads
        runtimes = sorted({"torch" if s.kind == "sid-unet" else s.target for s in specs})
        peaks = measure_peaks(runtimes, run_dir, threads, options["timeout"])
    report = build_report(specs, measured, failures, inputs, options, repeats,
                          describe_machine(threads), profile_info, started, peaks)
    write_report(run_dir, report)
    return {**report, "path": str(run_dir)}
