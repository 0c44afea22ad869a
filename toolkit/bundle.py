"""Device bundles: everything a Raspberry Pi needs to profile our TFLite artifacts and check them
against this machine, in one folder (and one .tar.gz) with every file's SHA-256.

Layout of a bundle:
    bundle.json                     what it is, for which device, every file's checksum
    README.md                       the commands to run on the board
    artifacts/tflite-<p>-HxW/       the artifacts with their manifests
    inputs/HxW/                     sample.dng, scenes.npz/json (held-out scenes), reference.npz
                                    (the FP32 PyTorch images of those scenes, from x86)
    x86/sample_packed.npy           the exact network input of sample.dng
    x86/<label>.output.npy          each artifact's output for it on x86, and FP32 PyTorch's
    x86/ground_truth.png            the clean scene behind sample.dng
    x86/report.json                 the x86 profile of the same artifacts, for `llpack report merge`
    wheels/*.whl                    this toolkit, to pip install on the board
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
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .errors import UserError
from .fileio import atomic_path, atomic_write_bytes, atomic_write_json, file_sha256, read_json_document

log = logging.getLogger(__name__)

BUNDLE_SCHEMA = "llpacknet-edge/bundle"
BUNDLE_VERSION = 1
BUNDLE_FILE = "bundle.json"
ROOT = Path(__file__).resolve().parents[1]
FP32_PARITY = 1e-5  # max abs difference of FP32 outputs between machines
INT8_STEPS_WITHOUT_XNNPACK = 8  # integer kernels other than XNNPACK round differently


class BundleError(UserError):
    """A bundle that is incomplete, altered, unsafe or for another runtime."""


@dataclass
class Bundle:
    root: Path
    info: dict

    @property
    def artifacts(self) -> list[Path]:
        return [self.root / a for a in self.info["artifacts"]]

    def inputs_folder(self, size: tuple[int, int]) -> Path:
        return self.root / "inputs" / f"{size[0]}x{size[1]}"

    def parity_for(self, label: str) -> dict:
        return {"input": str(self.root / "x86" / "sample_packed.npy"), "output": str(self.root / "x86" / f"{label}.output.npy"),
                "against": f"x86 ({self.info['built_on']['cpu']})"}


# ---------------------------------------------------------------- building (x86, with torch)
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

    from .errors import require_torch
    from .export import artifact_folder, export, reusable_artifact, weights_sha256
    from .machine import describe_machine
    from .profile import prepare_inputs
    from .sizes import parse_size

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

    from .artifact import staged_folder

    with staged_folder(final) as stage:
        labels = []
        for precision in sorted(set(precisions), key=["fp32", "int8"].index):
            source = artifact_folder(artifacts_root, "tflite", precision, (height, width))
            if reusable_artifact(source, "tflite", precision, (height, width), weights) is None:
                export("tflite", precision, (height, width), source, checkpoint)
            shutil.copytree(source, stage / "artifacts" / source.name)
            labels.append((f"tflite-{precision}", f"artifacts/{source.name}"))
        inputs = stage / "inputs" / f"{height}x{width}"
        info_inputs = prepare_inputs(inputs, (height, width))

        # The x86 answers: FP32 PyTorch images of the scenes, and every model's output for the sample.
        from targets import get_target

        from .artifact import automatic_gain, read_manifest
        from .bayer import pack_network_input, to_network_grid
        from .checkpoint import load_model
        from .model import PackedBody
        from .raw import read_mosaic
        from .synth import sample_scene
        from .fileio import write_image
        from .profile_worker import LLPackNetModel, load_scenes, write_references

        x86 = stage / "x86"
        x86.mkdir()
        manifest = read_manifest(stage / labels[0][1])
        mosaic = read_mosaic(inputs / "sample.dng")
        grid, _ = to_network_grid(mosaic.data, mosaic.pattern, size=(height, width))
        packed = pack_network_input(grid, automatic_gain(manifest, mosaic) or info_inputs["sample_ratio"])
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


# ---------------------------------------------------------------- opening (on the board, numpy only)
def is_bundle(path: str | os.PathLike) -> bool:
    p = Path(path)
    return (p.is_dir() and (p / BUNDLE_FILE).exists()) or (p.is_file() and p.name.endswith((".tar.gz", ".tgz")))


def safe_extract(archive: Path, dest: Path) -> Path:
    """Extract regular files and folders only, each checked to stay inside `dest` (no links, no devices,
    no absolute or `..` paths); returns the bundle folder inside. Works on Python 3.11.2 (no tar filters)."""
    try:
        tar = tarfile.open(archive, "r:*")
    except (tarfile.TarError, OSError) as exc:
        raise BundleError(f"{archive} is not a readable .tar.gz bundle ({exc})", "copy the archive again") from exc
    dest = dest.resolve()
    try:
        with tar:
            return _extract_members(tar, archive, dest)
    except (tarfile.TarError, EOFError, zlib.error) as exc:  # truncated or corrupted after the header
        raise BundleError(f"{archive} is damaged ({type(exc).__name__}: {exc})", "copy the archive again") from exc


def _extract_members(tar: tarfile.TarFile, archive: Path, dest: Path) -> Path:
    """Check every member first, so an unsafe archive leaves nothing behind; then copy the files."""
    members = tar.getmembers()
    for member in members:
        target = (dest / member.name).resolve()
        if Path(member.name).is_absolute() or ".." in Path(member.name).parts or not str(target).startswith(str(dest) + os.sep):
            raise BundleError(f"{archive} holds an unsafe path ({member.name}): nothing was extracted", "do not use this archive")
        if not (member.isfile() or member.isdir()):
            raise BundleError(f"{archive} holds a link or special file ({member.name}): nothing was extracted", "do not use this archive")
    dest.mkdir(parents=True, exist_ok=True)
    for member in members:
        target = dest / member.name
        if member.isdir():
            target.mkdir(parents=True, exist_ok=True)
            continue
        target.parent.mkdir(parents=True, exist_ok=True)
        source = tar.extractfile(member)
        with atomic_path(target) as tmp, open(tmp, "wb") as fh:
            shutil.copyfileobj(source, fh)
    roots = [p for p in dest.iterdir() if (p / BUNDLE_FILE).exists()]
    if len(roots) != 1:
        raise BundleError(f"{archive} does not contain one bundle folder with {BUNDLE_FILE}", "build it again with 'llpack bundle'")
    return roots[0]


def open_bundle(path: str | os.PathLike, extract_to: Path | None = None) -> Bundle:
    """Check a bundle folder (or extract a .tar.gz first): schema, every file's checksum, nothing extra that matters."""
    root = Path(path)
    if root.is_file():
        root = safe_extract(root, extract_to or root.with_name(root.name.split(".tar")[0].split(".tgz")[0] + ".extracted"))
    info_path = root / BUNDLE_FILE
    info = read_json_document(info_path, BUNDLE_SCHEMA, BUNDLE_VERSION, "bundle",
                              "copy the whole bundle again, built by 'llpack bundle' of the toolkit version in its wheels/", BundleError)
    files = info.get("files")
    if not isinstance(files, dict) or not isinstance(info.get("artifacts"), list):
        raise BundleError(f"{info_path} lacks its file list", "build the bundle again")
    for name, digest in files.items():
        if Path(name).is_absolute() or ".." in Path(name).parts:
            raise BundleError(f"{info_path} names a file outside the bundle ({name})", "do not use this bundle")
        file = root / name
        if not file.is_file():
            raise BundleError(f"bundle file {name} is missing", "copy the whole bundle again")
        if file_sha256(file) != digest:
            raise BundleError(f"bundle file {name} does not match its checksum (altered or truncated)", "copy the bundle again")
    return Bundle(root, info)
