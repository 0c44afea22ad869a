"""Raspberry Pi bundles: self-contained, checksummed, refused when altered, profiled with parity."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

from conftest import needs_torch

ROOT = Path(__file__).resolve().parents[1]
SIZE = "64x96"


def _llpack(*args, env=None, timeout=600):
    return subprocess.run([sys.executable, "-m", "toolkit.cli", *args], capture_output=True, text=True, cwd=ROOT,
                          env={**os.environ, **(env or {})}, timeout=timeout)


@pytest.fixture
def bundle(rpi_bundle):
    return rpi_bundle


LABELS = ["tflite-fp32", "tflite-fp16", "tflite-int8", "openvino-fp32"]  # profiles/devices/rpi5.json


@needs_torch
def test_bundle_holds_everything_the_board_needs_with_checksums(bundle):
    folder = Path(bundle["path"])
    info = json.loads((folder / "bundle.json").read_text())
    assert info["device"] == "rpi5" and info["size"] == [64, 96]
    assert info["labels"] == LABELS and info["precisions"] == ["fp32", "fp16", "int8"]
    files = set(info["files"])
    for name in ("README.md", "inputs/64x96/sample.dng", "inputs/64x96/scenes.npz", "inputs/64x96/reference.npz",
                 "x86/sample_packed.npy", "x86/torch-fp32.output.npy", *(f"x86/{label}.output.npy" for label in LABELS),
                 "x86/ground_truth.png", "x86/report.json", "artifacts/tflite-int8-64x96/model.tflite",
                 "artifacts/tflite-fp16-64x96/model.tflite", "artifacts/openvino-fp32-64x96/model.xml",
                 "artifacts/openvino-fp32-64x96/model.bin", "artifacts/tflite-int8-64x96/manifest.json"):
        assert name in files, name
    assert info["wheel"] and f"wheels/{info['wheel']}" in files
    readme = (folder / "README.md").read_text()
    assert 'llpacknet-edge' in readme and "[runtime,openvino]" in readme and "tflite-runtime==2.14.0" in readme
    assert "llpack profile" in readme and "Cortex-A76 has FP16 arithmetic" in readme and "81 ms against 317 ms" in readme
    assert "emulated" in readme
    with tarfile.open(bundle["archive"]) as tar:
        assert "bundle-rpi5/bundle.json" in tar.getnames()


@needs_torch
def test_profiling_a_bundle_checks_parity_and_merges_with_x86(bundle, tmp_path):
    result = _llpack("profile", bundle["archive"], "--runs", "2", "--repeats", "1", "--out", str(tmp_path / "prof"), "--json")
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["device_profile"] == "rpi5" and report["settings"]["threads"] == 4
    rows = {r["label"]: r for r in report["results"]}
    assert set(rows) == set(LABELS)  # the reference is the bundle's x86 run, not a local one
    for label, row in rows.items():
        assert row["status"] == "ok" and row["parity"]["ok"]
        assert row["runtime_details"].get("xnnpack", True)
        assert row["psnr_vs_fp32_db"] is not None  # against the x86 FP32 PyTorch images in the bundle
        assert row["vs_fp32"]["reference"] == "tflite-fp32 64x96"  # no torch row here: the board's own FP32 baseline
    from targets.tflite import fp16_arithmetic

    for label in ("tflite-fp32", "openvino-fp32"):  # FP32 on x86 (OpenVINO's precision is set explicitly there)
        assert rows[label]["runtime_details"]["arithmetic"] == "f32" and rows[label]["parity"]["max_abs_diff"] <= 1e-5
    assert rows["tflite-int8"]["parity"]["max_abs_diff"] == 0.0  # XNNPACK on both sides: bit-identical
    assert rows["tflite-fp16"]["file_bytes"] < 0.55 * rows["tflite-fp32"]["file_bytes"]
    assert rows["tflite-fp16"]["params"] == rows["tflite-fp32"]["params"] == rows["openvino-fp32"]["params"]
    if not fp16_arithmetic():  # XNNPACK here computes FP16 artifacts in FP32 (so far, every x86 machine tried)
        assert rows["tflite-fp16"]["runtime_details"]["arithmetic"] == "f32"
        assert any("FP16 arithmetic did not run here" in w for w in rows["tflite-fp16"]["warnings"])
        assert "tflite-fp16 [f32]" in (tmp_path / "prof" / "report.md").read_text()
    merged = _llpack("report", "merge", str(tmp_path / "prof"), str(Path(bundle["path"]) / "x86" / "report.json"),
                     "--out", str(tmp_path / "merged"), "--json")
    assert merged.returncode == 0, merged.stderr
    rows = json.loads(merged.stdout)["results"]
    assert len(rows) == 9 and all(r["vs_fp32"]["reference"] == "torch-fp32 64x96" for r in rows)
    assert (tmp_path / "merged" / "merged.md").exists() and (tmp_path / "merged" / "merged.png").exists()


@needs_torch
@pytest.mark.parametrize("damage", ["alter", "remove"])
def test_an_altered_or_missing_file_is_refused_by_name(bundle, tmp_path, damage):
    copy = tmp_path / "bundle"
    shutil.copytree(bundle["path"], copy)
    victim = copy / "artifacts" / "tflite-int8-64x96" / "model.tflite"
    if damage == "alter":
        data = bytearray(victim.read_bytes())
        data[len(data) // 2] ^= 0xFF
        victim.write_bytes(bytes(data))
    else:
        victim.unlink()
    result = _llpack("profile", str(copy), "--out", str(tmp_path / "prof"))
    assert result.returncode == 2
    assert "artifacts/tflite-int8-64x96/model.tflite" in result.stderr
    assert ("does not match its checksum" if damage == "alter" else "is missing") in result.stderr


def _archive(path: Path, members: list[tuple[str, bytes | None, str | None]]) -> Path:
    import io

    with tarfile.open(path, "w:gz") as tar:
        for name, data, link in members:
            info = tarfile.TarInfo(name)
            if link is not None:
                info.type, info.linkname = tarfile.SYMTYPE, link
                tar.addfile(info)
            else:
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
    return path


@pytest.mark.parametrize("name,link", [("../escaped.txt", None), ("/tmp/absolute-escape.txt", None), ("bundle/evil", "/etc/passwd")])
def test_unsafe_archives_are_never_extracted(tmp_path, name, link):
    archive = _archive(tmp_path / "evil.tar.gz", [("bundle/bundle.json", b"{}", None), (name, b"owned", link)])
    work = tmp_path / "work"
    work.mkdir()
    result = _llpack("profile", str(archive), "--out", str(work / "prof"))
    assert result.returncode == 2 and ("unsafe path" in result.stderr or "link or special file" in result.stderr)
    assert not (tmp_path / "escaped.txt").exists() and not Path("/tmp/absolute-escape.txt").exists()
    assert not [p for p in (work / "prof").glob("bundle-*") if any(p.iterdir())]  # nothing at all was extracted


def test_a_corrupt_archive_is_refused(tmp_path):
    archive = tmp_path / "broken.tar.gz"
    archive.write_bytes(b"\x1f\x8b\x08\x00 not really gzip")
    result = _llpack("profile", str(archive), "--out", str(tmp_path / "prof"))
    assert result.returncode == 2 and "not a readable .tar.gz bundle" in result.stderr


def _blocking(tmp_path, modules) -> dict:
    blocker = tmp_path / "block"
    for module in modules:
        (blocker / module).mkdir(parents=True)
        (blocker / module / "__init__.py").write_text("raise ImportError('not installed')\n")
    return {"PYTHONPATH": str(blocker)}


@needs_torch
def test_a_runtime_that_is_not_installed_is_skipped_with_its_install_command(bundle, tmp_path):
    """A TFLite-only board (the light install) measures the TFLite rows and lists OpenVINO as skipped."""
    result = _llpack("profile", bundle["path"], "--runs", "1", "--warmup", "0", "--repeats", "1", "--out", str(tmp_path / "prof"),
                     "--json", env=_blocking(tmp_path, ["openvino"]))
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    rows = {r["label"]: r for r in report["results"]}
    assert rows["openvino-fp32"]["status"] == "skipped" and report["skipped"] == 1 and report["failed"] == 0
    assert 'pip install "llpacknet-edge[openvino]"' in rows["openvino-fp32"]["error"]
    assert all(rows[label]["status"] == "ok" for label in LABELS if label.startswith("tflite"))
    assert "SKIPPED" in (tmp_path / "prof" / "report.md").read_text()


@needs_torch
def test_a_bundle_whose_runtimes_are_all_missing_says_what_to_install(bundle, tmp_path):
    result = _llpack("profile", bundle["path"], "--out", str(tmp_path / "prof"),
                     env=_blocking(tmp_path, ["ai_edge_litert", "tflite_runtime", "openvino"]))
    assert result.returncode == 2
    assert 'pip install "llpacknet-edge[runtime,openvino]"' in result.stderr and "rpi5 bundle" in result.stderr


def test_a_truncated_archive_is_refused(rpi_bundle, tmp_path):
    data = Path(rpi_bundle["archive"]).read_bytes()
    archive = tmp_path / "cut.tar.gz"
    archive.write_bytes(data[: len(data) // 2])
    result = _llpack("profile", str(archive), "--out", str(tmp_path / "prof"))
    assert result.returncode == 2 and ("is damaged" in result.stderr or "not a readable" in result.stderr)


@needs_torch
def test_bundle_never_replaces_a_folder_that_is_not_a_bundle(tmp_path):
    from toolkit.bench.bundle_builder import build_bundle
    from toolkit.errors import UserError

    precious = tmp_path / "Documents"
    precious.mkdir()
    (precious / "thesis.txt").write_text("years of work")
    with pytest.raises(UserError, match="exists and is not a bundle"):
        build_bundle("rpi4", precious, ["fp32"], "64x96", tmp_path / "artifacts", show_progress=False)
    assert (precious / "thesis.txt").read_text() == "years of work"


def test_the_wheel_lands_in_the_bundle_when_out_is_a_relative_path(tmp_path, monkeypatch):
    """`llpack bundle --out runs/bundle-rpi5` (relative) once built the wheel into pip's temporary folder."""
    from toolkit.bench.bundle_builder import _build_wheel

    monkeypatch.chdir(tmp_path)
    name = _build_wheel(Path("stage") / "wheels")
    assert name and name.startswith("llpacknet_edge-") and (tmp_path / "stage" / "wheels" / name).is_file()
