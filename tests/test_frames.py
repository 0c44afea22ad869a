"""Raw camera frames (picamera2 buffers): every Bayer format packed by an independent, bit-by-bit
reference packer reads back exactly, on both Raspberry Pi conventions, with row padding; a packed
frame enhances to the same image as a DNG of the same mosaic; bad buffers exit 2 with the numbers."""
from __future__ import annotations

import numpy as np
import pytest

from toolkit.camera.frames import align, parse_pixel_format, read_frame, unpack
from toolkit.cli import main
from toolkit.errors import InputError

FORMATS = [f"S{p}{b}{s}" for p in ("RGGB", "GRBG", "GBRG", "BGGR") for b, s in
           ((8, ""), (10, ""), (12, ""), (16, ""), (10, "_CSI2P"), (12, "_CSI2P"))]


def reference_pack(mosaic: np.ndarray, bits: int, packed: bool, pi5: bool = False, pad: int = 0) -> bytes:
    """Pack row by row, value by value, the way the CSI-2 and V4L2 documents draw it (no numpy)."""
    out = bytearray()
    for row in mosaic.tolist():
        line = bytearray()
        if packed and bits == 10:
            row = row + [0] * (-len(row) % 4)
            for i in range(0, len(row), 4):
                four = row[i:i + 4]
                line += bytes(v >> 2 for v in four)
                line.append(sum((v & 0b11) << (2 * k) for k, v in enumerate(four)))
        elif packed and bits == 12:
            row = row + [0] * (-len(row) % 2)
            for i in range(0, len(row), 2):
                first, second = row[i], row[i + 1]
                line += bytes([first >> 4, second >> 4, (first & 0xF) | ((second & 0xF) << 4)])
        elif bits == 8:
            line += bytes(row)
        else:
            for v in row:
                v = v << (16 - bits) if pi5 else v
                line += bytes([v & 0xFF, v >> 8])
        out += line + bytes(pad)
    return bytes(out)


@pytest.mark.parametrize("name", FORMATS)
@pytest.mark.parametrize("width", [32, 34, 37])
def test_every_format_round_trips_bit_exactly(name, width):
    fmt = parse_pixel_format(name)
    rng = np.random.default_rng(width)
    mosaic = rng.integers(0, 1 << fmt.bits, (6, width), dtype=np.uint16)
    mosaic[0, :4] = [0, (1 << fmt.bits) - 1, 1, (1 << fmt.bits) - 2]  # the extremes
    for pi5 in ((False, True) if not fmt.packed and fmt.bits in (10, 12) else (False,)):
        for pad in (0, 13):
            data = reference_pack(mosaic, fmt.bits, fmt.packed, pi5, pad)
            stride = len(data) // 6
            got = align(unpack(data, fmt, (6, width), stride if pad else None), fmt, "high" if pi5 else "low")
            assert got.dtype == np.uint16 and np.array_equal(got, mosaic), (name, width, pi5, pad)
            if not fmt.packed and fmt.bits in (10, 12) and mosaic.max() > 0:
                auto = align(unpack(data, fmt, (6, width), stride), fmt, "auto")
                assert np.array_equal(auto, mosaic)  # Pi 4 values stay under the bit depth, Pi 5 ones above


def test_a_picamera2_array_with_padding_is_taken_as_it_comes():
    fmt = parse_pixel_format("SRGGB12_CSI2P")
    mosaic = np.random.default_rng(1).integers(0, 4096, (8, 40), dtype=np.uint16)
    data = reference_pack(mosaic, 12, True, pad=4)
    array = np.frombuffer(data, np.uint8).reshape(8, -1)  # capture_array("raw"): uint8 rows of `stride` bytes
    assert np.array_equal(unpack(array, fmt, (8, 40), array.shape[1]), mosaic)


@pytest.mark.parametrize("pattern", ["RGGB", "GRBG", "GBRG", "BGGR"])
def test_black_levels_per_channel_land_on_their_colour(pattern):
    mosaic = np.full((32, 32), 1000, np.uint16)
    data = reference_pack(mosaic, 12, True)
    # R, Gr, Gb, B on the 16-bit scale: 100, 200, 300, 400 in 12-bit counts
    frame = read_frame(data, f"S{pattern}12_CSI2P", (32, 32), black_levels=(1600, 3200, 4800, 6400))
    cell = np.array(list(pattern)).reshape(2, 2)
    red_row = 0 if "R" in cell[0] else 1
    for y in range(2):
        for x in range(2):
            letter = cell[y, x]
            expected = {"R": 100, "B": 400}.get(letter, 200 if y == red_row else 300)
            assert frame.black_level[2 * y + x] == expected
            assert frame.data[y, x] == pytest.approx((1000 - expected) / (4095 - expected))


