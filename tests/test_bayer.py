"""Bayer geometry: pack/unpack inverses, pattern phase, padding and cropping, histogram."""
from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from conftest import needs_torch
from toolkit.camera.bayer import (
    HISTOGRAM_EDGES, PATTERNS, exposure_histogram, pack_rggb, plan_placement, to_network_grid, unpack_rggb, unpack_rgb,
)

# A colour image whose mosaic under any pattern is known: value encodes colour and position.
COLOUR_CODE = {"R": 1.0, "G": 2.0, "B": 3.0}


def mosaic_with_pattern(height: int, width: int, pattern: str) -> np.ndarray:
    codes = np.array([[COLOUR_CODE[pattern[0]], COLOUR_CODE[pattern[1]]], [COLOUR_CODE[pattern[2]], COLOUR_CODE[pattern[3]]]])
    return np.tile(codes, (height // 2 + 1, width // 2 + 1))[:height, :width]


@pytest.mark.parametrize("pattern", PATTERNS)
@pytest.mark.parametrize("size", [(32, 32), (33, 47), (67, 93), (48, 64)])
def test_every_pattern_lands_on_rggb_phase(pattern, size):
    grid, place = to_network_grid(mosaic_with_pattern(*size, pattern), pattern)
    assert grid.shape[0] % 16 == 0 and grid.shape[1] % 16 == 0
    expected = mosaic_with_pattern(*grid.shape, "RGGB")
    np.testing.assert_array_equal(grid, expected)


@given(
    height=st.integers(32, 90), width=st.integers(32, 90), pattern=st.sampled_from(PATTERNS), seed=st.integers(0, 2**16)
)
@settings(max_examples=60, deadline=None)
def test_pad_then_crop_returns_the_original(height, width, pattern, seed):
    data = np.random.default_rng(seed).random((height, width)).astype(np.float32)
    grid, place = to_network_grid(data, pattern)
    np.testing.assert_array_equal(place.crop(grid), data)
    assert place.padded_height == grid.shape[0] and place.padded_width == grid.shape[1]
    assert grid.shape[0] - height < 16 + 1 and grid.shape[1] - width < 16 + 1


@given(h=st.integers(1, 4), w=st.integers(1, 4), seed=st.integers(0, 2**16))
@settings(max_examples=40, deadline=None)
def test_pack_unpack_are_exact_inverses(h, w, seed):
    data = np.random.default_rng(seed).random((2, 16 * h, 16 * w)).astype(np.float32)
    packed = pack_rggb(data)
    assert packed.shape == (2, 256, h, w)
    np.testing.assert_array_equal(unpack_rggb(packed), data)


def test_pack_channel_order_matches_the_paper():
    data = np.arange(32 * 48, dtype=np.float32).reshape(32, 48)
    packed = pack_rggb(data)
    for plane, (py, px) in enumerate([(0, 0), (0, 1), (1, 0), (1, 1)]):
        colour = data[py::2, px::2]
        for i in range(8):
            for j in range(8):
                np.testing.assert_array_equal(packed[plane * 64 + 8 * i + j], colour[i::8, j::8])


def test_unpack_rgb_follows_the_index_formula():
    feats = np.random.default_rng(0).random((192, 2, 3)).astype(np.float32)
    out = unpack_rgb(feats)
    assert out.shape == (3, 16, 24)
    for i in range(8):
        for j in range(8):
            np.testing.assert_array_equal(out[:, i::8, j::8], feats[3 * (8 * i + j) : 3 * (8 * i + j) + 3])


def test_placement_of_odd_bggr():
    place = plan_placement(67, 93, "BGGR")
    assert (place.top, place.left, place.padded_height, place.padded_width) == (1, 1, 80, 96)


def test_histogram_edges_and_counts():
    assert HISTOGRAM_EDGES.shape == (64,) and HISTOGRAM_EDGES[0] == 0 and HISTOGRAM_EDGES[-1] == pytest.approx(1.0)
    data = np.array([0.0, 0.0, 1.0, 0.5, 2.0 / 255, 0.5, 2.0])
    hist = exposure_histogram(data)
    # 2.0 lies outside [0, 1] and is not counted, but the fractions are of all pixels;
    # 1.0 falls in the closed last bin.
    assert hist.shape == (63,) and hist.sum() == pytest.approx(6 / 7)
    assert hist[0] == pytest.approx(2 / 7) and hist[-1] == pytest.approx(1 / 7)
    assert hist[np.searchsorted(HISTOGRAM_EDGES, 0.5) - 1] == pytest.approx(2 / 7)


@needs_torch
@given(seed=st.integers(0, 2**16), scale=st.sampled_from([0.003, 0.05, 1.0]))
@settings(max_examples=25, deadline=None)
def test_torch_pack_and_histogram_match_numpy(seed, scale):
    import torch
    from toolkit.model.llpacknet import HistogramAmplifier, pack, unpack

    data = (np.random.default_rng(seed).random((1, 1, 32, 64)) * scale).astype(np.float32)
    data[0, 0, 0, :4] = [0.0, 1.0, HISTOGRAM_EDGES[5], HISTOGRAM_EDGES[40]]  # values on bin edges
    t = torch.from_numpy(data)
    np.testing.assert_array_equal(pack(t).numpy()[0], pack_rggb(data[0, 0]))
    hist = HistogramAmplifier().histogram(t).numpy()[0]
    np.testing.assert_allclose(hist, exposure_histogram(data), atol=1e-7)
    feats = torch.randn(1, 192, 2, 4)
    out = unpack(feats)
    for i in range(8):
        for j in range(8):
            np.testing.assert_array_equal(out[0, :, i::8, j::8].numpy(), feats[0, 3 * (8 * i + j) : 3 * (8 * i + j) + 3].numpy())


@pytest.mark.parametrize("pattern", PATTERNS)
def test_padding_to_a_large_fixed_size_keeps_the_phase(pattern):
    grid, place = to_network_grid(mosaic_with_pattern(33, 40, pattern), pattern, size=(160, 96))
    assert grid.shape == (160, 96)
    np.testing.assert_array_equal(grid, mosaic_with_pattern(160, 96, "RGGB"))
    np.testing.assert_array_equal(place.crop(grid), mosaic_with_pattern(33, 40, pattern))


def test_image_larger_than_a_fixed_size_is_refused():
    from toolkit.errors import InputError

    with pytest.raises(InputError, match="larger than this model's input size"):
        to_network_grid(np.zeros((70, 40)), "RGGB", size=(64, 64))
