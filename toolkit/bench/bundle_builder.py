"""Building device bundles on x86 (with torch): export or reuse the device's TFLite artifacts, then
package them with held-out inputs, x86 answers and a wheel of this toolkit. What a bundle holds and
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

from .bundle import BUNDLE_FILE, BUNDLE_SCHEMA, BUNDLE_VERSION, FP32_PARITY, INT8_STEPS_WITHOUT_XNNPACK

log = logging.getLogger(__name__)

ROOT = Path(__file__).resolve().parents[2]


def _build_wheel(dest: Path) -> str | None:
    """A wheel of this toolkit, so the board installs exactly the code that built the bundle."""
    if not (ROOT / "pyproject.toml").exists():
        log.warning("no source tree beside the toolkit: the bundle carries no wheel (install llpacknet-edge on the board yourself)")
        return None
    dest.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as build_dir:
        command = [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(dest), str(ROOT)]
        proc = subprocess.run(command, capture_output=True, text=True, cwd=build_dir)
    wheels = sorted(dest.glob("llpacknet_edge-*.whl"))
    if proc.returncode != 0 or not wheels:
        log.warning("could not build the toolkit's wheel (%s): the bundle carries none", (proc.stderr or "").strip().splitlines()[-1:])
        return None
    return wheels[-1].name


def _readme(info: dict) -> str:
    wheel = info.get("wheel")
    install = (f'pip install "./wheels/{wheel}[runtime]"' if wheel else 'pip install "llpacknet-edge[runtime]"')
    size = "x".join(str(v) for v in info["size"])
    return f"""# LLPackNet Edge bundle for {info['device']} ({size})

Built {info['created']} on {info['built_on']['cpu']} with llpacknet-edge {info['toolkit_version']}.
Every file's SHA-256 is in `bundle.json`; `llpack profile` refuses the bundle if one is missing or altered.

## On the board (64-bit Raspberry Pi OS, Python 3.11)

```bash
python3 -m venv ~/llpack && . ~/llpack/bin/activate
{install}          # numpy, rawpy, psutil, tifffile + ai-edge-litert (no torch)
llpack profile .  --device {info['device']} --out report-{info['device']}      # measure, check against x86
llpack report merge report-{info['device']} x86/report.json                      # side by side with this machine
llpack enhance inputs/{size}/sample.dng -o bright.png --model artifacts/tflite-int8-{size}
```

Older images that only have tflite-runtime 2.14: `pip install "tflite-runtime==2.14.0" "numpy<2"` and
install the wheel with `--no-deps` plus `pip install rawpy psutil tifffile`; the toolkit uses
tflite-runtime when ai-edge-litert is missing.

## Which INT8 is fast where

- ai-edge-litert (recommended): the INT8 artifact runs through XNNPACK, several times faster than FP32,
  and its output equals the x86 output bit for bit.
- tflite-runtime 2.14: creates no XNNPACK delegate for an int8-I/O model, so INT8 runs on the
  reference kernels, slower than FP32 there (about 1.8x measured on x86) and up to
  {INT8_STEPS_WITHOUT_XNNPACK} quantisation steps away from x86. `llpack profile` warns when this happens: use the FP32
  artifact on such an image, or install ai-edge-litert.

## What the profile checks

- FP32 outputs within {FP32_PARITY:g} of x86; INT8 identical to x86 through XNNPACK, within {INT8_STEPS_WITHOUT_XNNPACK}
  quantisation steps without it.
- PSNR/SSIM against the x86 FP32 PyTorch images (`inputs/{size}/reference.npz`) and against ground truth.
"""


def build_bundle(device: str, out: str | os.PathLike, precisions: list[str] | None = None, size: str | tuple[int, int] | None = None,
                 artifacts_root: str | os.PathLike = "runs/artifacts", checkpoint: str | None = None, profile_x86: bool = True,
                 show_progress: bool = True) -> dict:
    """Export (or reuse) the device's TFLite artifacts and package them with inputs and x86 answers."""
    from profiles import load_device_profile
    from toolkit.camera.sizes import parse_size
    from toolkit.deploy.export import artifact_folder, export, reusable_artifact, weights_sha256
    from toolkit.errors import require_torch

    from .machine import describe_machine
    from .profile import prepare_inputs

    profile_info = load_device_profile(device)
    if "tflite" not in profile_info["targets"]:
        raise UserError(f"device {device} does not run TFLite artifacts", "bundles are for the Raspberry Pi profiles: rpi4, rpi5")
    precisions = precisions or ["fp32", "int8"]
    wrong = [p for p in precisions if p not in ("fp32", "int8")]
    if wrong:
        raise UserError(f"unknown precision {', '.join(wrong)}", "use --precision fp32,int8")
    height, width = parse_size(size) if isinstance(size, str) else tuple(size or parse_size(profile_info["sizes"][0]))
    torch = require_torch("building a bundle (it exports and records the x86 reference)")
    final = Path(out)
    if final.exists() and not (final / BUNDLE_FILE).exists():  # replacing it would delete someone's folder
        raise UserError(f"{final} exists and is not a bundle", "choose a new --out folder (an old bundle there is replaced)")
    weights = weights_sha256(checkpoint)

    from toolkit.deploy.artifact import read_manifest, staged_folder, white_balance_contract

    with staged_folder(final) as stage:
        labels = []
        for precision in sorted(set(precisions), key=["fp32", "int8"].index):
            source = artifact_folder(artifacts_root, "tflite", precision, (height, width))
            if reusable_artifact(source, "tflite", precision, (height, width), weights) is None:
                export("tflite", precision, (height, width), source, checkpoint)
            shutil.copytree(source, stage / "artifacts" / source.name)
            labels.append((f"tflite-{precision}", f"artifacts/{source.name}"))
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
            runner = get_target("tflite").load(stage / folder, read_manifest(stage / folder))
            np.save(x86 / f"{label}.output.npy", runner.run(packed))
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
            "size": [height, width], "precisions": [label.split("-")[1] for label, _ in labels],
            "artifacts": [folder for _, folder in labels], "wheel": wheel,
            "toolkit_version": __import__("toolkit").__version__,
            "built_on": describe_machine(), "parity": {"fp32_max_abs": FP32_PARITY, "int8_steps_without_xnnpack": INT8_STEPS_WITHOUT_XNNPACK},
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
