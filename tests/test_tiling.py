"""Tiled inference: windows cover the image exactly, and the tiled result equals the untiled one."""
from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from conftest import needs_torch
from toolkit.deploy.tiling import (
    DEFAULT_HALO_CELLS, HEAD_HALO_CELLS, TilePlan, choose_plan, estimate_memory_mb, plan_axis, run_windows,
)


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


def _run_windows(net, packed: np.ndarray, window, halo) -> tuple[np.ndarray, int]:
    from toolkit.camera.bayer import pack_rggb, pack_window, unpack_rggb  # noqa: F401
    from toolkit.camera.bayer import Placement

    _, _, h, w = packed.shape
    out = np.empty((16 * h, 16 * w, 3), np.float32)
    count = run_windows(net, lambda rows, cols: packed[:, :, rows[0] : rows[1], cols[0] : cols[1]], (h, w), window, out,
                        (0, 0), halo=halo)
    return out, count


@pytest.mark.parametrize("shape,window", [((40, 61), (30, 30)), ((57, 23), (25, 23)), ((20, 20), (30, 30))])
def test_tiled_equals_untiled_for_a_network_of_known_reach(shape, window):
    from toolkit.camera.bayer import features_to_image

    rng = np.random.default_rng(0)
    packed = rng.random((1, 256, *shape), dtype=np.float32)
    net = _local_network(5)
    whole = features_to_image(net(packed)[0])
    tiled, count = _run_windows(net, packed, window, halo=5)
    assert count == len(plan_axis(shape[0], window[0], 5)) * len(plan_axis(shape[1], window[1], 5))
    np.testing.assert_allclose(tiled, whole, atol=1e-6)
    # and a halo shorter than the network's reach is visibly wrong at the seams: the check has teeth
    if count > 1:
        short, _ = _run_windows(net, packed, window, halo=1)
        assert np.max(np.abs(short - whole)) > 1e-4


def test_memory_plan_fits_the_budget_or_refuses_with_the_estimate():
    cells = (178, 266)  # 2848 x 4256
    whole = estimate_memory_mb(cells, None)
    assert choose_plan(cells, whole + 1) is None
    plan = choose_plan(cells, 1024)
    assert plan is not None and not plan.strips and estimate_memory_mb(cells, plan) <= 1024
    assert min(plan.window) > 2 * DEFAULT_HALO_CELLS
    with pytest.raises(Exception, match="over the memory budget of 100 MB"):
        choose_plan(cells, 100)
    # a backend that runs its stages apart gets strips, far below the budget, and the estimate shrinks with them
    strips = choose_plan(cells, 512, strips=True)
    assert strips.strips and estimate_memory_mb(cells, strips) <= 512
    tighter = choose_plan(cells, estimate_memory_mb(cells, strips) - 1, strips=True)  # strips no longer fit: windows
    assert not tighter.strips and estimate_memory_mb(cells, tighter) < estimate_memory_mb(cells, strips)
    wide = (20, 2000)  # where the head strips dominate, a tighter budget gets shorter head strips
    rows = choose_plan(wide, estimate_memory_mb(wide, TilePlan(head_rows=20)), strips=True)
    assert rows.strips and 2 * HEAD_HALO_CELLS < rows.head_rows <= 20
    assert estimate_memory_mb(cells, strips, bits=None) > estimate_memory_mb(cells, strips, bits=8)  # float output


@needs_torch
def test_tiled_pytorch_matches_the_whole_image_across_seams(tmp_path):
    from toolkit.deploy.enhance import Enhancer
    from toolkit.camera.raw import Mosaic
    from toolkit.data.synth import sample_scene

    pair = sample_scene(7, size=(1024, 1440))
    mosaic = Mosaic(pair.normalised(), "RGGB", np.zeros(4), 1.0, "synthetic")
    whole = Enhancer(ratio=300, tile="off").enhance(mosaic)
    tiled = Enhancer(ratio=300, tile=1024).enhance(mosaic)  # 64x90 cells: one row, three columns
    assert whole.tiles == 1 and tiled.tiles == 3
    assert np.max(np.abs(tiled.image - whole.image)) <= 1e-4
    # strips (trunk by rows, head strips): chosen under a budget the whole image does not fit
    budget = estimate_memory_mb((64, 90), TilePlan(head_rows=20), bits=None)
    stripped = Enhancer(ratio=300, tile="auto", memory_budget_mb=budget).enhance(mosaic)
    assert stripped.tiles == len(plan_axis(64, choose_plan((64, 90), budget, strips=True, bits=None).head_rows, HEAD_HALO_CELLS)) > 1
    assert np.max(np.abs(stripped.image - whole.image)) <= 1e-5
    # and 8-bit output straight from the pieces equals rounding the float image
    from toolkit.fileio import to_integer_image

    eight = Enhancer(ratio=300, tile="auto", memory_budget_mb=budget).enhance(mosaic, bits=8)
    assert eight.image.dtype == np.uint8
    assert np.abs(eight.image.astype(int) - to_integer_image(whole.image, 8).astype(int)).max() <= 1


@needs_torch
@pytest.mark.parametrize("height,step", [(37, 16), (16, 16), (5, 2), (40, 1)])
def test_trunk_by_rows_is_the_trunk(height, step):
    import torch

    from toolkit.model.llpacknet import create_model

    torch.manual_seed(height)
    model = create_model().eval()
    packed = torch.rand(1, 256, height, 11) * 0.2
    with torch.inference_mode():
        whole = model.trunk(packed)
        reads = []
        by_rows = model.trunk_by_rows(lambda a, b: (reads.append((a, b)), packed[:, :, a:b])[1], height, step)
    assert torch.max(torch.abs(by_rows - whole)).item() <= 1e-5
    assert max(b - a for a, b in reads) <= step + 2  # the input is read a strip (and its two neighbour rows) at a time


def test_over_budget_images_are_refused_before_any_work():
    from toolkit.deploy.enhance import Enhancer
    from toolkit.errors import InputError

    enhancer = Enhancer(ratio=100, tile="off", memory_budget_mb=50)
    with pytest.raises(InputError, match=r"needs about \d+ MB, over the memory budget of 50 MB.*--tile auto"):
        enhancer.plan_tiles((178, 266), None)
    with pytest.raises(InputError, match="at least"):
        Enhancer(tile=512)


@needs_torch
@pytest.mark.parametrize("target,runtime", [("openvino", "openvino"), ("tflite", "ai_edge_litert")])
def test_a_static_shape_artifact_tiles_an_image_larger_than_itself(tmp_path, target, runtime):
    """Windows of an NCHW (OpenVINO) and an NHWC (TFLite) artifact give the untiled PyTorch image."""
    pytest.importorskip(runtime)
    from toolkit.deploy.enhance import Enhancer
    from toolkit.deploy.export import export
    from toolkit.camera.raw import Mosaic
    from toolkit.data.synth import sample_scene

    folder = export(target, "fp32", (640, 640), tmp_path / target)["path"]
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
    from toolkit.deploy.enhance import Enhancer
    from toolkit.errors import InputError
    from toolkit.camera.raw import Mosaic

    if ("onnxruntime", "fp32") not in small_artifacts:
        pytest.skip("needs onnxruntime")
    mosaic = Mosaic(np.full((200, 300), 0.01, np.float32), "RGGB", np.zeros(4), 1.0, "synthetic")
    enhancer = Enhancer(ratio=100, model=small_artifacts["onnxruntime", "fp32"]["path"])
    with pytest.raises(InputError, match=r"too small to tile it.*export an artifact with --size of at least 640x640"):
        enhancer.enhance(mosaic)
