"""From shutter to file: the output formats (Pillow, pypng, tifffile), the RAW's orientation and
capture time carried into JPEG and TIFF, the pipelined batch path (same bytes as one by one, at most
one photo ahead and one behind), and OpenVINO's compiled-model cache (never stale)."""
from __future__ import annotations

import json
import shutil
import threading
from pathlib import Path

import numpy as np
import pytest

from toolkit.cli import main
from toolkit.fileio import IMAGE_FORMATS, ImageMetadata, encode_image, read_image, write_image
from toolkit.parallel import pipelined

from conftest import needs_torch


def run_cli(capsys, *args) -> tuple[int, str, str]:
    code = main([str(a) for a in args])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def _image(dtype, shape=(37, 53, 3), seed=0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, np.iinfo(dtype).max, shape, dtype=dtype, endpoint=True)


# ---------------------------------------------------------------- formats
@pytest.fixture(params=["opencv", "pillow/pypng"])
def png_encoder(request, monkeypatch):
    """Each PNG encoder in turn (OpenCV where installed; Pillow and pypng are always there)."""
    import importlib.util

    import toolkit.fileio

    if request.param == "opencv" and importlib.util.find_spec("cv2") is None:
        pytest.skip("OpenCV (the fast-png extra) is not installed")
    monkeypatch.setattr(toolkit.fileio, "png_encoder", lambda: request.param)
    return request.param


@pytest.mark.parametrize("suffix, bits", [(".png", 8), (".png", 16), (".tif", 8), (".tiff", 16)])
def test_lossless_formats_round_trip_exactly(tmp_path, suffix, bits, png_encoder):
    image = _image(np.uint8 if bits == 8 else np.uint16)
    path = write_image(tmp_path / f"x{suffix}", image, bits=bits)
    back = read_image(path)
    assert back.dtype == image.dtype and np.array_equal(back, image)


def test_the_png_encoder_is_the_fast_one_where_installed():
    import importlib.util

    from toolkit.fileio import png_encoder

    assert png_encoder() == ("opencv" if importlib.util.find_spec("cv2") else "pillow/pypng")


def test_png_is_a_standard_file_that_pillow_reads(tmp_path, png_encoder):
    from PIL import Image

    image = _image(np.uint8)
    write_image(tmp_path / "x.png", image)
    with Image.open(tmp_path / "x.png") as im:
        assert im.format == "PNG" and im.mode == "RGB" and np.array_equal(np.asarray(im), image)


def test_jpeg_quality_trades_size_for_fidelity(tmp_path):
    y, x = np.mgrid[0:128, 0:160]
    image = np.stack([(x * 1.5) % 256, (y * 2) % 256, ((x + y) * 3) % 256], -1).astype(np.uint8)
    sizes, errors = {}, {}
    for quality in (50, 95):
        data = encode_image(image, "jpeg", quality=quality)
        assert data[:2] == b"\xff\xd8"
        path = tmp_path / f"q{quality}.jpg"
        path.write_bytes(data)
        sizes[quality] = len(data)
        errors[quality] = np.abs(read_image(path).astype(int) - image).mean()
    assert sizes[50] < sizes[95] and errors[95] < errors[50] < 20


def test_every_format_in_the_table_encodes_8_bit_images():
    image = _image(np.uint8, (16, 16, 3))
    for name, fmt in IMAGE_FORMATS.items():
        assert 8 in fmt.bits and len(encode_image(image, name)) > 0


@pytest.mark.parametrize("args, words", [
    (("-o", "{tmp}/o.jpg", "--bits", "16"), "JPEG stores 8 bits"),
    (("-o", "{tmp}/o.jpg", "--quality", "0"), "--quality must be"),
    (("-o", "{tmp}/o.webp"), "cannot write '.webp'"),
])
def test_unwritable_output_choices_exit_2_before_any_work(tmp_path, capsys, dark_dng, args, words):
    code, _, err = run_cli(capsys, "enhance", dark_dng(height=32, width=32), *(a.format(tmp=tmp_path) for a in args))
    assert code == 2 and words in err and "Traceback" not in err
    assert not [p for p in tmp_path.iterdir() if p.suffix in (".jpg", ".webp", ".part")]


# ---------------------------------------------------------------- metadata
@pytest.mark.parametrize("orientation", range(1, 9))
def test_orientation_and_capture_time_are_read_from_the_raw(tmp_path, orientation):
    from toolkit.camera.dng import write_dng
    from toolkit.camera.raw import read_mosaic

    path = tmp_path / "o.dng"
    write_dng(path, np.full((32, 48), 900, np.uint16), orientation=orientation, captured="2024:05:06 07:08:09")
    mosaic = read_mosaic(path)
    assert (mosaic.orientation, mosaic.captured) == (orientation, "2024:05:06 07:08:09")
    assert mosaic.shape == (32, 48)  # the data stays as the sensor read it; viewers apply the tag


