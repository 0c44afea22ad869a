"""A bounded fuzz run: hostile RAW, .npy and artifact files end in a documented error, nothing else.

Every case must either succeed with a sane result or raise a `toolkit.errors.UserError` subclass
(one line, what to do); any other exception, a hang or an unpickled object is a failure. Each
test runs a fixed number of hypothesis cases (the constants below; the counts are printed, see
`pytest -s`), small enough that the whole file takes about a minute on two busy cores.

  DNG_CASES       mutated and truncated DNG files (TIFF header, IFD entries, tag values, pixels)
  BLOB_CASES      random bytes saved as .dng/.arw/.nef/.cr2/.npy, some with real magic numbers
  NPY_CASES       mutated .npy files: headers, dtypes, shapes, pickled objects (never unpickled)
  MANIFEST_CASES  mutated manifest.json of a real ONNX Runtime artifact, read by read_manifest
  BACKEND_CASES   the same and mutated model files, loaded and run by ArtifactBackend

FUZZ_SCALE=N multiplies every count (a deeper local run, e.g. FUZZ_SCALE=8: about 5 minutes).
"""
from __future__ import annotations

import copy
import hashlib
import io
import json
import os
import re
import shutil
import struct
import tempfile
import time
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from toolkit.camera.bayer import PATTERNS
from toolkit.errors import UserError

DNG_CASES = int(os.environ.get("FUZZ_SCALE", "1")) * 1200
BLOB_CASES = int(os.environ.get("FUZZ_SCALE", "1")) * 400
NPY_CASES = int(os.environ.get("FUZZ_SCALE", "1")) * 1000
MANIFEST_CASES = int(os.environ.get("FUZZ_SCALE", "1")) * 800
BACKEND_CASES = int(os.environ.get("FUZZ_SCALE", "1")) * 150
CASE_SECONDS = 10.0  # one case taking longer than this counts as a hang (normal cases take milliseconds)

INTERESTING = (0, 1, 2, 3, 4, 7, 8, 15, 16, 0x7F, 0x80, 0xFF, 0x100, 0x7FFF, 0x8000, 0xFFFF, 0x10000,
               0x7FFFFFFF, 0x80000000, 0xFFFFFFFE, 0xFFFFFFFF)
RAW_SUFFIXES = (".dng", ".arw", ".nef", ".cr2")
MAGIC = (b"", b"II*\x00", b"MM\x00*", b"II*\x00\x08\x00\x00\x00", b"\x93NUMPY\x01\x00", b"\x93NUMPY\x02\x00",
         b"PK\x03\x04", b"FUJIFILM", b"IIRO", b"IIU\x00", b"\x00MRM", b"FOVb", b"II\x1a\x00\x00\x00HEAPCCDR")
CHECK = settings(deadline=None, suppress_health_check=list(HealthCheck), database=None)

counts: Counter = Counter()


class Blob(bytes):
    """Bytes that hypothesis reports briefly (length and head) when a case fails."""

    def __repr__(self) -> str:
        return f"Blob({len(self)} bytes: {bytes(self[:160])!r}{'...' if len(self) > 160 else ''})"


@pytest.fixture(scope="module", autouse=True)
def report_counts():
    yield
    print("\nfuzz cases run: " + ", ".join(f"{name} {n}" for name, n in sorted(counts.items())))


@pytest.fixture(scope="module")
def scratch():
    folder = Path(tempfile.mkdtemp(prefix="llpack-fuzz-"))
    yield folder
    shutil.rmtree(folder, ignore_errors=True)


def documented(name: str, call):
    """Run one case: a result, or None for a documented refusal; any other exception fails the test."""
    counts[name] += 1
    start = time.perf_counter()
    try:
        result = call()
    except UserError as exc:
        text = str(exc)
        assert text and "\n" not in text and "Traceback" not in text, f"not one line: {text!r}"
        result = None
    seconds = time.perf_counter() - start
    assert seconds < CASE_SECONDS, f"one case took {seconds:.1f} s (a hang?)"
    return result


def assert_sane_mosaic(mosaic) -> None:
    data = mosaic.data
    assert isinstance(data, np.ndarray) and data.dtype == np.float32 and data.ndim == 2
    assert min(data.shape) >= 32
    assert np.isfinite(data).all() and data.min() >= 0
    assert mosaic.pattern in PATTERNS
    assert len(mosaic.black_level) == 4 and all(np.isfinite(b) for b in mosaic.black_level)
    assert np.isfinite(mosaic.white_level) and mosaic.white_level > max(mosaic.black_level)


