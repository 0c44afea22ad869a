"""Batch enhance: `llpack enhance FOLDER -o OUTDIR` under load, and its edge cases.

The load test enhances 202 files (200 small synthetic dark DNGs and 2 broken ones) with the
PyTorch model in a fresh process, through the real command line: 200 images come out, the 2
bad files are named with their reasons, the exit code is 3, and the process's memory after all
202 files stays within 10 % of what it was after 20 (no per-file leak).
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from conftest import needs_torch
from toolkit.fileio import read_image

pytestmark = needs_torch

GOOD, SIZE = 200, (64, 64)
EARLY = 20  # memory is read after this many files, and after the last
PATTERNS = ("RGGB", "BGGR", "GRBG", "GBRG")


def write_dark_dngs(folder: Path, count: int, size=SIZE, start: int = 0) -> list[Path]:
    """Small synthetic dark DNGs in the style of the `dark_dng` fixture (dead leaves, x100, A7S II noise)."""
    from toolkit.camera.dng import write_dng
    from toolkit.data.synth import dead_leaves, make_dark_pair

    paths = []
    for seed in range(start, start + count):
        rng = np.random.default_rng(seed)
        pair = make_dark_pair(dead_leaves((size[0] + 1, size[1] + 1), rng), 100.0, rng)
        path = folder / f"dark_{seed:03d}.dng"
        write_dng(path, pair.raw[: size[0], : size[1]], PATTERNS[seed % 4], black_level=512, white_level=16383)
        paths.append(path)
    return paths


# The child process: the real CLI, with a hook in enhance_folder that reads /proc/self/status.
CHILD = textwrap.dedent("""
    import json, sys
    import toolkit.deploy.enhance as enhance
    from toolkit.cli import main

    def status():
        fields = {}
        with open("/proc/self/status") as fh:
            for line in fh:
                key, _, value = line.partition(":")
                if key in ("VmRSS", "VmHWM"):
                    fields[key] = int(value.split()[0])  # kB
        return fields

    memory = {}
    def on_file(done, total, entry):
        if done in (EARLY_FILES, total):
            memory[str(done)] = status()

    batch = enhance.enhance_folder
    enhance.enhance_folder = lambda *a, **k: batch(*a, on_file=on_file, **k)
    code = main(sys.argv[2:])
    with open(sys.argv[1], "w") as fh:
        json.dump(memory, fh)
    sys.exit(code)
