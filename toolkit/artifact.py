"""Artifact folders: model file(s) plus `manifest.json`, written atomically, validated on load.

The manifest says what the artifact is, its exact input/output contract (every pre- and
post-processing step with its constants, so the model file can be embedded without this
toolkit), the versions that built it, file checksums, and how it scored against FP32 PyTorch.
"""
from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Iterator

import numpy as np

from .bayer import HISTOGRAM_EDGES
from .errors import UserError
from .fileio import atomic_write_json, file_sha256

SCHEMA = "llpacknet-edge/artifact"
SCHEMA_VERSION = 1
MANIFEST = "manifest.json"
REQUIRED = ("schema", "schema_version", "target", "precision", "size", "model", "input", "output", "files", "validation")


class ArtifactError(UserError):
    """An artifact folder that is incomplete, altered or from an unknown schema."""


def io_contract(size: tuple[int, int], amplifier: tuple[list[float], float] | None, sigmoid: bool) -> tuple[dict, dict]:
    """The input and output sections of a manifest for an artifact of `size` = (H, W)."""
    height, width = size
    gain: dict = {"manual": "gain = the exposure ratio (e.g. 100-300)"}
    if amplifier is not None:
        coefficients, intercept = amplifier
        gain["automatic"] = {
            "formula": "gain = intercept + sum_i coefficients[i] * histogram[i]; gain <= 0 -> 1e-4",
            "histogram": "fraction of the pixels of the normalised, unpadded mosaic in each bin "
                         "[edges[i], edges[i+1]) (last bin closed), numpy.histogram rules",
            "edges": [float(e) for e in HISTOGRAM_EDGES],
            "coefficients": [float(c) for c in coefficients],
            "intercept": float(intercept),
        }
    inputs = {
        "name": "packed",
        "shape": [1, 256, height // 16, width // 16],
        "layout": "NCHW",
        "dtype": "float32",
        "preprocessing": [
            {"step": "normalise", "formula": "x = max((raw - black[c]) / (white[c] - black[c]), 0)",
             "levels": "per CFA colour c, from the RAW file's metadata"},
            {"step": "bayer_phase", "formula": "reflect-pad 1 row on top if the pattern is GBRG or BGGR and 1 column "
             "on the left if it is GRBG or BGGR, so pixel (0, 0) is red (RGGB)"},
            {"step": "pad", "formula": f"reflect-pad at the bottom and right to {height} x {width}"},
            {"step": "gain", **gain},
            {"step": "pack", "formula": "packed[64*p + 8*i + j, y, x] = gain * x[16*y + 2*i + py, 16*x + 2*j + px], "
             "p = 2*py + px (planes R, G1, G2, B)"},
        ],
    }
    outputs = {
        "name": "features",
        "shape": [1, 192, height // 8, width // 8],
        "layout": "NCHW",
        "dtype": "float32",
        "postprocessing": [
            {"step": "unpack", "formula": "rgb[k, 8*y + i, 8*x + j] = features[3*(8*i + j) + k, y, x]"},
            {"step": "crop", "formula": "undo the bayer_phase and pad steps: rows top..top+H0, columns left..left+W0"},
            {"step": "clip", "range": [0.0, 1.0]},
            {"step": "encode", "colour_space": "sRGB (the network's output already has the sRGB curve)"},
        ],
        "sigmoid_applied": bool(sigmoid),
    }
    return inputs, outputs


@contextlib.contextmanager
def staged_folder(final: Path) -> Iterator[Path]:
    """Build an artifact in a hidden sibling folder; move it into place only when complete."""
    final.parent.mkdir(parents=True, exist_ok=True)
    stage = Path(tempfile.mkdtemp(prefix=f".{final.name}.", suffix=".partial", dir=final.parent))
    try:
        yield stage
        if final.exists():
            old = final.with_name(f".{final.name}.old")
            shutil.rmtree(old, ignore_errors=True)
            os.replace(final, old)
            os.replace(stage, final)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(stage, final)
    finally:
        shutil.rmtree(stage, ignore_errors=True)


def write_manifest(folder: Path, manifest: dict) -> None:
    manifest = {"schema": SCHEMA, "schema_version": SCHEMA_VERSION, **manifest}
    manifest["files"] = {name: file_sha256(folder / name) for name in manifest["files"]}
    atomic_write_json(folder / MANIFEST, manifest)


def read_manifest(folder: str | os.PathLike) -> dict:
    """Load and check an artifact's manifest: schema, required fields, every file's checksum."""
    root = Path(folder)
    path = root / MANIFEST
    if not root.is_dir():
        raise ArtifactError(f"{root} is not an artifact folder", "give the folder that 'llpack export' wrote")
    if not path.exists():
        raise ArtifactError(f"{root} has no {MANIFEST}", "export it again with 'llpack export'")
    try:
        manifest = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ArtifactError(f"{path} is not valid JSON ({exc})", "export the artifact again") from exc
    if not isinstance(manifest, dict) or manifest.get("schema") != SCHEMA:
        raise ArtifactError(f"{path} is not an LLPackNet Edge manifest", "export the artifact again")
    if manifest.get("schema_version") != SCHEMA_VERSION:
        raise ArtifactError(
            f"{path} has schema version {manifest.get('schema_version')}, this toolkit reads version {SCHEMA_VERSION}",
            "use the toolkit version that wrote it, or export again",
        )
    missing = [k for k in REQUIRED if k not in manifest]
    if missing:
        raise ArtifactError(f"{path} lacks {', '.join(missing)}", "export the artifact again")
    for name, digest in manifest["files"].items():
        file = root / name
        if Path(name).is_absolute() or ".." in Path(name).parts:
            raise ArtifactError(f"{path} names a file outside its folder ({name})", "do not use this artifact")
        if not file.exists():
            raise ArtifactError(f"{root}: {name} is missing", "copy the whole artifact folder again")
        if file_sha256(file) != digest:
            raise ArtifactError(f"{root}: {name} does not match its checksum (altered or truncated)", "copy the artifact again")
    return manifest


def automatic_gain(manifest: dict, mosaic: np.ndarray) -> float | None:
    """The paper's amplifier from the constants in a manifest (numpy only); None if it has none."""
    gain_step = next(s for s in manifest["input"]["preprocessing"] if s["step"] == "gain")
    auto = gain_step.get("automatic")
    if auto is None:
        return None
    counts, _ = np.histogram(mosaic, bins=np.asarray(auto["edges"], np.float64))
    value = float(np.dot(counts / mosaic.size, auto["coefficients"]) + auto["intercept"])
    return value if value > 0 else 1e-4