# ---------------------------------------------------------------- (a) mutated and truncated DNG files
def _dng_layout(data: bytes) -> dict:
    """Byte ranges of a little-endian single-IFD TIFF: header, IFD entries, out-of-line tag values, pixels."""
    (ifd,) = struct.unpack_from("<I", data, 4)
    (n,) = struct.unpack_from("<H", data, ifd)
    entries_end = ifd + 2 + 12 * n
    strip = next(struct.unpack_from("<I", data, ifd + 2 + 12 * k + 8)[0] for k in range(n)
                 if struct.unpack_from("<H", data, ifd + 2 + 12 * k)[0] == 273)
    return {"ifd": ifd, "entries": n, "regions": {"header": (0, 8), "ifd": (ifd, entries_end + 4),
                                                  "values": (entries_end + 4, strip), "pixels": (strip, len(data))}}


def _base_dngs() -> list[tuple[bytes, dict]]:
    from toolkit.camera.dng import write_dng_bytes

    rng = np.random.default_rng(7)
    out = []
    for pattern, (h, w) in zip(PATTERNS, [(40, 48), (33, 35), (32, 64), (48, 33)]):
        counts_ = rng.integers(400, 4000, (h, w)).astype(np.uint16)
        data = write_dng_bytes(counts_, pattern, black_level=(510, 512, 514, 516), white_level=16383)
        out.append((data, _dng_layout(data)))
    return out


BASE_DNGS = _base_dngs()


@st.composite
def dng_mutations(draw) -> bytes:
    data, layout = draw(st.sampled_from(BASE_DNGS))
    buf = bytearray(data)
    regions = layout["regions"]
    for _ in range(draw(st.integers(1, 4))):
        kind = draw(st.sampled_from(["flip", "byte", "entry", "entry", "entry", "word"]))
        if kind == "entry":  # one field of one IFD entry: tag, type, count or value/offset
            k = draw(st.integers(0, layout["entries"] - 1))
            field, fmt = draw(st.sampled_from([(0, "<H"), (2, "<H"), (4, "<I"), (8, "<I"), (8, "<H")]))
            pos = layout["ifd"] + 2 + 12 * k + field
            value = draw(st.sampled_from(INTERESTING + (len(buf), len(buf) - 1, len(buf) + 1)) | st.integers(0, 0xFFFFFFFF))
            struct.pack_into(fmt, buf, pos, value & (0xFFFF if fmt == "<H" else 0xFFFFFFFF))
            continue
        lo, hi = regions[draw(st.sampled_from(["header", "ifd", "ifd", "values", "pixels"]))]
        pos = draw(st.integers(lo, hi - 1))
        if kind == "flip":
            buf[pos] ^= 1 << draw(st.integers(0, 7))
        elif kind == "byte":
            buf[pos] = draw(st.integers(0, 255))
        elif pos + 4 <= len(buf):
            struct.pack_into("<I", buf, pos, draw(st.sampled_from(INTERESTING)))
    if draw(st.integers(0, 3)) == 0:  # truncated, mostly inside the header, IFD and tag values
        end = regions["pixels"][0]
        del buf[draw(st.integers(0, end) | st.integers(0, len(buf) - 1)):]
    return Blob(buf)


@pytest.mark.timeout(300, method="thread")
@given(data=dng_mutations())
@settings(CHECK, max_examples=DNG_CASES)
def test_mutated_dng_files(scratch, data):
    from toolkit.camera.raw import read_mosaic

    path = scratch / "mutated.dng"
    path.write_bytes(data)
    mosaic = documented("dng", lambda: read_mosaic(path))
    if mosaic is not None:
        counts["dng read"] += 1
        assert_sane_mosaic(mosaic)


# ---------------------------------------------------------------- (b) random blobs under RAW suffixes
@pytest.mark.timeout(300, method="thread")
@given(suffix=st.sampled_from(RAW_SUFFIXES + (".npy", ".DNG", ".NPY")), magic=st.sampled_from(MAGIC),
       body=(st.binary(max_size=3000) | st.binary(min_size=1, max_size=8).map(lambda b: b * 400)).map(Blob))
