"""Camera RAW and .npy reading: real DNG round trips through LibRaw, levels, patterns, refusals."""
from __future__ import annotations

import numpy as np
import pytest

from toolkit.camera.bayer import PATTERNS
from toolkit.camera.dng import write_dng
from toolkit.errors import InputError
from toolkit.camera.raw import read_mosaic


@pytest.mark.parametrize("pattern", PATTERNS)
def test_dng_roundtrip_levels_and_pattern(tmp_path, pattern):
    rng = np.random.default_rng(1)
    counts = rng.integers(0, 16383, (45, 61)).astype(np.uint16)
    blacks = (500, 510, 520, 530)  # per 2x2 position, row-major
    path = tmp_path / f"{pattern}.dng"
    write_dng(path, counts, pattern, black_level=blacks, white_level=16383)
    mosaic = read_mosaic(path)
    assert mosaic.pattern == pattern
    assert mosaic.shape == (45, 61)
    assert mosaic.black_level == tuple(float(b) for b in blacks)
    black_map = np.tile(np.array(blacks, np.float32).reshape(2, 2), (23, 31))[:45, :61]
    expected = np.maximum((counts - black_map) / (16383 - black_map), 0)
    np.testing.assert_allclose(mosaic.data, expected, rtol=1e-6, atol=1e-7)
    assert mosaic.data.dtype == np.float32 and mosaic.data.min() >= 0