""").replace("EARLY_FILES", str(EARLY))


@pytest.mark.timeout(300)
def test_batch_of_202_files_under_load(tmp_path):
    src, out = tmp_path / "raw", tmp_path / "out" / "nested"
    src.mkdir()
    write_dark_dngs(src, GOOD)
    cut = (src / "dark_000.dng").read_bytes()[:3000]
    (src / "bad_truncated.dng").write_bytes(cut)
    (src / "bad_garbage.nef").write_bytes(np.random.default_rng(0).bytes(5000))
    (src / "notes.txt").write_text("not an image")
    memory_file = tmp_path / "memory.json"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(Path(__file__).resolve().parents[1]), os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.run([sys.executable, "-c", CHILD, str(memory_file), "enhance", str(src), "-o", str(out), "--json"],
                          capture_output=True, text=True, env=env, timeout=280)
    assert proc.returncode == 3, proc.stderr[-3000:]
    result = json.loads(proc.stdout)
    assert (result["files"], result["ok"], result["failed"]) == (GOOD + 2, GOOD, 2)
    failed = {Path(r["input"]).name: r["error"] for r in result["results"] if "error" in r}
    assert set(failed) == {"bad_truncated.dng", "bad_garbage.nef"}
    assert all("LibRaw cannot read" in reason for reason in failed.values()), failed
    for name in failed:  # named on stderr as they failed, and summed up once
        assert name in proc.stderr
    assert "2 of 202 files failed" in proc.stderr
    assert result["skipped"] == [str(src / "notes.txt")]
    written = sorted(p.name for p in out.iterdir())
    assert written == [f"dark_{i:03d}.png" for i in range(GOOD)]  # nothing for the bad ones, no leftovers
    assert read_image(out / "dark_007.png").shape == (*SIZE, 3)
    memory = json.loads(memory_file.read_text())
    early, final = memory[str(EARLY)], memory[str(GOOD + 2)]
    print(f"\nmemory after {EARLY} files: VmRSS {early['VmRSS'] / 1024:.1f} MiB, VmHWM {early['VmHWM'] / 1024:.1f} MiB; "
          f"after {GOOD + 2}: VmRSS {final['VmRSS'] / 1024:.1f} MiB, VmHWM {final['VmHWM'] / 1024:.1f} MiB; "
          f"batch {result['seconds']:.1f} s")
    assert final["VmHWM"] <= 1.10 * early["VmHWM"], memory
    assert final["VmRSS"] <= 1.10 * early["VmRSS"], memory


def run_cli(capsys, *args) -> tuple[int, str, str]:
    from toolkit.cli import main

    code = main([str(a) for a in args])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_batch_names_formats_and_collisions(tmp_path, capsys):
    src = tmp_path / "in"
    src.mkdir()
    write_dark_dngs(src, 2, size=(40, 48))
    np.save(src / "dark_000.npy", np.full((36, 40), 900, np.uint16))  # same stem as dark_000.dng
    (src / ".hidden.dng").write_bytes(b"ignored")
    code, stdout, err = run_cli(capsys, "enhance", src, "-o", tmp_path / "out", "--format", "tiff", "--bits", "16",
                                "--black-level", "512", "--white-level", "16383", "--json")
    assert code == 0, err
    result = json.loads(stdout)
    assert (result["ok"], result["failed"]) == (3, 0)
    import tifffile

    names = sorted(p.name for p in (tmp_path / "out").iterdir())
    assert names == ["dark_000.dng.tif", "dark_000.npy.tif", "dark_001.tif"]
    image = tifffile.imread(tmp_path / "out" / "dark_000.npy.tif")
    assert image.shape == (36, 40, 3) and image.dtype == np.uint16
    code, stdout, _ = run_cli(capsys, "enhance", src, "-o", tmp_path / "out", "--black-level", "512", "--white-level", "16383")
    assert code == 0 and "enhanced 3 of 3 files" in stdout
    assert len(list((tmp_path / "out").glob("*.png"))) == 3


def test_batch_with_nothing_usable_exits_2(tmp_path, capsys):
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "readme.txt").write_text("x")
    code, stdout, err = run_cli(capsys, "enhance", empty, "-o", tmp_path / "out")
    assert code == 2 and "holds no RAW or .npy files" in err and stdout == ""
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "a.dng").write_bytes(b"II*\x00" + bytes(100))
    (bad / "b.npy").write_bytes(b"\x93NUMPY garbage")
    code, stdout, err = run_cli(capsys, "enhance", bad, "-o", tmp_path / "out2")
    assert code == 2 and "none of the 2 files" in err
    assert "a.dng:" in err and "b.npy:" in err  # each named with its reason
    assert list((tmp_path / "out2").iterdir()) == []


def test_batch_output_must_be_a_folder(tmp_path, capsys, dark_dng):
    src = tmp_path / "in"
    src.mkdir()
    dark_dng().rename(src / "a.dng")
    (tmp_path / "file").write_text("x")
    code, _, err = run_cli(capsys, "enhance", src, "-o", tmp_path / "file")
    assert code == 2 and "is a file" in err
    code, _, err = run_cli(capsys, "enhance", src, "-o", tmp_path / "out.png")
    assert code == 2 and "output folder" in err and not (tmp_path / "out.png").exists()


def test_enhance_folder_api_reports_each_file(tmp_path, monkeypatch, caplog):
    import logging

    from toolkit.deploy.enhance import Enhancer, enhance_folder

    logger = logging.getLogger("toolkit")  # undo the CLI's handler (bound to an earlier test's captured stderr)
    monkeypatch.setattr(logger, "handlers", [])
    monkeypatch.setattr(logger, "propagate", True)

    src = tmp_path / "in"
    src.mkdir()
    write_dark_dngs(src, 3, size=(32, 40))
    (src / "dark_001.dng").write_bytes(b"")  # empty: fails, the others go on
    seen = []
    result = enhance_folder(Enhancer(ratio=100), src, tmp_path / "out", on_file=lambda done, total, entry: seen.append((done, total)))
    assert seen == [(1, 3), (2, 3), (3, 3)]
    assert [("error" in r) for r in result["results"]] == [False, True, False]
    assert "file is empty" in result["results"][1]["error"]
    assert any("dark_001.dng" in r.getMessage() and r.levelno == logging.ERROR for r in caplog.records)
    assert result["results"][0]["gain"] == 100 and result["results"][0]["size"] == [32, 40]