@settings(CHECK, max_examples=BLOB_CASES)
def test_random_blobs_under_raw_suffixes(scratch, suffix, magic, body):
    from toolkit.camera.raw import read_mosaic

    path = scratch / f"blob{suffix}"
    path.write_bytes(magic + body)
    mosaic = documented("blob", lambda: read_mosaic(path))
    if mosaic is not None:
        assert_sane_mosaic(mosaic)


# ---------------------------------------------------------------- (c) mutated .npy files
DESCRS = ["'<f4'", "'<u2'", "'>f8'", "'<f2'", "'|u1'", "'<i8'", "'|O'", "'O'", "'<U4'", "'|S8'", "'|V8'", "'|b1'",
          "'<c8'", "'<M8[s]'", "'<m8[s]'", "\"[('a', '<f4')]\"", "\"[('a', '|O')]\"", "\"('<f4', (2,))\"", "'<f16'",
          "'nonsense'", "''", "5", "None", "[]", "{}", "'<f4' if True else 0", "__import__('os')"]
SHAPES = ["(40, 48)", "(48, 40)", "()", "(0, 0)", "(40,)", "(2, 40, 48)", "(40, 48, 1)", "(-1, 48)", "(40, -48)",
          "(10**12, 10**12)", "(1000000000000, 1000000000000)", "(9223372036854775807, 2)", "(40.0, 48)",
          "('a', 'b')", "(None, 48)", "[40, 48]", "40", "(32, 32)", "(31, 64)", "(100000, 100000)"]
ORDERS = ["False", "True", "None", "1", "'x'"]


class _Trap:
    """Unpickling this object writes the sentinel file: proof that pickle ran."""

    def __init__(self, sentinel: str):
        self.sentinel = sentinel

    def __reduce__(self):
        return (open, (self.sentinel, "w"))


def _npy_bytes(header: str, body: bytes, version: tuple[int, int] = (1, 0), header_len: int | None = None) -> bytes:
    head = header.encode("latin1")
    pad = 64 - (10 + len(head) + 1) % 64 if version == (1, 0) else 64 - (12 + len(head) + 1) % 64
    head = head + b" " * (pad % 64) + b"\n"
    size = len(head) if header_len is None else header_len
    length = struct.pack("<H", size & 0xFFFF) if version == (1, 0) else struct.pack("<I", size & 0xFFFFFFFF)
    return b"\x93NUMPY" + bytes(version) + length + head + body


@st.composite
def npy_files(draw, sentinel: str) -> bytes:
    import pickle

    kind = draw(st.sampled_from(["header", "header", "pickle", "bytes", "saved"]))
    if kind == "saved":  # a real np.save of an odd array
        dtype = draw(st.sampled_from(["<f4", "<u2", ">f8", "<f2", "|u1", "<i8", "|b1", "<c8", "<U2", "|V4"]))
        shape = draw(st.sampled_from([(40, 48), (33, 35), (32, 32), (31, 40), (40,), (2, 32, 32), (0, 32)]))
        array = np.zeros(shape, dtype=dtype)
        if array.dtype.kind == "f" and array.size:
            array.flat[draw(st.integers(0, array.size - 1))] = draw(st.sampled_from([np.nan, np.inf, -np.inf, 1e300, -1.0, 0.5]))
        buf = io.BytesIO()
        np.save(buf, array)
        return Blob(buf.getvalue())
    if kind == "pickle":  # object arrays whose unpickling would leave a trace
        payload = pickle.dumps(np.array([_Trap(sentinel)] * 4, dtype=object), protocol=draw(st.integers(2, 5)))
        descr = draw(st.sampled_from(["'|O'", "'O'", "\"[('a', '|O')]\"", "'<f4'", "'<u2'"]))
        shape = draw(st.sampled_from(["(4,)", "(40, 48)", "(2, 2)", "()"]))
        return Blob(_npy_bytes(f"{{'descr': {descr}, 'fortran_order': False, 'shape': {shape}, }}", payload))
    descr, shape, order = draw(st.sampled_from(DESCRS)), draw(st.sampled_from(SHAPES)), draw(st.sampled_from(ORDERS))
    keys = [f"'descr': {descr}", f"'fortran_order': {order}", f"'shape': {shape}"]
    if draw(st.booleans()):
        keys = draw(st.permutations(keys))
    if draw(st.integers(0, 5)) == 0:
        keys = keys[: draw(st.integers(0, 2))]
    if draw(st.integers(0, 5)) == 0:
        keys.append("'extra': 1")
    header = "{" + ", ".join(keys) + ", }"
    body = draw(st.sampled_from([bytes(40 * 48 * 4), bytes(40 * 48 * 2), bytes(10), b""]))
    version = draw(st.sampled_from([(1, 0), (1, 0), (2, 0), (3, 0), (0, 0), (9, 9)]))
    header_len = draw(st.none() | st.sampled_from([0, 1, 5, 0xFFFF, 0xFFFFFFFF]) | st.integers(0, 300))
    data = bytearray(_npy_bytes(header, body, version, header_len))
    if kind == "bytes":  # then byte-level damage in the magic and header
        for _ in range(draw(st.integers(1, 4))):
            pos = draw(st.integers(0, min(len(data), 140) - 1))
            data[pos] = draw(st.integers(0, 255))
        if draw(st.booleans()):
            del data[draw(st.integers(0, len(data))):]
    return Blob(data)


