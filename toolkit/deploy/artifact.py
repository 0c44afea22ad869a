"""Artifact folders: model file(s) plus `manifest.json`, written atomically, validated on load.

The manifest says what the artifact is, its exact input/output contract (every pre- and
post-processing step with its constants, so the model file can be embedded without this
toolkit), the versions that built it, file checksums, and how it scored against FP32 PyTorch.
"""
from __future__ import annotations

import contextlib
import json
import math
import os
import re
import shutil
import tempfile
from pathlib import Path
from typing import Iterator

import numpy as np

from toolkit.camera.bayer import GRID, HISTOGRAM_EDGES, LAYOUTS, MIN_SIZE, mosaic_histogram
from toolkit.errors import UserError
from toolkit.fileio import atomic_write_json, file_sha256

SCHEMA = "llpacknet-edge/artifact"
SCHEMA_VERSION = 3  # 2 added the white_balance step, 3 the input clip and the stress validation; 1 and 2 are still read
READABLE_VERSIONS = (1, 2, 3)
MANIFEST = "manifest.json"
REQUIRED = ("schema", "schema_version", "target", "precision", "size", "model", "input", "output", "files", "validation")


class ArtifactError(UserError):
    """An artifact folder that is incomplete, altered or from an unknown schema."""


WHITE_BALANCE_STEP = {
    "file": {"step": "white_balance", "applied": True,
             "formula": "x[y, x] *= gains[c] for the CFA colour c of each site (R, G, B multipliers, G = 1)",
             "gains": "the RAW file's as-shot white balance (DNG AsShotNeutral: gains = 1 / neutral), else its daylight "
                      "balance, else a grey-world estimate of the mosaic; or gains the user gives"},
    "none": {"step": "white_balance", "applied": False, "formula": "none: these weights take the mosaic as read"},
}