@pytest.mark.parametrize("shape", [(46, 62), (45, 61)])
def test_camera_raw_levels_are_counted_while_reading(tmp_path, shape):
    """The lookup-table normalisation gives normalise_levels' exact values, and the level counts it
    makes on the way give the amplifier's histogram exactly, without another pass over the photo."""
    from toolkit.camera.bayer import HISTOGRAM_EDGES
    from toolkit.camera.raw import normalise_levels

    rng = np.random.default_rng(2)
    counts = rng.integers(0, 16383, shape).astype(np.uint16)
    counts[0, :4] = (0, 16383, 500, 530)  # at and below black, at white
    blacks = (500, 510, 520, 530)
    write_dng(tmp_path / "a.dng", counts, "GRBG", black_level=blacks, white_level=16383)
    mosaic = read_mosaic(tmp_path / "a.dng")
    black_map = np.tile(np.array(blacks, np.float32).reshape(2, 2), (shape[0] // 2 + 1, shape[1] // 2 + 1))[: shape[0], : shape[1]]
    assert np.array_equal(mosaic.data, normalise_levels(counts, black_map, np.float32(16383)))
    assert np.array_equal(mosaic.histogram(HISTOGRAM_EDGES), np.histogram(mosaic.data, bins=HISTOGRAM_EDGES)[0])
    if shape[0] % 2 == 0:  # counted while reading: the values are then read-only, so the counts stay true
        assert "levels" in mosaic.extras and not mosaic.data.flags.writeable
        with pytest.raises(ValueError):
            mosaic.data[0, 0] = 1.0


def test_npy_integer_mosaic_with_levels(tmp_path):
    counts = np.full((40, 48), 1024, np.uint16)
    np.save(tmp_path / "m.npy", counts)
    mosaic = read_mosaic(tmp_path / "m.npy", black_level=512, white_level=16383, pattern="bggr")
    assert mosaic.pattern == "BGGR"
    np.testing.assert_allclose(mosaic.data, (1024 - 512) / (16383 - 512))


def test_npy_float_defaults_to_normalised(tmp_path):
    data = np.random.default_rng(0).random((32, 32)).astype(np.float32)
    np.save(tmp_path / "f.npy", data)
    np.testing.assert_array_equal(read_mosaic(tmp_path / "f.npy").data, data)


def _npy(tmp_path, array, name="bad.npy", **kw):
    path = tmp_path / name
    np.save(path, array, **kw)
    return path


@pytest.mark.parametrize(
    "make, match",
    [
        (lambda p: _npy(p, np.zeros((3, 40, 40), np.uint16)), "2-D"),
        (lambda p: _npy(p, np.zeros((16, 16), np.float32)), "smaller than the 32x32"),
        (lambda p: _npy(p, np.zeros((40, 40), np.complex64)), "not a number type"),
        (lambda p: _npy(p, np.zeros((40, 40), bool)), "not a number type"),
        (lambda p: _npy(p, np.full((40, 40), np.nan, np.float32)), "NaN or Inf"),
        (lambda p: _npy(p, np.array([[1.0, np.inf] * 20] * 40)), "NaN or Inf"),
        (lambda p: _npy(p, np.zeros((40, 40), np.uint16)), "--black-level and --white-level"),
        (lambda p: _npy(p, np.array([{"a": 1}], dtype=object), allow_pickle=True), "pickle"),
    ],
)
def test_bad_npy_is_refused(tmp_path, make, match):
    with pytest.raises(InputError, match=match):
        read_mosaic(make(tmp_path))


def test_truncated_npy(tmp_path):
    path = _npy(tmp_path, np.zeros((64, 64), np.float32))
    path.write_bytes(path.read_bytes()[:200])
    with pytest.raises(InputError, match="cannot read|not a readable"):
        read_mosaic(path)


def test_missing_empty_and_directory(tmp_path):
    with pytest.raises(InputError, match="no such file"):
        read_mosaic(tmp_path / "nope.dng")
    (tmp_path / "empty.dng").write_bytes(b"")
    with pytest.raises(InputError, match="empty"):
        read_mosaic(tmp_path / "empty.dng")
    with pytest.raises(InputError, match="directory"):
        read_mosaic(tmp_path)


def test_garbage_and_truncated_raw(tmp_path, dark_dng):
    junk = tmp_path / "junk.ARW"
    junk.write_bytes(np.random.default_rng(0).integers(0, 256, 5000, dtype=np.uint8).tobytes())
    with pytest.raises(InputError, match="LibRaw cannot read"):
        read_mosaic(junk)
    good = dark_dng("RGGB", 64, 64)
    cut = tmp_path / "cut.dng"
    cut.write_bytes(good.read_bytes()[:300])
    with pytest.raises(InputError):
        read_mosaic(cut)


def test_levels_flags_on_camera_raw_are_refused(dark_dng):
    with pytest.raises(InputError, match="apply to .npy"):
        read_mosaic(dark_dng(), black_level=512)


def test_small_dng_refused(tmp_path):
    path = tmp_path / "tiny.dng"
    write_dng(path, np.zeros((24, 40), np.uint16))
    with pytest.raises(InputError, match="smaller than"):
        read_mosaic(path)


def test_linear_dng_is_refused(tmp_path):
    """A demosaiced (LinearRaw, 3-sample) DNG is not a Bayer mosaic."""
    import tifffile

    path = tmp_path / "linear.dng"
    tags = [(50706, "B", 4, (1, 4, 0, 0), True), (50708, "s", 0, "Linear cam", True), (50717, "I", 1, 65535, True),
            (50721, "2i", 9, (10000, 1, 0, 1, 0, 1, 0, 1, 10000, 1, 0, 1, 0, 1, 0, 1, 10000, 1), True)]
    tifffile.imwrite(path, np.zeros((40, 40, 3), np.uint16), photometric=34892, extratags=tags)
    with pytest.raises(InputError, match="not a Bayer mosaic"):
        read_mosaic(path)


def test_xtrans_dng_is_refused(tmp_path):
    """A 6x6 colour filter (Fujifilm X-Trans) is not the 2x2 Bayer the network needs."""
    xtrans = (1, 1, 0, 1, 1, 2, 1, 1, 2, 1, 1, 0, 2, 0, 1, 0, 2, 1, 1, 1, 2, 1, 1, 0, 1, 1, 0, 1, 1, 2, 0, 2, 1, 2, 0, 1)
    path = _cfa_dng(tmp_path / "xtrans.dng", (6, 6), xtrans, "X-Trans cam", (60, 90))
    with pytest.raises(InputError, match="6x6"):
        read_mosaic(path)


def _cfa_dng(path, repeat: tuple[int, int], cfa: tuple[int, ...], model: str, shape: tuple[int, int]):
    """A flat grey DNG with any colour filter layout (0 R, 1 G, 2 B), which `write_dng` refuses to make."""
    import tifffile

    tags = [(33421, "H", 2, repeat, True), (33422, "B", len(cfa), cfa, True), (50706, "B", 4, (1, 4, 0, 0), True),
            (50708, "s", 0, model, True), (50717, "I", 1, 16383, True),
            (50721, "2i", 9, (10000, 1, 0, 1, 0, 1, 0, 1, 10000, 1, 0, 1, 0, 1, 0, 1, 10000, 1), True)]
    tifffile.imwrite(path, np.full(shape, 1000, np.uint16), photometric=32803, extratags=tags)
    return path


def test_a_2x2_filter_with_both_greens_in_one_column_is_refused(tmp_path):
    """'GRGB' has R, G, G, B like a Bayer filter but its greens share a column: not one of the four
    Bayer orders, so it is refused, never packed as if it were one (found by the DNG fuzzer)."""
    path = _cfa_dng(tmp_path / "grgb.dng", (2, 2), (1, 0, 1, 2), "GRGB cam", (64, 96))
    with pytest.raises(InputError, match="not an RGB Bayer pattern"):
        read_mosaic(path)


def test_lines_written_while_libraw_is_captured_are_not_lost():
    """A pipelined folder run reads the next RAW (capturing LibRaw's output on fd 2) while the main
    thread logs the previous file's failure: that line must reach stderr, not the capture."""
    import subprocess
    import sys
    import textwrap

    child = textwrap.dedent("""
        import logging, sys, threading, time
        from toolkit.camera.raw import _captured_c_stderr
        from toolkit.progress import Progress, StderrHandler

        log = logging.getLogger("toolkit")
        log.addHandler(StderrHandler(sys.stderr))
        inside = threading.Event()

        def read():
            with _captured_c_stderr() as said:
                inside.set()
                time.sleep(0.5)
                import os
                os.write(2, b"libraw: unexpected end of file\\n")
            assert said == ["libraw: unexpected end of file"], said

        reader = threading.Thread(target=read)
        reader.start()
        inside.wait()
        log.error("bad_truncated.dng: LibRaw cannot read this file")
        Progress(2, "enhance", every_s=0).update(1, "dark_000.dng")
        reader.join()
    """)
    proc = subprocess.run([sys.executable, "-c", child], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert "bad_truncated.dng: LibRaw cannot read" in proc.stderr and "enhance 1/2" in proc.stderr
    assert "unexpected end of file" not in proc.stderr