@pytest.mark.timeout(300, method="thread")
@given(data=st.data())
@settings(CHECK, max_examples=NPY_CASES)
def test_mutated_npy_files_are_refused_without_unpickling(scratch, data):
    from toolkit.camera.raw import read_mosaic

    sentinel = scratch / "unpickled"
    content = data.draw(npy_files(str(sentinel)))
    path = scratch / "mutated.npy"
    path.write_bytes(content)
    levels = data.draw(st.sampled_from([{}, {"black_level": 512, "white_level": 16383}, {"black_level": 0, "white_level": 0},
                                        {"black_level": float("nan"), "white_level": 1.0}, {"pattern": "xyz"}]))
    mosaic = documented("npy", lambda: read_mosaic(path, **levels))
    assert not sentinel.exists(), "a pickled object was loaded"
    if mosaic is not None:
        counts["npy read"] += 1
        assert_sane_mosaic(mosaic)


# ---------------------------------------------------------------- (d) mutated manifests and artifacts
@pytest.fixture(scope="module")
def artifact(tmp_path_factory):
    pytest.importorskip("onnxruntime", reason="onnxruntime is not installed (pip install '.[onnx]')")
    pytest.importorskip("onnx", reason="onnx is not installed (pip install '.[onnx]')")
    pytest.importorskip("torch", reason="torch is not installed (pip install '.[export]')")
    from toolkit.deploy.export import export

    folder = tmp_path_factory.mktemp("fuzz-artifact") / "onnxruntime-fp32-64x96"
    export("onnxruntime", "fp32", (64, 96), folder)
    return folder


JSON_SCALARS = (st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.floats() | st.text(max_size=6)
                | st.sampled_from(["", "onnxruntime", "torch", "openvino", "tflite", "int8", "llpacknet-2022", "gain"]))
JSON_VALUES = st.recursive(JSON_SCALARS, lambda inner: st.lists(inner, max_size=3)
                           | st.dictionaries(st.text(max_size=6), inner, max_size=3), max_leaves=6)
HOSTILE_NAMES = ["/etc/passwd", "../outside.bin", "a/../../outside.bin", "", ".", "./", "a\\..\\b", "a\x00b", "x" * 5000,
                 "model.onnx/", "./model.onnx", "sub/../model.onnx", "//model.onnx", "~/model.onnx", "link.bin", "folder"]


def _paths(value, prefix=()):
    yield prefix
    if isinstance(value, dict):
        for key, item in value.items():
            yield from _paths(item, prefix + (key,))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            yield from _paths(item, prefix + (index,))


def _runtime_paths(manifest: dict) -> list[tuple]:
    gain = next(i for i, s in enumerate(manifest["input"]["preprocessing"]) if s["step"] == "gain")
    auto = ("input", "preprocessing", gain, "automatic")
    name = next(iter(manifest["files"]))
    return [("target",), ("precision",), ("size",), ("size", 0), ("size", 1), ("model",), ("model", "variant"),
            ("model", "trained"), ("input",), ("input", "preprocessing"), ("input", "preprocessing", gain),
            ("input", "preprocessing", gain, "step"), auto, auto + ("edges",), auto + ("edges", 0), auto + ("edges", 62),
            auto + ("coefficients",), auto + ("coefficients", 5), auto + ("intercept",), ("output",), ("files",),
            ("files", name), ("validation",), ("validation", "degraded"), ("schema",), ("schema_version",)]


