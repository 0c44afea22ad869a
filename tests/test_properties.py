"""Properties of the exact data movement (pack, unpack, Bayer phase, pad, crop) and of manifests.

Each property is checked by hypothesis on small generated arrays against an independent,
per-pixel formula (the one the artifact manifest documents), not against the implementation's
own reshapes.
"""
from __future__ import annotations

import json
import string
from pathlib import Path

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from toolkit.deploy.artifact import SCHEMA, SCHEMA_VERSION, read_manifest, write_manifest
from toolkit.camera.bayer import GRID, PATTERNS, pack_rggb, plan_placement, to_network_grid, unpack_rggb, unpack_rgb
from conftest import needs_torch

FAST = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
COLOUR = {"R": 0, "G": 1, "B": 2}


def arrays(lead: tuple[int, ...], height: int, width: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).random((*lead, height, width)).astype(np.float32)


# ---------------------------------------------------------------- pack / unpack
@given(h=st.integers(1, 3), w=st.integers(1, 3), block=st.sampled_from([1, 2, 4, 8]),
       lead=st.lists(st.integers(1, 2), max_size=2).map(tuple), seed=st.integers(0, 2**32 - 1))
@FAST
def test_pack_and_unpack_rggb_are_inverses(h, w, block, lead, seed):
    size = 2 * block
    mosaic = arrays(lead, size * h, size * w, seed)
    packed = pack_rggb(mosaic, block)
    assert packed.shape == (*lead, 4 * block * block, h, w)
    np.testing.assert_array_equal(unpack_rggb(packed, block), mosaic)
    # and the other way round: any packed tensor is the packing of its unpacking
    other = np.random.default_rng(seed + 1).random((*lead, 4 * block * block, h, w)).astype(np.float32)
    np.testing.assert_array_equal(pack_rggb(unpack_rggb(other, block), block), other)


@given(h=st.integers(1, 3), w=st.integers(1, 3), seed=st.integers(0, 2**32 - 1))
@settings(max_examples=25, deadline=None)
def test_pack_follows_the_manifest_formula(h, w, seed):
    """packed[64*p + 8*i + j, y, x] = x[16*y + 2*i + py, 16*x + 2*j + px], p = 2*py + px."""
    mosaic = arrays((), 16 * h, 16 * w, seed)
    packed = pack_rggb(mosaic)
    expected = np.empty_like(packed)
    for py in range(2):
        for px in range(2):
            for i in range(8):
                for j in range(8):
                    for y in range(h):
                        for x in range(w):
                            expected[64 * (2 * py + px) + 8 * i + j, y, x] = mosaic[16 * y + 2 * i + py, 16 * x + 2 * j + px]
    np.testing.assert_array_equal(packed, expected)


@given(h=st.integers(1, 3), w=st.integers(1, 3), block=st.sampled_from([2, 8]), seed=st.integers(0, 2**32 - 1))
@settings(max_examples=25, deadline=None)
def test_unpack_rgb_follows_the_manifest_formula(h, w, block, seed):
    """rgb[k, block*y + i, block*x + j] = features[3*(block*i + j) + k, y, x], checked pixel by pixel."""
    features = arrays((3 * block * block,), h, w, seed)
    rgb = unpack_rgb(features, block)
    assert rgb.shape == (3, block * h, block * w)
    for k in range(3):
        for row in range(block * h):
            for col in range(block * w):
                y, i = divmod(row, block)
                x, j = divmod(col, block)
                assert rgb[k, row, col] == features[3 * (block * i + j) + k, y, x]


@given(h=st.integers(1, 2), w=st.integers(1, 2), n=st.integers(1, 2), seed=st.integers(0, 2**32 - 1))
@settings(max_examples=20, deadline=None)
def test_unpack_rgb_with_a_batch_axis_is_per_item(h, w, n, seed):
    features = arrays((n, 192), h, w, seed)
    batched = unpack_rgb(features)
    for item in range(n):
        np.testing.assert_array_equal(batched[item], unpack_rgb(features[item]))


# ---------------------------------------------------------------- Bayer phase, pad, crop
def colour_of(pattern: str, row: int, col: int) -> int:
    return COLOUR[pattern[2 * (row % 2) + (col % 2)]]


def coded_mosaic(height: int, width: int, pattern: str, seed: int) -> np.ndarray:
    """Random values whose integer part is the colour of the pixel under `pattern` (fraction: the value)."""
    rows, cols = np.indices((height, width))
    lookup = np.array([COLOUR[c] for c in pattern]).reshape(2, 2)
    return lookup[rows % 2, cols % 2] + np.random.default_rng(seed).uniform(0.0, 0.999, (height, width))


