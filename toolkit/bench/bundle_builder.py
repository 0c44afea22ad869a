"""Building device bundles on x86 (with torch): export or reuse the device's artifacts (TFLite and
OpenVINO, as its profile lists), then package them with held-out inputs, x86 answers and a wheel
of this toolkit. What a bundle holds and
how a board opens it is `bundle.py`.
"""
from __future__ import annotations

import datetime
import logging
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

import numpy as np

from toolkit.errors import UserError
from toolkit.fileio import atomic_path, atomic_write_bytes, atomic_write_json, file_sha256

from toolkit.deploy.export import REDUCED_MAX_GT_LOSS_DB, REDUCED_MIN_PSNR_VS_FP32

from .bundle import BUNDLE_FILE, BUNDLE_SCHEMA, BUNDLE_VERSION, FP32_PARITY, INT8_STEPS_WITHOUT_XNNPACK

log = logging.getLogger(__name__)

ROOT = Path(__file__).resolve().parents[2]


def _build_wheel(dest: Path) -> str | None:
    """A wheel of this toolkit, so the board installs exactly the code that built the bundle."""
    if not (ROOT / "pyproject.toml").exists():
        log.warning("no source tree beside the toolkit: the bundle carries no wheel (install llpacknet-edge on the board yourself)")
        return None
    dest = dest.resolve()  # pip runs in a temporary folder: a relative --out would put the wheel there
    dest.mkdir(parents=True, exist_ok=True)
    command = [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(dest), str(ROOT)]
    with tempfile.TemporaryDirectory() as build_dir:
        proc = subprocess.run(command, capture_output=True, text=True, cwd=build_dir)
    wheels = sorted(dest.glob("llpacknet_edge-*.whl"))
    if proc.returncode == 0 and wheels:
        return wheels[-1].name
    lines = (proc.stderr or "").strip().splitlines()
    said = [line.strip() for line in lines if line.strip().lower().startswith("error")] or lines[-1:]
    log.warning("could not build the toolkit's wheel (%s): the bundle carries none", "; ".join(said) or f"exit code {proc.returncode}")
    return None


# What each board has, and what follows for the runtimes (published facts; the emulated CI proof checks
# that every artifact runs and matches x86 on these CPU models, never how fast).
BOARD_ADVICE = {
    "rpi5": """The Cortex-A76 has FP16 arithmetic (Armv8.2-A) and dot-product instructions.
- `openvino-fp32`: OpenVINO compiles the FP32 IR to run in f16 on this CPU by itself (the profile shows
  `[f16]`). Published Raspberry Pi 5 figures for another small CNN put OpenVINO FP32 about 4x ahead of
  TFLite FP32 (Ultralytics' Raspberry Pi guide: 81 ms against 317 ms). Start here.
- `tflite-fp16`: FP16 weights (half the file) that ask XNNPACK for FP16 arithmetic, which the A76 has.
- `tflite-int8`: XNNPACK's INT8 kernels; OpenVINO runs INT8 IR in floating point on Arm, so no OpenVINO INT8 here.
- `tflite-fp32`: the full-precision baseline.""",
    "rpi4": """The Cortex-A72 has neither FP16 arithmetic nor dot-product instructions.
- `tflite-int8`: XNNPACK's INT8 kernels (NEON without dot products here): measure it against FP32.
- `openvino-fp32`: runs in f32 here (the profile shows `[f32]`); worth measuring against TFLite FP32.
- `tflite-fp32`: the full-precision baseline. An FP16 TFLite artifact would only run in FP32 here.""",
}