@needs_torch
def test_jpeg_and_tiff_outputs_carry_orientation_and_capture_time(tmp_path, capsys):
    import tifffile
    from PIL import Image

    from toolkit.camera.dng import write_dng

    raw = (np.random.default_rng(0).random((48, 64)) * 300 + 512).astype(np.uint16)
    write_dng(tmp_path / "a.dng", raw, orientation=6, captured="2025:01:02 03:04:05")
    assert run_cli(capsys, "enhance", tmp_path / "a.dng", "-o", tmp_path / "a.jpg", "-q")[0] == 0
    assert run_cli(capsys, "enhance", tmp_path / "a.dng", "-o", tmp_path / "a.tif", "-q")[0] == 0
    with Image.open(tmp_path / "a.jpg") as im:
        exif = im.getexif()
        assert exif[0x0112] == 6 and exif[0x0132] == "2025:01:02 03:04:05"
        assert exif.get_ifd(0x8769)[0x9003] == "2025:01:02 03:04:05"
        assert im.size == (64, 48)  # stored as the sensor read it
    tags = tifffile.TiffFile(tmp_path / "a.tif").pages[0].tags
    assert tags["Orientation"].value == 6 and tags["DateTime"].value == "2025:01:02 03:04:05"


def test_outputs_of_files_without_metadata_say_nothing_false():
    from PIL import Image
    import io

    data = encode_image(_image(np.uint8, (8, 8, 3)), "jpeg", ImageMetadata())
    exif = Image.open(io.BytesIO(data)).getexif()
    assert exif[0x0112] == 1 and 0x0132 not in exif


# ---------------------------------------------------------------- the pipeline
def test_pipelined_keeps_order_and_failures_and_matches_one_by_one():
    def read(item):
        if item == 3:
            raise ValueError("unreadable")
        return item * 10

    def process(item, value):
        if item == 5:
            raise RuntimeError("bad")
        return value + 1

    def finish(item, value):
        if item == 7:
            raise OSError("disk full")
        return value * 2

    overlapped = [(i, repr(v)) for i, v in pipelined(range(10), read, process, finish)]
    one_by_one = [(i, repr(v)) for i, v in pipelined(range(10), read, process, finish, overlap=False)]
    assert overlapped == one_by_one
    assert [i for i, _ in overlapped] == list(range(10))
    assert "unreadable" in overlapped[3][1] and "bad" in overlapped[5][1] and "disk full" in overlapped[7][1]
    assert overlapped[0][1] == "2" and overlapped[9][1] == str((90 + 1) * 2)


def test_pipelined_holds_at_most_one_item_ahead_and_one_behind():
    lock, live, most = threading.Lock(), set(), [0]
    pulled = []

    def source():  # a capture loop: frames come one by one, advanced lazily
        for k in range(12):
            pulled.append(k)
            yield k

    def track(item, add):
        with lock:
            (live.add if add else live.discard)(item)
            most[0] = max(most[0], len(live))

    def read(item):
        track(item, True)
        return item

    def finish(item, value):
        track(item, False)
        return value

    seen = []
    for item, value in pipelined(source(), read, lambda item, value: value, finish):
        assert len(pulled) <= item + 3  # the generator is never drained ahead of the work
        seen.append(value)
    assert seen == list(range(12))
    assert most[0] <= 3  # one being read, one processed, one being written


@needs_torch
def test_pipelined_folder_writes_the_same_bytes_as_one_by_one(tmp_path, capsys, dark_dng):
    src = tmp_path / "in"
    src.mkdir()
    for seed in range(4):
        shutil.copy(dark_dng(height=40 + 8 * seed, width=56, seed=seed), src / f"p{seed}.dng")
    (src / "broken.dng").write_bytes(b"II*\x00 not a raw file")
    outputs = {}
    for fmt in ("jpeg", "png"):
        for mode in ("overlapped", "sequential"):
            out = tmp_path / f"{fmt}-{mode}"
            flags = ["--sequential"] if mode == "sequential" else []
            code, stdout, _ = run_cli(capsys, "enhance", src, "-o", out, "--format", fmt, "--json", "-q", *flags)
            assert code == 3  # one file failed, the others were written
            result = json.loads(stdout)
            assert result["ok"] == 4 and result["failed"] == 1 and result["overlap"] == (mode == "overlapped")
            outputs[fmt, mode] = {p.name: p.read_bytes() for p in sorted(out.iterdir())}
        assert outputs[fmt, "overlapped"] == outputs[fmt, "sequential"]
        assert len(outputs[fmt, "overlapped"]) == 4
    assert set(outputs["jpeg", "sequential"]) == {f"p{k}.jpg" for k in range(4)}