def _set(tree, path, value):
    for key in path[:-1]:
        tree = tree[key]
    tree[path[-1]] = value


def _delete(tree, path):
    for key in path[:-1]:
        tree = tree[key]
    del tree[path[-1]]


@st.composite
def manifest_edits(draw, manifest: dict, valid_types: bool = False) -> list:
    """1-3 edits: (op, path, value). `valid_types` favours edits that pass the reader and reach the runtime."""
    every = [p for p in _paths(manifest) if p]
    runtime = _runtime_paths(manifest)
    edits = []
    for _ in range(draw(st.integers(1, 3))):
        ops = ["size", "target", "gain", "trained", "model_file"] if valid_types else \
            ["replace", "replace", "delete", "version", "file_name", "checksum", "symlink", "text", "size", "target", "gain"]
        op = draw(st.sampled_from(ops))
        if op in ("replace", "delete"):
            path = draw(st.sampled_from(runtime) | st.sampled_from(every))
            edits.append((op, path, draw(JSON_VALUES) if op == "replace" else None))
        elif op == "version":
            edits.append(("replace", ("schema_version",), draw(st.sampled_from([0, 2, "1", 1.0, True, None, 99, -1, [1]]))))
        elif op == "file_name":
            digest = draw(st.sampled_from(["0" * 64, "z" * 64, "ABC", 5, None]))
            edits.append(("file_name", draw(st.sampled_from(HOSTILE_NAMES)), digest))
        elif op == "checksum":
            edits.append(("checksum", None, draw(st.sampled_from(["0" * 64, "F" * 64, "", "abc", 0, None, ["x"]])
                                                 | st.text("0123456789abcdef", min_size=64, max_size=64))))
        elif op == "symlink":
            edits.append(("symlink", draw(st.sampled_from(["/etc/hostname", "/proc/self/status", "..", "/nonexistent"])), None))
        elif op == "text":
            edits.append(("text", draw(st.sampled_from(["truncate", "flip", "garbage", "nested", "bigint", "nan"])),
                          draw(st.integers(0, 10**6))))
        elif op == "size":
            edits.append(("replace", ("size",), draw(st.sampled_from([[64, 112], [96, 64], [32, 32], [128, 128], [64, 96],
                                                                      [48, 96], [64, 95], [16, 16], [0, 0]]))))
        elif op == "target":
            edits.append(("replace", ("target",), draw(st.sampled_from(["torch", "openvino", "tflite", "onnx", "onnxruntime"]))))
        elif op == "gain":
            edits.append(("gain", draw(st.sampled_from(["drop_auto", "drop_step", "short_coeffs", "flat_edges", "huge", "two"])), None))
        elif op == "trained":
            edits.append(("replace", ("model", "trained"), draw(st.booleans())))
        elif op == "model_file":
            edits.append(("model_file", draw(st.sampled_from(["truncate", "flip", "garbage", "empty"])), draw(st.integers(0, 10**7))))
    return edits