def _readme(info: dict) -> str:
    from targets import get_target

    wheel = info.get("wheel")
    extras = ",".join(dict.fromkeys(get_target(label.split("-")[0]).runtime_extra for label in info["labels"]))
    source = f"./wheels/{wheel}" if wheel else "llpacknet-edge"
    size = "x".join(str(v) for v in info["size"])
    return f"""# LLPackNet Edge bundle for {info['device']} ({size})

Built {info['created']} on {info['built_on']['cpu']} with llpacknet-edge {info['toolkit_version']}.
Every file's SHA-256 is in `bundle.json`; `llpack profile` refuses the bundle if one is missing or altered.
Artifacts: {', '.join(f'`{label}`' for label in info['labels'])}.

## On the board (64-bit Raspberry Pi OS, Python 3.11)

```bash
python3 -m venv ~/llpack && . ~/llpack/bin/activate
pip install "{source}[{extras}]"   # numpy, rawpy, psutil, tifffile + the runtimes (no torch)
llpack profile .  --device {info['device']} --out report-{info['device']}      # measure, check against x86
llpack report merge report-{info['device']} x86/report.json                      # side by side with this machine
llpack enhance inputs/{size}/sample.dng -o bright.png --model {info['artifacts'][0]}
```

`[runtime]` alone installs only TFLite (ai-edge-litert), `[openvino]` only OpenVINO: the profile measures
what is installed and lists the others as skipped, with the command that installs them.

## Which to use on this board

{BOARD_ADVICE.get(info['device'], 'Profile every artifact and keep the fastest that passes its parity check.')}

These are expectations, not measurements of this bundle: the toolkit's own proof for Raspberry Pi CPUs
is emulated (qemu user mode, Cortex-A72 and Cortex-A76), which checks that every artifact runs, computes
in the precision said and matches x86, and says nothing about speed.
`llpack profile` here gives the answer for this board; the table lists every artifact with the
precision it really computed in, its speed against `tflite-fp32`, and its quality against the x86
FP32 output.

Older images that only have tflite-runtime 2.14: `pip install "tflite-runtime==2.14.0" "numpy<2"` and
install the wheel with `--no-deps` plus `pip install rawpy psutil tifffile`; the toolkit uses
tflite-runtime when ai-edge-litert is missing. It creates no XNNPACK delegate for an int8-I/O model, so
INT8 runs on the reference kernels there, slower than FP32 (about 1.8x measured on x86) and up to
{INT8_STEPS_WITHOUT_XNNPACK} quantisation steps away from x86: `llpack profile` warns when this happens.

## What the profile checks

- Arithmetic in FP32 (FP32 artifacts, and FP16 weights on a CPU without FP16 arithmetic): outputs within
  {FP32_PARITY:g} of x86.
- Arithmetic in f16 (OpenVINO on a CPU with FP16, TFLite FP16 through XNNPACK there): >= {REDUCED_MIN_PSNR_VS_FP32:g} dB against
  the x86 FP32 images and <= {REDUCED_MAX_GT_LOSS_DB:g} dB lower PSNR against ground truth.
- INT8 identical to x86 through XNNPACK, within {INT8_STEPS_WITHOUT_XNNPACK} quantisation steps without it.
- PSNR/SSIM against the x86 FP32 PyTorch images (`inputs/{size}/reference.npz`) and against ground truth.
"""


def bundle_labels(device_profile: dict, precisions: list[str] | None = None, targets: list[str] | None = None) -> list[str]:
    """The artifacts (target-precision) a bundle for this device carries: the profile's list, narrowed."""
    labels = list(device_profile.get("bundle") or ["tflite-fp32", "tflite-int8"])
    for kind, wanted, position in (("precision", precisions, 1), ("target", targets, 0)):
        if not wanted:
            continue
        offered = sorted({label.split("-")[position] for label in labels})
        wrong = [w for w in wanted if w not in offered]
        if wrong:
            raise UserError(f"a {device_profile['name']} bundle has no {kind} {', '.join(wrong)}", f"choose from {', '.join(offered)}")
        labels = [label for label in labels if label.split("-")[position] in wanted]
    return labels


