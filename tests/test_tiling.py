"""Tiled inference: windows cover the image exactly, and the tiled result equals the untiled one."""
from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from conftest import needs_torch
from toolkit.tiling import DEFAULT_HALO_CELLS, choose_window, estimate_memory_mb, plan_axis, run_tiled


@settings(max_examples=200, deadline=None)
@given(cells=st.integers(1, 400), window=st.integers(1, 200), halo=st.integers(0, 30))
def test_cores_cover_the_axis_once_and_windows_give_full_context(cells, window, halo):
    if window < cells and window - 2 * halo < 1:
        with pytest.raises(Exception, match="no room"):
            plan_axis(cells, window, halo)
        return
    spans = plan_axis(cells, window, halo)
    covered = np.zeros(cells, int)
    for span in spans:
        length = min(window, cells)
        assert 0 <= span.start and span.start + length <= cells  # shifted, never shrunk, never outside
        covered[span.core_start : span.core_end] += 1
        assert span.start <= span.core_start and span.core_end <= span.start + length
        # context on each side is the halo, or the window reaches the image border there
        assert span.core_start - span.start >= halo or span.start == 0
        assert span.start + length - span.core_end >= halo or span.start + length == cells
    assert (covered == 1).all()


def _local_network(radius: int):
    """A stand-in network whose every output depends on inputs at most `radius` cells away (box filters,
    zero padding like a convolution), with the body's output layout [1, 192, 2h, 2w]."""
    def run(packed: np.ndarray) -> np.ndarray:
        x = packed[0, :192].astype(np.float64)
        for _ in range(radius):
            p = np.pad(x, ((0, 0), (1, 1), (1, 1)))
            x = sum(p[:, i : i + x.shape[1], j : j + x.shape[2]] for i in range(3) for j in range(3)) / 9
        return np.repeat(np.repeat(x, 2, axis=1), 2, axis=2)[None].astype(np.float32)
    return run


@pytest.mark.parametrize("shape,window", [((40, 61), (30, 30)), ((57, 23), (25, 23)), ((20, 20), (30, 30))])
def test_tiled_equals_untiled_for_a_network_of_known_reach(shape, window):
    from toolkit.bayer import features_to_image

    rng = np.random.default_rng(0)
    packed = rng.random((1, 256, *shape), dtype=np.float32)
    net = _local_network(5)
    whole = features_to_image(net(packed)[0])
    tiled, count = run_tiled(net, packed, window, halo=5)
    assert count == len(plan_axis(shape[0], window[0], 5)) * len(plan_axis(shape[1], window[1], 5))
    np.testing.assert_allclose(tiled, whole, atol=1e-6)
    # and a halo shorter than the network's reach is visibly wrong at the seams: the check has teeth
    if count > 1:
        short, _ = run_tiled(net, packed, window, halo=1)
        assert np.max(np.abs(short - whole)) > 1e-4


def test_memory_plan_fits_the_budget_or_refuses_with_the_estimate():
    cells = (178, 266)  # 2848 x 4256
    whole = estimate_memory_mb(cells[0] * cells[1], cells[0] * cells[1])
    assert choose_window(cells, whole + 1) is None
    window = choose_window(cells, 1024)
    assert window is not None and estimate_memory_mb(cells[0] * cells[1], window[0] * window[1]) <= 1024
    assert min(window) > 2 * DEFAULT_HALO_CELLS
    with pytest.raises(Exception, match="over the memory budget of 100 MB"):
        choose_window(cells, 100)


@needs_torch
def test_tiled_pytorch_matches_the_whole_image_across_seams(tmp_path):
    from toolkit.enhance import Enhancer
    from toolkit.raw import Mosaic
    from toolkit.synth import sample_scene

    pair = sample_scene(7, size=(1024, 1440))
    mosaic = Mosaic(pair.normalised(), "RGGB", np.zeros(4), 1.0, "synthetic")
    whole = Enhancer(ratio=300, tile="off").enhance(mosaic)
    tiled = Enhancer(ratio=300, tile=1024).enhance(mosaic)  # 64x90 cells: one row, three columns
    assert whole.tiles == 1 and tiled.tiles == 3
    assert np.max(np.abs(tiled.image - whole.image)) <= 1e-4


def test_over_budget_images_are_refused_before_any_work():
    from toolkit.enhance import Enhancer
    from toolkit.errors import InputError

    enhancer = Enhancer(ratio=100, tile="off", memory_budget_mb=50)
    with pytest.raises(InputError, match=r"needs about \d+ MB, over the memory budget of 50 MB.*--tile auto"):
        enhancer.plan_window((178, 266), None)
    with pytest.raises(InputError, match="at least"):
        Enhancer(tile=512)


@needs_torch
def test_a_static_shape_artifact_tiles_an_image_larger_than_itself(tmp_path):
    pytest.importorskip("openvino")
    from toolkit.enhance import Enhancer
    from toolkit.export import export
    from toolkit.raw import Mosaic
    from toolkit.synth import sample_scene

    folder = export("openvino", "fp32", (640, 640), tmp_path / "ov")["path"]
    pair = sample_scene(8, size=(1000, 1400))  # not a multiple of 16 either
    mosaic = Mosaic(pair.normalised(), "RGGB", np.zeros(4), 1.0, "synthetic")
    reference = Enhancer(ratio=250, tile="off").enhance(mosaic)
    tiled = Enhancer(ratio=250, model=folder).enhance(mosaic)
    assert tiled.tiles > 1 and tiled.image.shape == reference.image.shape == (1000, 1400, 3)
    assert np.max(np.abs(tiled.image - reference.image)) <= 1e-4
    with pytest.raises(Exception, match="larger than this model's input size"):
        Enhancer(ratio=250, model=folder, tile="off").enhance(mosaic)


@needs_torch
def test_an_artifact_too_small_to_tile_is_refused_with_the_size_to_export(small_artifacts):
    from toolkit.enhance import Enhancer
    from toolkit.errors import InputError
    from toolkit.raw import Mosaic

    if ("onnxruntime", "fp32") not in small_artifacts:
        pytest.skip("needs onnxruntime")
    mosaic = Mosaic(np.full((200, 300), 0.01, np.float32), "RGGB", np.zeros(4), 1.0, "synthetic")
    enhancer = Enhancer(ratio=100, model=small_artifacts["onnxruntime", "fp32"]["path"])
    with pytest.raises(InputError, match=r"too small to tile it.*export an artifact with --size of at least 640x640"):
        enhancer.enhance(mosaic)