@given(height=st.integers(32, 75), width=st.integers(32, 75), pattern=st.sampled_from(PATTERNS),
       extra=st.tuples(st.integers(0, 3), st.integers(0, 3)), seed=st.integers(0, 2**32 - 1))
@FAST
def test_phase_padding_keeps_every_colour_and_crop_returns_the_original(height, width, pattern, extra, seed):
    """Odd sizes and all four patterns; also padded far beyond the image to a fixed artifact size."""
    mosaic = coded_mosaic(height, width, pattern, seed)
    for size in (None, (-(-(height + 1) // GRID) * GRID + GRID * extra[0], -(-(width + 1) // GRID) * GRID + GRID * extra[1])):
        grid, place = to_network_grid(mosaic, pattern, size=size)
        assert grid.shape == (place.padded_height, place.padded_width)
        assert grid.shape[0] % GRID == 0 and grid.shape[1] % GRID == 0
        if size is not None:
            assert grid.shape == size
        np.testing.assert_array_equal(place.crop(grid), mosaic)
        # every pixel, padded or not, carries the RGGB colour of its position in the grid
        rows, cols = np.indices(grid.shape)
        np.testing.assert_array_equal(np.floor(grid).astype(int), np.array([[0, 1], [1, 2]])[rows % 2, cols % 2])
        # and the original's top-left pixel sits where the placement says, with its own colour
        assert colour_of("RGGB", place.top, place.left) == colour_of(pattern, 0, 0)
        # padding only adds pixels that copy pixels of the image (reflection invents nothing)
        assert np.isin(grid, mosaic).all()


@given(height=st.integers(32, 70), width=st.integers(32, 70), pattern=st.sampled_from(PATTERNS), seed=st.integers(0, 2**32 - 1))
@FAST
def test_network_output_cropped_by_the_placement_is_aligned_with_the_input(height, width, pattern, seed):
    """The full round trip the enhancer does: pad, pack, (identity network), unpack, crop."""
    mosaic = coded_mosaic(height, width, pattern, seed).astype(np.float32)
    grid, place = to_network_grid(mosaic, pattern)
    packed = pack_rggb(grid)
    assert packed.shape == (256, grid.shape[0] // 16, grid.shape[1] // 16)
    np.testing.assert_array_equal(place.crop(unpack_rggb(packed)), mosaic)
    # an RGB output the size of the grid, cropped, has the input's size and alignment
    rgb = np.stack([grid, grid * 2, grid * 3])
    cropped = place.crop(rgb)
    assert cropped.shape == (3, height, width)
    np.testing.assert_array_equal(cropped[1], mosaic * 2)


@given(height=st.integers(32, 400), width=st.integers(32, 400), pattern=st.sampled_from(PATTERNS))
@settings(max_examples=100, deadline=None)
def test_placement_is_the_smallest_rggb_grid(height, width, pattern):
    place = plan_placement(height, width, pattern)
    top, left = place.top, place.left
    assert colour_of("RGGB", top, left) == colour_of(pattern, 0, 0) and top in (0, 1) and left in (0, 1)
    assert place.padded_height % GRID == 0 and place.padded_height - GRID < height + top <= place.padded_height
    assert place.padded_width % GRID == 0 and place.padded_width - GRID < width + left <= place.padded_width


# ---------------------------------------------------------------- manifests
JSON_SCALARS = (st.none() | st.booleans() | st.integers(-(2**53), 2**53)
                | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=12))
JSON_VALUES = st.recursive(JSON_SCALARS, lambda inner: st.lists(inner, max_size=4)
                           | st.dictionaries(st.text(max_size=8), inner, max_size=4), max_leaves=12)
FILE_NAMES = st.text(string.ascii_letters + string.digits + "_-", min_size=1, max_size=12).map(lambda s: s + ".bin")
SIDES = st.integers(2, 64).map(lambda n: n * GRID)


@st.composite
def manifests(draw) -> tuple[dict, dict[str, bytes]]:
    """A manifest with valid runtime fields and arbitrary JSON elsewhere, and its files' contents."""
    files = draw(st.dictionaries(FILE_NAMES, st.binary(max_size=64), min_size=1, max_size=3))
    edges = sorted(set(draw(st.lists(st.floats(0, 1), min_size=2, max_size=6))))
    layout = draw(st.sampled_from(["NCHW", "NHWC"]))
    gain: dict = {"step": "gain", "manual": draw(st.text(max_size=10))}
    if len(edges) >= 2 and draw(st.booleans()):
        gain["automatic"] = {"edges": edges, "intercept": draw(st.floats(-1e3, 1e3)),
                             "coefficients": draw(st.lists(st.floats(-1e3, 1e3), min_size=len(edges) - 1, max_size=len(edges) - 1))}
    manifest = {
        "target": draw(st.sampled_from(["torch", "openvino", "tflite", "onnxruntime"])),
        "precision": draw(st.sampled_from(["fp32", "int8"])),
        "size": [draw(SIDES), draw(SIDES)],
        "model": {"variant": draw(st.text(min_size=1, max_size=20)), "trained": draw(st.booleans()),
                  "extra": draw(JSON_VALUES)},
        "input": {"preprocessing": [{"step": "normalise"}, gain, {"step": "pack", "note": draw(JSON_VALUES)}], "layout": layout},
        "output": {**draw(st.dictionaries(st.text(max_size=8), JSON_VALUES, max_size=3)), "layout": layout},
        "files": sorted(files),
        "validation": {"degraded": draw(st.booleans()), "notes": draw(JSON_VALUES)},
    }
    manifest.update(draw(st.dictionaries(st.text(string.ascii_lowercase, min_size=1, max_size=8).filter(
        lambda k: k not in manifest and k not in ("schema", "schema_version")), JSON_VALUES, max_size=3)))
    return manifest, files


@given(case=manifests())
@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
def test_write_then_read_manifest_returns_the_same_content(tmp_path_factory, case):
    import hashlib

    manifest, files = case
    folder = tmp_path_factory.mktemp("artifact")
    for name, data in files.items():
        (folder / name).write_bytes(data)
    write_manifest(folder, json.loads(json.dumps(manifest)))
    loaded = read_manifest(folder)
    expected = {"schema": SCHEMA, "schema_version": SCHEMA_VERSION, **manifest,
                "files": {name: hashlib.sha256(data).hexdigest() for name, data in sorted(files.items())}}
    assert loaded == expected
    assert list(loaded) == list(expected)  # field order kept too
    # reading twice gives the same content (nothing in the reader depends on state)
    assert read_manifest(Path(folder)) == loaded


# ---------------------------------------------------------------- the fast pre/post-processing paths
@settings(max_examples=60, deadline=None)
@given(st.integers(0, 2**31 - 1), st.integers(1, 5000), st.floats(0.0, 1.3))
def test_fast_histogram_equals_numpy(seed, size, top):
    from toolkit.camera.bayer import HISTOGRAM_EDGES, histogram_counts

    rng = np.random.default_rng(seed)
    x = (rng.random(size) * top).astype(np.float32)
    x[: size // 10] = rng.choice(np.asarray(HISTOGRAM_EDGES, np.float32), size // 10)  # values on the edges themselves
    x[-1:] = 1.0
    assert np.array_equal(histogram_counts(x, HISTOGRAM_EDGES), np.histogram(x, bins=HISTOGRAM_EDGES)[0])


@settings(max_examples=40, deadline=None)
@given(st.integers(1, 6), st.integers(1, 6), st.integers(0, 2**31 - 1))
def test_fused_pack_equals_pack_times_gain_clipped(h, w, seed):
    from toolkit.camera.bayer import pack_network_input, pack_rggb

    mosaic = np.random.default_rng(seed).random((16 * h, 16 * w), dtype=np.float32) / 100
    expected = pack_rggb(mosaic)[None] * np.float32(123.4)
    assert np.array_equal(pack_network_input(mosaic, 123.4, ceiling=None), expected)
    assert np.array_equal(pack_network_input(mosaic, 123.4), np.minimum(expected, np.float32(1.0)))
    ceiling = np.array([2.0, 1.0, 1.0, 1.5], np.float32)
    per_plane = np.minimum(expected, np.repeat(ceiling, 64)[None, :, None, None])
    assert np.array_equal(pack_network_input(mosaic, 123.4, ceiling=ceiling), per_plane)


@settings(max_examples=40, deadline=None)
@given(st.integers(1, 5), st.integers(1, 5), st.integers(0, 1), st.integers(0, 1), st.integers(0, 2**31 - 1))
def test_fused_unpack_crop_clip_equals_the_composition(h, w, top, left, seed):
    from toolkit.camera.bayer import Placement, features_to_image, unpack_rgb

    rng = np.random.default_rng(seed)
    features = (rng.random((192, 2 * h, 2 * w), dtype=np.float32) * 1.6 - 0.3)
    place = Placement(top, left, 16 * h - top - int(rng.integers(0, 7)), 16 * w - left - int(rng.integers(0, 7)), 16 * h, 16 * w)
    expected = np.clip(place.crop(unpack_rgb(features)), 0, 1).transpose(1, 2, 0)
    assert np.array_equal(features_to_image(features, place), expected)


@settings(max_examples=60, deadline=None)
@given(st.integers(1, 4), st.integers(1, 4), st.sampled_from(PATTERNS), st.integers(0, 2**31 - 1), st.booleans())
def test_pack_window_reads_the_padded_grid_from_the_unpadded_mosaic(h, w, pattern, seed, static):
    """Any window of `pack_window` equals the same cells of Pack(to_network_grid(...)), the padding included."""
    from toolkit.camera.bayer import pack_network_input, pack_window

    rng = np.random.default_rng(seed)
    height, width = int(rng.integers(32, 16 * h + 32)), int(rng.integers(32, 16 * w + 32))
    mosaic = rng.random((height, width), dtype=np.float32)
    size = (16 * (h + 3), 16 * (w + 3)) if static else None
    if static and (size[0] < height + 1 or size[1] < width + 1):
        size = None
    grid, place = to_network_grid(mosaic, pattern, size=size)
    whole = pack_network_input(grid, 7.5)
    rows = sorted(int(v) for v in rng.integers(0, place.padded_height // GRID + 1, 2))
    columns = sorted(int(v) for v in rng.integers(0, place.padded_width // GRID + 1, 2))
    rows, columns = (rows[0], max(rows[1], rows[0] + 1)), (columns[0], max(columns[1], columns[0] + 1))
    if rows[1] > place.padded_height // GRID or columns[1] > place.padded_width // GRID:
        return
    expected = whole[:, :, rows[0] : rows[1], columns[0] : columns[1]]
    assert np.array_equal(pack_window(mosaic, place, rows, columns, 7.5), expected)


@settings(max_examples=40, deadline=None)
@given(st.integers(1, 4), st.integers(1, 4), st.integers(-20, 20), st.integers(-20, 20), st.sampled_from([8, 16]),
       st.integers(0, 2**31 - 1))
def test_unpack_into_places_rounds_and_crops_like_the_float_image(h, w, y, x, bits, seed):
    """A piece's features written at any offset (off the image edges too) give the rounded float image's
    pixels there, from channels-first and channels-last features alike."""
    from toolkit.camera.bayer import features_to_image, unpack_into
    from toolkit.fileio import to_integer_image

    rng = np.random.default_rng(seed)
    features = rng.random((192, 2 * h, 2 * w), dtype=np.float32) * 1.6 - 0.3
    piece = to_integer_image(features_to_image(features), bits)
    out = np.zeros((40, 50, 3), np.uint8 if bits == 8 else np.uint16)
    unpack_into(out, features, y, x)
    expected = np.zeros_like(out)
    ys, xs = slice(max(y, 0), max(min(y + 16 * h, 40), 0)), slice(max(x, 0), max(min(x + 16 * w, 50), 0))
    expected[ys, xs] = piece[ys.start - y : ys.stop - y, xs.start - x : xs.stop - x] if ys.stop > ys.start and xs.stop > xs.start else 0
    assert np.array_equal(out, expected)
    nhwc = np.zeros_like(out)  # the same pixels from the channels-last features (TFLite's own order)
    unpack_into(nhwc, np.ascontiguousarray(features.transpose(1, 2, 0)), y, x, layout="NHWC")
    assert np.array_equal(nhwc, expected)


def test_histogram_of_signed_zero_nan_and_negatives_follows_numpy():
    from toolkit.camera.bayer import HISTOGRAM_EDGES, histogram_counts

    x = np.array([-0.0, 0.0, -1e-40, -1e-3, np.nan, np.inf, 1.0, 1.0000001, 0.5, 3e-4, 3.7e-4], np.float32)
    x = np.tile(x, 1000)
    assert np.array_equal(histogram_counts(x, HISTOGRAM_EDGES), np.histogram(x, bins=HISTOGRAM_EDGES)[0])


@needs_torch
def test_lean_dense_blocks_give_the_same_numbers():
    import torch

    from toolkit.model.llpacknet import create_model

    torch.manual_seed(3)
    model = create_model().eval()
    packed = torch.rand(1, 256, 9, 13) * 0.3
    with torch.inference_mode():
        assert torch.equal(model.packed_body(packed), model.packed_body(packed, lean=True))