def test_a_packed_frame_reads_and_enhances_as_a_dng_of_the_same_mosaic(tmp_path, capsys):
    pytest.importorskip("torch")
    from toolkit.camera.dng import write_dng
    from toolkit.camera.raw import read_mosaic
    from toolkit.fileio import read_image

    rng = np.random.default_rng(0)
    mosaic = (256 + rng.poisson(12, (96, 128))).astype(np.uint16)  # a dark 12-bit frame above the imx477 black level
    (tmp_path / "frame.raw").write_bytes(reference_pack(mosaic, 12, True, pad=16))
    write_dng(tmp_path / "same.dng", mosaic, "BGGR", black_level=256, white_level=4095)
    frame = read_frame((tmp_path / "frame.raw").read_bytes(), "SBGGR12_CSI2P", (96, 128), stride=16 * 12 + 16, sensor="imx477")
    dng = read_mosaic(tmp_path / "same.dng")
    assert frame.pattern == dng.pattern == "BGGR"
    assert np.array_equal(frame.data, dng.data) and frame.black_level == dng.black_level
    frame_flags = ["--pixel-format", "SBGGR12_CSI2P", "--size", "96x128", "--stride", "208", "--sensor", "imx477"]
    for source, out, flags in (("frame.raw", "frame.png", frame_flags), ("same.dng", "dng.png", [])):
        code = main(["enhance", str(tmp_path / source), "-o", str(tmp_path / out), "--ratio", "100", "-q",
                     "--white-balance", "1,1,1", *flags])  # the same gains: a frame carries no as-shot balance
        assert code == 0, capsys.readouterr().err
    difference = np.abs(read_image(tmp_path / "frame.png").astype(int) - read_image(tmp_path / "dng.png").astype(int))
    assert difference.max() == 0


def test_sensor_profiles_load_with_their_sources():
    from profiles import load_sensor_profile, sensor_names

    assert sensor_names() == ["imx296", "imx477", "imx708"]
    for name, bits, black in (("imx477", 12, 256), ("imx708", 10, 64), ("imx296", 10, 60)):
        profile = load_sensor_profile(name)
        assert (profile["bit_depth"], profile["black_level"]) == (bits, black)
        assert profile["black_level_16bit"] == black << (16 - bits) and profile["sources"]


@pytest.mark.parametrize("args, words", [
    (["--pixel-format", "SRGGB12_CSI2P", "--size", "32x32"], "needs 1536"),
    (["--pixel-format", "SRGGB12_CSI2P", "--size", "32x32", "--stride", "40"], "stride of 40 bytes is too small"),
    (["--pixel-format", "SRGGB14", "--size", "32x32"], "unknown raw pixel format"),
    (["--pixel-format", "BGGR16_PISP_COMP1", "--size", "32x32"], "compressed raw format"),
    (["--pixel-format", "SRGGB12_CSI2P"], "needs its size"),
    (["--size", "32x32"], "give its --pixel-format"),
    (["--pixel-format", "SRGGB10_CSI2P", "--size", "32x40", "--sensor", "imx477"], "10-bit format; the imx477 profile is 12-bit"),
    (["--pixel-format", "SRGGB12_CSI2P", "--size", "32x40", "--sensor", "imx999"], "unknown sensor profile"),
    (["--pixel-format", "SRGGB12_CSI2P", "--size", "32x40"], "carries no black level"),
])
def test_bad_frames_exit_2_with_the_numbers(tmp_path, capsys, args, words):
    (tmp_path / "f.raw").write_bytes(bytes(1920))  # 32 rows of 60 bytes: 32x40 at 12 bits packed
    code = main(["enhance", str(tmp_path / "f.raw"), "-o", str(tmp_path / "o.png"), "--ratio", "100", *args])
    err = capsys.readouterr().err
    assert code == 2 and words in err and "Traceback" not in err, err
    assert not (tmp_path / "o.png").exists()


def test_a_pi4_frame_claimed_as_pi5_or_the_reverse_is_refused():
    fmt = parse_pixel_format("SRGGB10")
    low = np.frombuffer(reference_pack(np.full((2, 4), 1000, np.uint16), 10, False), "<u2").reshape(2, 4)
    with pytest.raises(InputError, match="not a Pi 5 frame"):
        align(low, fmt, "high")
    with pytest.raises(InputError, match="alignment high"):
        align(low << 6, fmt, "low")


def test_picamera2_colour_gains_are_the_frames_own_white_balance():
    from toolkit.camera.colour import choose_white_balance

    values = np.random.default_rng(3).integers(256, 4096, (32, 48), dtype=np.uint16)
    frame = read_frame(values, "SRGGB12", (32, 48), black_level=256, colour_gains=(2.4, 1.7))
    assert frame.white_balance == (2.4, 1.0, 1.7)
    chosen = choose_white_balance(frame, "file")
    assert chosen.gains == pytest.approx((2.4, 1.0, 1.7)) and "ColourGains" in chosen.source
    assert read_frame(values, "SRGGB12", (32, 48), black_level=256).white_balance is None  # no metadata: grey world
    for bad in ((0.0, 1.5), (float("nan"), 1.0), (1.0,), "2,1"):
        with pytest.raises(InputError):
            read_frame(values, "SRGGB12", (32, 48), black_level=256, colour_gains=bad)