def io_contract(size: tuple[int, int], amplifier: tuple[list[float], float] | None, sigmoid: bool,
                layout: str = "NCHW", white_balance: str = "none") -> tuple[dict, dict]:
    """The input and output sections of a manifest for an artifact of `size` = (H, W) whose model
    file takes and gives `layout` (NCHW, or NHWC for TFLite); `white_balance` is the weights'
    input contract ("file" or "none", `toolkit.model.checkpoint.input_contract`)."""
    height, width = size
    h, w = height // 16, width // 16
    nhwc = layout == "NHWC"
    gain: dict = {"manual": "gain = the exposure ratio (e.g. 100-300)"}
    if amplifier is not None:
        coefficients, intercept = amplifier
        gain["automatic"] = {
            "formula": "gain = intercept + sum_i coefficients[i] * histogram[i]; gain <= 0 -> 1e-4",
            "histogram": "fraction of the pixels of the normalised (and white-balanced, if applied), unpadded mosaic in each bin "
                         "[edges[i], edges[i+1]) (last bin closed), numpy.histogram rules",
            "edges": [float(e) for e in HISTOGRAM_EDGES],
            "coefficients": [float(c) for c in coefficients],
            "intercept": float(intercept),
        }
    inputs = {
        "name": "packed",
        "shape": [1, h, w, 256] if nhwc else [1, 256, h, w],
        "layout": layout,
        "dtype": "float32",
        "preprocessing": [
            {"step": "normalise", "formula": "x = max((raw - black[c]) / (white[c] - black[c]), 0)",
             "levels": "per CFA colour c, from the RAW file's metadata"},
            WHITE_BALANCE_STEP[white_balance],
            {"step": "bayer_phase", "formula": "reflect-pad 1 row on top if the pattern is GBRG or BGGR and 1 column "
             "on the left if it is GRBG or BGGR, so pixel (0, 0) is red (RGGB)"},
            {"step": "pad", "formula": f"reflect-pad at the bottom and right to {height} x {width}"},
            {"step": "gain", **gain},
            {"step": "pack", "formula": f"packed[{'y, x, 64*p + 8*i + j' if nhwc else '64*p + 8*i + j, y, x'}] = "
             "min(gain * x[16*y + 2*i + py, 16*x + 2*j + px], ceiling[p]), p = 2*py + px (planes R, G1, G2, B); ceiling[p] = 1, "
             "times the plane's white-balance gain when the white_balance step applies (full scale before the balance)"},
        ],
    }
    outputs = {
        "name": "features",
        "shape": [1, 2 * h, 2 * w, 192] if nhwc else [1, 192, 2 * h, 2 * w],
        "layout": layout,
        "dtype": "float32",
        "postprocessing": [
            {"step": "unpack", "formula": f"rgb[k, 8*y + i, 8*x + j] = "
             f"features[{'y, x, 3*(8*i + j) + k' if nhwc else '3*(8*i + j) + k, y, x'}]"},
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
    """Load and check an artifact's manifest: schema, the fields the runtime uses, every file's checksum.

    A manifest is input like any other file: wrong types, impossible sizes, file names outside
    the folder, unreadable JSON all end in one `ArtifactError`, never in an exception from deep
    inside the runtime.
    """
    root = Path(folder)
    path = root / MANIFEST
    if not root.is_dir():
        raise ArtifactError(f"{root} is not an artifact folder", "give the folder that 'llpack export' wrote")
    if not path.is_file():
        raise ArtifactError(f"{root} has no {MANIFEST}", "export it again with 'llpack export'")
    try:
        manifest = json.loads(path.read_bytes().decode("utf-8"))
    except OSError as exc:
        raise ArtifactError(f"cannot read {path} ({exc.strerror or exc})", "check the file's permissions") from exc
    except (ValueError, RecursionError) as exc:  # JSONDecodeError, bad UTF-8, huge integers, deep nesting
        raise ArtifactError(f"{path} is not valid JSON ({_short(exc)})", "export the artifact again") from exc
    if not isinstance(manifest, dict) or manifest.get("schema") != SCHEMA:
        raise ArtifactError(f"{path} is not an LLPackNet Edge manifest", "export the artifact again")
    version = manifest.get("schema_version")
    if type(version) is not int or version not in READABLE_VERSIONS:
        raise ArtifactError(
            f"{path} has schema version {_short(version)}, this toolkit reads versions {', '.join(map(str, READABLE_VERSIONS))}",
            "use the toolkit version that wrote it, or export again",
        )
    missing = [k for k in REQUIRED if k not in manifest]
    if missing:
        raise ArtifactError(f"{path} lacks {', '.join(missing)}", "export the artifact again")
    _check_fields(manifest, path)
    _check_files(root, path, manifest["files"])
    return manifest


MAX_SIDE = 1 << 15  # pixels per side of an artifact's input: far beyond any camera sensor
_SHA256 = re.compile(r"[0-9a-f]{64}")


def _short(value: object, limit: int = 80) -> str:
    text = str(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _bad(path: Path, field: str, wanted: str, value: object) -> ArtifactError:
    return ArtifactError(f"{path}: '{field}' must be {wanted}, not {_short(json.dumps(value))}",
                         "the manifest is damaged or hand-edited; export the artifact again")


def _number(value: object) -> bool:
    return type(value) in (int, float) and math.isfinite(value)


def _check_fields(manifest: dict, path: Path) -> None:
    """Type-check every manifest field that loading and running the artifact reads."""
    for key in ("target", "precision"):
        if not isinstance(manifest[key], str) or not manifest[key]:
            raise _bad(path, key, "a name", manifest[key])
    size = manifest["size"]
    if (not isinstance(size, list) or len(size) != 2
            or not all(type(s) is int and MIN_SIZE <= s <= MAX_SIDE and s % GRID == 0 for s in size)):
        raise _bad(path, "size", f"[height, width], multiples of {GRID} from {MIN_SIZE} to {MAX_SIDE}", size)
    model = manifest["model"]
    if not isinstance(model, dict):
        raise _bad(path, "model", "an object", model)
    if not isinstance(model.get("variant"), str):
        raise _bad(path, "model.variant", "a variant name", model.get("variant"))
    if type(model.get("trained")) is not bool:
        raise _bad(path, "model.trained", "true or false", model.get("trained"))
    for key in ("input", "output", "validation"):
        if not isinstance(manifest[key], dict):
            raise _bad(path, key, "an object", manifest[key])
    if type(manifest["validation"].get("degraded")) is not bool:
        raise _bad(path, "validation.degraded", "true or false", manifest["validation"].get("degraded"))
    layouts = [manifest[key].get("layout") for key in ("input", "output")]
    if not all(isinstance(v, str) and v in LAYOUTS for v in layouts) or layouts[0] != layouts[1]:
        raise _bad(path, "input.layout and output.layout", f"the same one of {', '.join(LAYOUTS)}",
                   layouts)
    steps = manifest["input"].get("preprocessing")
    if not isinstance(steps, list) or not all(isinstance(s, dict) and isinstance(s.get("step"), str) for s in steps):
        raise _bad(path, "input.preprocessing", "a list of steps", steps)
    gains = [s for s in steps if s["step"] == "gain"]
    if len(gains) != 1:
        raise ArtifactError(f"{path}: 'input.preprocessing' must have one gain step, not {len(gains)}", "export the artifact again")
    auto = gains[0].get("automatic")
    if auto is not None:
        _check_amplifier(auto, path)
    limits = manifest["validation"].get("validated_input")
    if limits is not None and (not isinstance(limits, dict) or not all(_number(limits.get(k)) and limits[k] >= 0
                                                                       for k in ("clipped_fraction", "mean"))):
        raise _bad(path, "validation.validated_input", "an object of two non-negative numbers, clipped_fraction and mean", limits)
    files = manifest["files"]
    if not isinstance(files, dict) or not files:
        raise _bad(path, "files", "an object of file names and SHA-256 digests", files)


def input_outside_validation(manifest: dict, exposure: dict) -> str | None:
    """Why an input (`toolkit.camera.bayer.input_exposure` of its mosaic and gain) lies outside what
    this INT8 artifact was validated on, in words; None when it lies inside, or for FP32 artifacts
    and manifests from before the stress set (they record no limits)."""
    limits = manifest["validation"].get("validated_input")
    if manifest.get("precision") != "int8" or limits is None:
        return None
    if exposure["clipped_fraction"] > limits["clipped_fraction"]:
        return (f"{100 * exposure['clipped_fraction']:.1f} % of the amplified input is clipped at full scale, more than the "
                f"{100 * limits['clipped_fraction']:.1f} % this INT8 artifact was validated on")
    if exposure["mean"] > limits["mean"]:
        return (f"the amplified input's mean level {exposure['mean']:.2f} is above the {limits['mean']:.2f} this INT8 "
                "artifact was validated on")
    return None


def _check_amplifier(auto: object, path: Path) -> None:
    field = "input.preprocessing[gain].automatic"
    if not isinstance(auto, dict):
        raise _bad(path, field, "an object", auto)
    edges, coefficients, intercept = auto.get("edges"), auto.get("coefficients"), auto.get("intercept")
    if (not isinstance(edges, list) or len(edges) < 2 or not all(_number(e) for e in edges)
            or any(b <= a for a, b in zip(edges, edges[1:]))):
        raise _bad(path, field + ".edges", "increasing finite numbers", edges)
    if not isinstance(coefficients, list) or len(coefficients) != len(edges) - 1 or not all(_number(c) for c in coefficients):
        raise _bad(path, field + ".coefficients", f"{len(edges) - 1} finite numbers (one per histogram bin)", coefficients)
    if not _number(intercept):
        raise _bad(path, field + ".intercept", "a finite number", intercept)


def _check_files(root: Path, path: Path, files: dict) -> None:
    """Every listed file is a regular file inside the folder (no symlink out of it) with its checksum."""
    inside = root.resolve()
    for name, digest in files.items():
        if (not name or "\\" in name or "\0" in name or Path(name).is_absolute() or ".." in Path(name).parts
                or Path(name).parts in ((), (".",))):
            raise ArtifactError(f"{path} names a file outside its folder ({_short(name)!r})", "do not use this artifact")
        if not isinstance(digest, str) or not _SHA256.fullmatch(digest):
            raise _bad(path, f"files.{name}", "a SHA-256 hex digest", digest)
        file = root / name
        try:
            resolved = file.resolve()
            if resolved != inside and inside not in resolved.parents:
                raise ArtifactError(f"{path}: {name} links outside its folder", "do not use this artifact")
            if not file.exists():
                raise ArtifactError(f"{root}: {name} is missing", "copy the whole artifact folder again")
            if not file.is_file():
                raise ArtifactError(f"{root}: {name} is not a regular file", "copy the whole artifact folder again")
            actual = file_sha256(file)
        except (OSError, RuntimeError) as exc:  # unreadable, name too long, a loop of links (RuntimeError before 3.13)
            raise ArtifactError(f"{root}: cannot read {_short(name)} ({getattr(exc, 'strerror', None) or exc})", "check the folder's permissions") from exc
        if actual != digest:
            raise ArtifactError(f"{root}: {name} does not match its checksum (altered or truncated)", "copy the artifact again")


def automatic_gain(manifest: dict, mosaic, white_balance=None) -> float | None:
    """The paper's amplifier from the constants in a manifest (numpy only); None if it has none.
    `mosaic`: a 2-D array, or a `Mosaic` (whose reader may have counted its levels already);
    `white_balance`: the (R, G, B) gains the mosaic is multiplied by first, if the artifact expects it."""
    gain_step = next(s for s in manifest["input"]["preprocessing"] if s["step"] == "gain")
    auto = gain_step.get("automatic")
    if auto is None:
        return None
    counts, size = mosaic_histogram(mosaic, np.asarray(auto["edges"], np.float64), white_balance)
    value = float(np.dot(counts / size, auto["coefficients"]) + auto["intercept"])
    return value if value > 0 else 1e-4


def white_balance_contract(manifest: dict) -> str:
    """"file" if the artifact's input is white-balanced before packing, else "none" (version 1 manifests
    have no such step: their weights take the mosaic as read)."""
    steps = [s for s in manifest["input"]["preprocessing"] if s["step"] == "white_balance"]
    return "file" if steps and steps[0].get("applied") is True else "none"


def camera_input_gains(manifest: dict, mosaic, ratio: float) -> tuple[np.ndarray, np.ndarray]:
    """(per-plane multipliers, per-plane ceiling) for packing a camera mosaic (`Mosaic`) the way
    `llpack enhance` does for this artifact with the file's white balance: the amplifier's gain (or
    `ratio` without one), times the white balance when the artifact takes balanced input, clipped
    at full scale before the balance (numpy only: what a board's profiler runs)."""
    from toolkit.camera.bayer import input_scaling
    from toolkit.camera.colour import choose_white_balance

    balance = choose_white_balance(mosaic, "file").gains if white_balance_contract(manifest) == "file" else None
    return input_scaling(automatic_gain(manifest, mosaic, balance) or ratio, balance)
