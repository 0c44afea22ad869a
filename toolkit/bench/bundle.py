"""Device bundles: everything a Raspberry Pi needs to profile our artifacts (TFLite, OpenVINO) and
check them against this machine, in one folder (and one .tar.gz) with every file's SHA-256.

Layout of a bundle:
    bundle.json                     what it is, for which device, every file's checksum
    README.md                       the commands to run on the board
    artifacts/<target>-<p>-HxW/     the artifacts with their manifests
    inputs/HxW/                     sample.dng, scenes.npz/json (held-out scenes), reference.npz
                                    (the FP32 PyTorch images of those scenes, from x86)
    x86/sample_packed.npy           the exact network input of sample.dng
    x86/<label>.output.npy          each artifact's output for it on x86, and FP32 PyTorch's
    x86/ground_truth.png            the clean scene behind sample.dng
    x86/report.json                 the x86 profile of the same artifacts, for `llpack report merge`
    wheels/*.whl                    this toolkit, to pip install on the board
"""
from __future__ import annotations

import logging
import os
import shutil
import tarfile
import zlib
from dataclasses import dataclass
from pathlib import Path

from toolkit.errors import UserError
from toolkit.fileio import atomic_path, file_sha256, read_json_document

log = logging.getLogger(__name__)

BUNDLE_SCHEMA = "llpacknet-edge/bundle"
BUNDLE_VERSION = 1
BUNDLE_FILE = "bundle.json"
FP32_PARITY = 1e-5  # max abs difference of outputs computed in FP32 on both machines
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
