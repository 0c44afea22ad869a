"""Runners hand out their output buffers again only once the caller has let go of them."""
from __future__ import annotations

import weakref
from pathlib import Path

import numpy as np
import pytest

from toolkit.memory import OutputBuffers


def test_a_dropped_buffer_is_reused_and_a_held_one_never():
    buffers = OutputBuffers()
    first, _ = buffers.take((2, 3))
    address = first.ctypes.data
    del first
    again, _ = buffers.take((2, 3))
    assert again.ctypes.data == address  # nobody held it: the same memory, no new page faults
    other, _ = buffers.take((2, 3))  # `again` is still held
    assert other.ctypes.data != again.ctypes.data
    view = other[0]  # a view alone keeps its base busy
    del other
    third, _ = buffers.take((2, 3))
    assert third.ctypes.data not in (view.base.ctypes.data, again.ctypes.data)
    assert buffers.take((4,))[0].shape == (4,) and buffers.take((2, 3), np.uint8)[0].dtype == np.uint8


def test_buffers_are_wrapped_once_and_the_handle_does_not_count_as_a_holder():
    handles = []
    buffers = OutputBuffers(lambda array: handles.append(array) or ("handle", len(handles)))
    array, handle = buffers.take((8,))
    del array
    assert buffers.take((8,))[1] == handle == ("handle", 1)


def _artifact_runners(small_artifacts):
    from targets import get_target
    from toolkit.deploy.artifact import read_manifest

    for (target, precision), manifest in sorted(small_artifacts.items()):
        if target == "torch":
            continue
        folder = Path(manifest["path"])
        saved = read_manifest(folder)
        yield f"{target}-{precision}", get_target(target).load(folder, saved, 1), saved


def test_every_runner_keeps_results_the_caller_holds(small_artifacts):
    """One result held across the next call is not overwritten; a dropped one's memory is reused."""
    runners = list(_artifact_runners(small_artifacts))
    if not runners:
        pytest.skip("no artifact runtime installed")
    rng = np.random.default_rng(3)
    for label, runner, manifest in runners:
        shape = manifest["input"]["shape"]
        a = rng.random(shape, dtype=np.float32) * 0.05
        b = rng.random(shape, dtype=np.float32) * 0.05
        out_a = runner.run_native(a)
        expected_a = out_a.copy()
        out_b = runner.run_native(b)
        assert np.array_equal(out_a, expected_a), label  # held: untouched by the next call
        assert not np.array_equal(out_b, out_a), label
        expected_b = out_b.copy()
        address = out_b.ctypes.data
        del out_a, out_b
        again = runner.run_native(b)
        assert again.ctypes.data == address and np.array_equal(again, expected_b), label
        gone = weakref.ref(b)
        del b
        assert gone() is None, f"{label} keeps its last input alive"  # 48 MB at full size


def test_enhancer_reuses_a_dropped_image_and_keeps_a_held_one(dark_dng):
    pytest.importorskip("torch")
    from toolkit.deploy.enhance import Enhancer
    from toolkit.camera.raw import read_mosaic

    enhancer = Enhancer(ratio="100")
    dark, darker = read_mosaic(dark_dng("RGGB", 48, 64, seed=1)), read_mosaic(dark_dng("RGGB", 48, 64, seed=2))
    held = enhancer.enhance(dark, bits=8).image
    kept = held.copy()
    second = enhancer.enhance(darker, bits=8)
    assert np.array_equal(held, kept) and not np.array_equal(second.image, held)
    expected, address = second.image.copy(), second.image.ctypes.data
    del second
    again = enhancer.enhance(darker, bits=8).image
    assert again.ctypes.data == address and np.array_equal(again, expected)


def test_a_free_buffer_of_another_shape_is_let_go_before_a_new_one_is_made():
    buffers = OutputBuffers()
    small, _ = buffers.take((4, 4))
    gone = weakref.ref(small)
    del small
    seen = []
    buffers._new = lambda shape, dtype: (seen.append(gone() is None), OutputBuffers._new(buffers, shape, dtype))[1]
    buffers.take((8, 8))
    assert seen == [True]  # freed before the new one was allocated: never two photo-sized buffers for one