@needs_torch
def test_enhance_files_takes_frames_from_a_capture_loop(tmp_path, dark_dng):
    from toolkit.camera.raw import read_mosaic
    from toolkit.deploy.enhance import Enhancer, FileJob

    paths = [dark_dng(height=32, width=48, seed=s) for s in range(3)]
    enhancer = Enhancer(ratio=100)

    def camera():
        for k, path in enumerate(paths):
            yield FileJob(read_mosaic(path), tmp_path / f"frame{k}.jpg")

    done = list(enhancer.enhance_files(camera()))
    assert [Path(job.output).name for job, _ in done] == ["frame0.jpg", "frame1.jpg", "frame2.jpg"]
    assert all(not isinstance(outcome, Exception) for _, outcome in done)
    single = enhancer.enhance_file(paths[1], tmp_path / "single.jpg")
    assert (tmp_path / "single.jpg").read_bytes() == (tmp_path / "frame1.jpg").read_bytes()
    assert single.seconds["encode"] >= 0 and single.seconds["write"] >= 0


# ---------------------------------------------------------------- OpenVINO's compiled-model cache
@pytest.fixture
def openvino_artifact(small_artifacts, tmp_path, monkeypatch):
    if ("openvino", "fp32") not in small_artifacts:
        pytest.skip("needs OpenVINO")
    monkeypatch.setenv("LLPACK_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("LLPACK_COMPILE_CACHE", raising=False)
    folder = tmp_path / "art"
    shutil.copytree(small_artifacts["openvino", "fp32"]["path"], folder)
    return folder


def _enhance(folder: Path, source: Path, out: Path) -> np.ndarray:
    from toolkit.deploy.enhance import Enhancer

    Enhancer(model=folder, ratio=100).enhance_file(source, out)
    return read_image(out)


def test_openvino_compiles_once_then_loads_from_the_cache(openvino_artifact, tmp_path, dark_dng):
    from targets.openvino import SEAL

    source = dark_dng(height=64, width=96)
    first = _enhance(openvino_artifact, source, tmp_path / "1.png")
    entries = list((tmp_path / "cache" / "openvino").iterdir())
    assert len(entries) == 1
    blobs = [p for p in entries[0].iterdir() if p.name != SEAL]
    assert blobs and (entries[0] / SEAL).exists()
    stamp = {p: p.stat().st_mtime_ns for p in blobs}
    assert np.array_equal(_enhance(openvino_artifact, source, tmp_path / "2.png"), first)
    assert {p: p.stat().st_mtime_ns for p in blobs} == stamp  # imported, not compiled and written again


def test_a_changed_artifact_is_never_served_from_a_stale_cache(openvino_artifact, tmp_path, dark_dng, monkeypatch):
    import torch

    from conftest import SMALL_SIZE, random_official_state
    from toolkit.deploy.export import export

    source = dark_dng(height=64, width=96)
    before = _enhance(openvino_artifact, source, tmp_path / "before.png")
    # the same folder, exported again from other weights
    checkpoint = tmp_path / "other.pt"
    torch.save({"model": random_official_state("llpacknet-bmvc2020", seed=3)}, checkpoint)
    export("openvino", "fp32", SMALL_SIZE, tmp_path / "other", checkpoint=checkpoint)
    shutil.rmtree(openvino_artifact)
    shutil.copytree(tmp_path / "other", openvino_artifact)
    cached = _enhance(openvino_artifact, source, tmp_path / "cached.png")
    monkeypatch.setenv("LLPACK_COMPILE_CACHE", "off")
    fresh = _enhance(openvino_artifact, source, tmp_path / "fresh.png")
    assert np.array_equal(cached, fresh) and not np.array_equal(cached, before)
    assert len(list((tmp_path / "cache" / "openvino").iterdir())) == 2


def test_a_damaged_cached_blob_is_compiled_again(openvino_artifact, tmp_path, dark_dng):
    from targets.openvino import SEAL

    source = dark_dng(height=64, width=96)
    first = _enhance(openvino_artifact, source, tmp_path / "1.png")
    (entry,) = (tmp_path / "cache" / "openvino").iterdir()
    for blob in (p for p in entry.iterdir() if p.name != SEAL):  # same size, flipped bytes: OpenVINO itself would import it
        blob.chmod(0o644)
        data = bytearray(blob.read_bytes())
        for i in range(len(data) // 2, min(len(data), len(data) // 2 + 2000)):
            data[i] ^= 0x55
        blob.write_bytes(bytes(data))
    assert np.array_equal(_enhance(openvino_artifact, source, tmp_path / "2.png"), first)