def build_bundle(device: str, out: str | os.PathLike, precisions: list[str] | None = None, size: str | tuple[int, int] | None = None,
                 artifacts_root: str | os.PathLike = "runs/artifacts", checkpoint: str | None = None, profile_x86: bool = True,
                 show_progress: bool = True, targets: list[str] | None = None) -> dict:
    """Export (or reuse) the device's artifacts (its profile's `bundle` list, narrowed to `precisions`
    and `targets`) and package them with inputs and x86 answers."""
    from profiles import load_device_profile
    from toolkit.camera.sizes import parse_size
    from toolkit.deploy.export import artifact_folder, export, reusable_artifact, weights_sha256
    from toolkit.errors import require_torch

    from .machine import describe_machine
    from .profile import prepare_inputs

    profile_info = load_device_profile(device)
    if "bundle" not in profile_info:
        raise UserError(f"device {device} has no bundle (it is not a board this machine builds for)",
                        "bundles are for the Raspberry Pi profiles: rpi4, rpi5")
    wanted = bundle_labels(profile_info, precisions, targets)
    height, width = parse_size(size) if isinstance(size, str) else tuple(size or parse_size(profile_info["sizes"][0]))
    torch = require_torch("building a bundle (it exports and records the x86 reference)")
    final = Path(out)
    if final.exists() and not (final / BUNDLE_FILE).exists():  # replacing it would delete someone's folder
        raise UserError(f"{final} exists and is not a bundle", "choose a new --out folder (an old bundle there is replaced)")
    weights = weights_sha256(checkpoint)

    from toolkit.deploy.artifact import read_manifest, staged_folder, white_balance_contract

    with staged_folder(final) as stage:
        labels = []
        for label in wanted:
            target_name, precision = label.split("-")
            source = artifact_folder(artifacts_root, target_name, precision, (height, width))
            if reusable_artifact(source, target_name, precision, (height, width), weights) is None:
                export(target_name, precision, (height, width), source, checkpoint)
            shutil.copytree(source, stage / "artifacts" / source.name)
            labels.append((label, f"artifacts/{source.name}"))
        inputs = stage / "inputs" / f"{height}x{width}"
        contract = white_balance_contract(read_manifest(stage / labels[0][1]))
        info_inputs = prepare_inputs(inputs, (height, width), contract)

        # The x86 answers: FP32 PyTorch images of the scenes, and every model's output for the sample.
        from targets import get_target
        from toolkit.camera.bayer import pack_network_input, to_network_grid
        from toolkit.camera.raw import read_mosaic
        from toolkit.data.synth import sample_scene
        from toolkit.deploy.artifact import camera_input_gains
        from toolkit.fileio import write_image
        from toolkit.model.checkpoint import load_model
        from toolkit.model.llpacknet import PackedBody

        from .worker import LLPackNetModel, load_scenes, write_references

        x86 = stage / "x86"
        x86.mkdir()
        manifest = read_manifest(stage / labels[0][1])
        mosaic = read_mosaic(inputs / "sample.dng")
        grid, _ = to_network_grid(mosaic.data, mosaic.pattern, size=(height, width))
        gains, ceiling = camera_input_gains(manifest, mosaic, info_inputs["sample_ratio"])
        packed = pack_network_input(grid, gains, ceiling=ceiling)
        np.save(x86 / "sample_packed.npy", packed)
        body = PackedBody(load_model(checkpoint)).eval()
        with torch.inference_mode():
            np.save(x86 / "torch-fp32.output.npy", body(torch.from_numpy(packed)).numpy())
            images = [LLPackNetModel.to_image(body(torch.from_numpy(p)).numpy(), place) for p, _, place in load_scenes(inputs / "scenes.npz")]
        write_references(inputs / "reference.npz", images)
        for label, folder in labels:
            runner = get_target(label.split("-")[0]).load(stage / folder, read_manifest(stage / folder))
            np.save(x86 / f"{label}.output.npy", runner.run(packed))
            runner = None
        write_image(x86 / "ground_truth.png", sample_scene(0, size=(height, width)).target)

        x86_report = None
        if profile_x86:
            from .profile import profile

            x86_report = profile([str(stage / folder) for _, folder in labels], runs=5, warmup=1, repeats=1,
                                 out=stage / ".x86-profile", artifacts_root=artifacts_root, sid=False, checkpoint=checkpoint,
                                 show_progress=show_progress)
            shutil.copy(stage / ".x86-profile" / "report.json", x86 / "report.json")
            shutil.rmtree(stage / ".x86-profile")
        wheel = _build_wheel(stage / "wheels")

        info = {
            "schema": BUNDLE_SCHEMA, "schema_version": BUNDLE_VERSION, "device": device,
            "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            "size": [height, width], "labels": [label for label, _ in labels],
            "precisions": list(dict.fromkeys(label.split("-")[1] for label, _ in labels)),
            "artifacts": [folder for _, folder in labels], "wheel": wheel,
            "toolkit_version": __import__("toolkit").__version__,
            "built_on": describe_machine(),
            "parity": {"fp32_max_abs": FP32_PARITY, "int8_steps_without_xnnpack": INT8_STEPS_WITHOUT_XNNPACK,
                       "f16_min_psnr_vs_fp32_db": REDUCED_MIN_PSNR_VS_FP32, "f16_max_gt_loss_db": REDUCED_MAX_GT_LOSS_DB},
        }
        atomic_write_bytes(stage / "README.md", _readme(info).encode())
        info["files"] = {str(p.relative_to(stage)): file_sha256(p) for p in sorted(stage.rglob("*")) if p.is_file()}
        atomic_write_json(stage / BUNDLE_FILE, info)
    archive = final.with_name(final.name + ".tar.gz")
    with atomic_path(archive) as tmp:
        with tarfile.open(tmp, "w:gz") as tar:
            tar.add(final, arcname=final.name)
    return {**info, "path": str(final), "archive": str(archive), "x86_report": bool(x86_report),
            "megabytes": round(sum(p.stat().st_size for p in final.rglob("*") if p.is_file()) / 1e6, 2)}
