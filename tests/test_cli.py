"""The `llpack` command line: enhance real DNGs, and every bad input gets one line and exit 2."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from conftest import needs_torch, random_official_state
from toolkit.cli import main
from toolkit.fileio import read_image

pytestmark = needs_torch


def run_cli(capsys, *args: str) -> tuple[int, str, str]:
    code = main([str(a) for a in args])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


@pytest.mark.parametrize("pattern, size", [("RGGB", (67, 93)), ("BGGR", (67, 93)), ("GRBG", (48, 65)), ("GBRG", (33, 32))])
def test_enhance_dng_keeps_the_original_size(tmp_path, capsys, dark_dng, pattern, size):
    src = dark_dng(pattern, *size)
    out = tmp_path / "out.png"
    code, stdout, _ = run_cli(capsys, "enhance", src, "-o", out, "--json")
    assert code == 0
    result = json.loads(stdout)
    assert result["size"] == list(size) and result["output"] == str(out)
    image = read_image(out)
    assert image.shape == (*size, 3) and image.dtype == np.uint8
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".part")]


def test_enhance_16_bit_tiff_with_ratio(tmp_path, capsys, dark_dng):
    import tifffile

    out = tmp_path / "out.tiff"
    code, stdout, _ = run_cli(capsys, "enhance", dark_dng("BGGR", 40, 50), "-o", out, "--ratio", "250", "--bits", "16")
    assert code == 0 and "wrote" in stdout
    image = tifffile.imread(out)
    assert image.shape == (40, 50, 3) and image.dtype == np.uint16


def test_enhance_npy_with_levels(tmp_path, capsys):
    np.save(tmp_path / "m.npy", np.full((48, 64), 700, np.uint16))
    code, _, err = run_cli(capsys, "enhance", tmp_path / "m.npy", "-o", tmp_path / "o.png",
                           "--black-level", "512", "--white-level", "16383", "--pattern", "GBRG", "-q")
    assert code == 0, err
    assert read_image(tmp_path / "o.png").shape == (48, 64, 3)


def test_enhance_with_official_2022_checkpoint(tmp_path, capsys, dark_dng):
    import torch

    ck = tmp_path / "official_2022.pth"
    torch.save({"model": random_official_state("llpacknet-2022")}, ck)
    src = dark_dng("RGGB", 64, 64)
    code, _, err = run_cli(capsys, "enhance", src, "-o", tmp_path / "a.png", "--checkpoint", ck)
    assert code == 2 and "--ratio" in err  # no amplifier in the 2022 variant
    code, _, err = run_cli(capsys, "enhance", src, "-o", tmp_path / "a.png", "--checkpoint", ck, "--ratio", "100")
    assert code == 0, err


def _write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


BAD_INPUTS = {
    "missing file": lambda d, dng: d / "missing.dng",
    "empty file": lambda d, dng: _write(d / "empty.dng", b""),
    "garbage file": lambda d, dng: _write(d / "garbage.NEF", os.urandom(4096)),
    "truncated DNG": lambda d, dng: _write(d / "cut.dng", dng("RGGB", 128, 128).read_bytes()[:20000]),
    "too small": lambda d, dng: dng("RGGB", 24, 64),
    "npy wrong shape": lambda d, dng: (np.save(d / "s.npy", np.zeros((2, 64, 64), np.float32)), d / "s.npy")[1],
    "npy wrong dtype": lambda d, dng: (np.save(d / "t.npy", np.zeros((64, 64), bool)), d / "t.npy")[1],
    "npy NaN": lambda d, dng: (np.save(d / "n.npy", np.full((64, 64), np.nan, np.float32)), d / "n.npy")[1],
    "npy pickle": lambda d, dng: (np.save(d / "p.npy", np.array([None] * 4, object), allow_pickle=True), d / "p.npy")[1],
}


@pytest.mark.parametrize("case", sorted(BAD_INPUTS))
def test_bad_input_gives_one_line_and_exit_2(tmp_path, capsys, dark_dng, case):
    src = BAD_INPUTS[case](tmp_path, dark_dng)
    out = tmp_path / "out" / "result.png"
    out.parent.mkdir()
    code, stdout, err = run_cli(capsys, "enhance", src, "-o", out)
    assert code == 2, (case, err)
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "Traceback" not in err, err
    assert list(out.parent.iterdir()) == []  # no partial output


@pytest.mark.parametrize("output, match", [
    ("nowhere/out.png", "does not exist"),
    ("out.gif", ".png, .jpg, .jpeg, .tif, .tiff"),
    ("", "is a directory"),
    ("afile.txt/out.png", "is a file"),
])
def test_bad_output_path(tmp_path, capsys, dark_dng, output, match):
    (tmp_path / "afile.txt").write_text("x")
    src = dark_dng()
    code, _, err = run_cli(capsys, "enhance", src, "-o", tmp_path / output if output else tmp_path)
    assert code == 2 and match in err, err


@pytest.mark.skipif(os.geteuid() == 0, reason="root can write to read-only folders")
def test_read_only_output_folder(tmp_path, capsys, dark_dng):
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o500)
    code, _, err = run_cli(capsys, "enhance", dark_dng(), "-o", ro / "o.png")
    assert code == 2 and "not writable" in err


def test_unwritable_special_folder(capsys, dark_dng):
    code, _, err = run_cli(capsys, "enhance", dark_dng(), "-o", "/proc/llpack-out.png")
    assert code == 2 and err.startswith("error: ")


@pytest.mark.parametrize("ratio", ["abc", "0", "-5", "nan", "inf"])
def test_bad_ratio(tmp_path, capsys, dark_dng, ratio):
    code, _, err = run_cli(capsys, "enhance", dark_dng(), "-o", tmp_path / "o.png", "--ratio", ratio)
    assert code == 2 and "--ratio" in err


def test_checkpoint_that_does_not_fit(tmp_path, capsys, dark_dng):
    import torch

    state = random_official_state("llpacknet-bmvc2020")
    del state["RDB3.conv_1x1.weight"]
    torch.save({"model": state}, tmp_path / "bad.pth")
    code, _, err = run_cli(capsys, "enhance", dark_dng(), "-o", tmp_path / "o.png", "--checkpoint", tmp_path / "bad.pth")
    assert code == 2 and "missing: RDB3.conv_1x1.weight" in err
    assert not (tmp_path / "o.png").exists()


def test_debug_shows_the_traceback(tmp_path, dark_dng):
    with pytest.raises(Exception):
        main(["enhance", str(tmp_path / "missing.dng"), "-o", str(tmp_path / "o.png"), "--debug"])


def test_info_and_demo(tmp_path, capsys):
    code, stdout, _ = run_cli(capsys, "info", "--json")
    info = json.loads(stdout)
    assert code == 0 and info["parameters"] == 1_177_409 and info["gmacs"] == pytest.approx(83.3, abs=0.1)
    code, stdout, _ = run_cli(capsys, "demo", "--out", tmp_path / "demo", "--json")
    assert code == 0
    demo = json.loads(stdout)
    for key in ("sample", "enhanced", "ground_truth"):
        assert Path(demo[key]).exists()
    assert read_image(demo["enhanced"]).shape == (512, 768, 3)
    assert np.isfinite(demo["psnr_db"])


def test_real_console_script_exit_code(tmp_path):
    exe = Path(sys.executable).parent / "llpack"
    if not exe.exists():
        pytest.skip("console script not installed in this environment")
    proc = subprocess.run([str(exe), "enhance", str(tmp_path / "x.dng"), "-o", str(tmp_path / "o.png")],
                          capture_output=True, text=True)
    assert proc.returncode == 2 and proc.stderr.startswith("error: ") and "Traceback" not in proc.stderr