def _apply(edits: list, source: Path, folder: Path) -> None:
    """Build a copy of the artifact (model file hard-linked unless edited) with the edits applied."""
    folder.mkdir()
    manifest = json.loads((source / "manifest.json").read_text())
    model_name = next(iter(manifest["files"]))
    os.link(source / model_name, folder / model_name)
    text_edits = []
    for op, path, value in edits:
        try:
            if op == "replace":
                _set(manifest, path, copy.deepcopy(value))
            elif op == "delete":
                _delete(manifest, path)
            elif op == "file_name":
                manifest["files"][path] = value
                if path == "folder":
                    (folder / "folder").mkdir(exist_ok=True)
            elif op == "checksum":
                manifest["files"][model_name] = value
            elif op == "symlink":
                link = folder / "link.bin"
                if not link.is_symlink():
                    link.symlink_to(path)
                digest = hashlib.sha256(Path(path).read_bytes()).hexdigest() if Path(path).is_file() else "0" * 64
                manifest["files"]["link.bin"] = digest
            elif op == "gain":
                steps = manifest["input"]["preprocessing"]
                gain = next(s for s in steps if s.get("step") == "gain")
                auto = gain.get("automatic", {})
                if path == "drop_auto":
                    gain.pop("automatic", None)
                elif path == "drop_step":
                    steps.remove(gain)
                elif path == "short_coeffs":
                    auto["coefficients"] = auto.get("coefficients", [])[:10]
                elif path == "flat_edges":
                    auto["edges"] = [0.5] * len(auto.get("edges", [0, 1]))
                elif path == "huge":
                    auto["intercept"] = 1e308
                elif path == "two":
                    steps.append(copy.deepcopy(gain))
            elif op == "model_file":
                data = bytearray((source / model_name).read_bytes())
                if path == "truncate":
                    del data[value % len(data):]
                elif path == "flip":
                    data[value % min(len(data), 4096)] ^= 0xFF
                elif path == "garbage":
                    data = bytearray(np.random.default_rng(value).bytes(4096))
                else:
                    data = bytearray()
                (folder / model_name).unlink()
                (folder / model_name).write_bytes(bytes(data))
                if isinstance(manifest.get("files"), dict):
                    manifest["files"][model_name] = hashlib.sha256(bytes(data)).hexdigest()
            elif op == "text":
                text_edits.append((path, value))
        except (KeyError, IndexError, TypeError, AttributeError, StopIteration):
            continue  # an earlier edit removed what this one would change: keep the others
    text = json.dumps(manifest, indent=2)
    for how, value in text_edits:
        if how == "truncate":
            text = text[: value % max(len(text), 1)]
        elif how == "flip" and text:  # an earlier truncation may have left nothing to flip
            pos = value % len(text)
            text = text[:pos] + chr((ord(text[pos]) + 1 + value % 50) % 0x250) + text[pos + 1 :]
        elif how == "garbage":
            text = np.random.default_rng(value).bytes(200).decode("latin1")
        elif how == "nested":
            text = "[" * (1000 + value % 100000) + "]" * (1000 + value % 100000)
        elif how == "bigint":
            text = re.sub(r'"schema_version": (\d+)', lambda m: m.group(0) + "0" * (5000 + value % 10), text, count=1)
        elif how == "nan":
            text = text.replace('"intercept": ', '"intercept": NaN, "x": ', 1)
    (folder / "manifest.json").write_text(text, encoding="utf-8", errors="surrogatepass")


@pytest.mark.timeout(300, method="thread")
@given(data=st.data())
@settings(CHECK, max_examples=MANIFEST_CASES)
def test_mutated_manifests_read_manifest(artifact, scratch, data):
    from toolkit.deploy.artifact import read_manifest

    manifest = json.loads((artifact / "manifest.json").read_text())
    edits = data.draw(manifest_edits(manifest))
    folder = Path(tempfile.mkdtemp(dir=scratch))
    try:
        _apply(edits, artifact, folder / "a")
        loaded = documented("manifest", lambda: read_manifest(folder / "a"))
        if loaded is not None:
            counts["manifest accepted"] += 1
            assert loaded["files"] and all((folder / "a" / n).resolve().is_relative_to((folder / "a").resolve()) for n in loaded["files"])
    finally:
        shutil.rmtree(folder, ignore_errors=True)


@pytest.mark.timeout(300, method="thread")
@given(data=st.data())
@settings(CHECK, max_examples=BACKEND_CASES)
def test_mutated_artifacts_artifact_backend(artifact, scratch, data):
    from toolkit.deploy.enhance import ArtifactBackend, Enhancer
    from toolkit.camera.raw import Mosaic

    manifest = json.loads((artifact / "manifest.json").read_text())
    edits = data.draw(manifest_edits(manifest, valid_types=data.draw(st.integers(0, 3)) > 0))
    ratio = data.draw(st.sampled_from(["auto", 100]))
    mosaic = Mosaic((np.random.default_rng(0).random((40, 50)) * 0.01).astype(np.float32), data.draw(st.sampled_from(PATTERNS)),
                    (0.0,) * 4, 1.0)
    folder = Path(tempfile.mkdtemp(dir=scratch))
    try:
        _apply(edits, artifact, folder / "a")
        backend = documented("backend", lambda: ArtifactBackend(folder / "a", threads=1))
        if backend is not None:
            counts["backend loaded"] += 1
            enhancer = Enhancer(model=folder / "a", ratio=ratio, threads=1)
            result = documented("backend enhance", lambda: enhancer.enhance(mosaic))
            if result is not None:
                counts["backend enhanced"] += 1
                assert result.image.shape == (40, 50, 3) and np.isfinite(result.image).all()
                assert result.gain > 0
    finally:
        shutil.rmtree(folder, ignore_errors=True)
