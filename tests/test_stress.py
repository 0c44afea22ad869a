"""INT8 robustness: the stress set, the input clip, the worst-case gate and the out-of-range warning."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from conftest import needs_torch


def test_stress_set_is_fixed_covers_every_category_and_keeps_calibration_apart():
    from toolkit.data.sources import EVAL_PHOTOS
    from toolkit.data.stress import CATEGORIES, stress_scenes

    size = (128, 192)
    first, again = stress_scenes(size), stress_scenes(size)
    assert [s.name for s in first] == [s.name for s in again]
    assert all(np.array_equal(a.pair.raw, b.pair.raw) and a.gain == b.gain for a, b in zip(first, again))
    assert sorted({s.category for s in first}) == sorted(CATEGORIES) and len(first) == 2 * len(CATEGORIES)
    by_category = {c: [s for s in first if s.category == c] for c in CATEGORIES}
    assert all(2 <= s.gain / s.pair.ratio <= 3 for s in by_category["over_amplified"])
    assert all(s.gain == s.pair.ratio for c, group in by_category.items() if c != "over_amplified" for s in group)
    assert all((s.pair.raw == s.pair.sensor.white_level).any() for s in by_category["clipped_highlights"])
    assert all(min(s.pair.raw.shape) < min(size) or s.pair.raw.shape != size for s in by_category["non_square"])
    assert all(s.pair.raw.shape[0] <= size[0] and s.pair.raw.shape[1] <= size[1] for s in first)

    calibration = stress_scenes(size, split="calibration", per_category=3)
    eval_names = {p.name for p in EVAL_PHOTOS}
    photo_sources = {s.name.split(":", 1)[1] for s in calibration if s.category in ("over_amplified", "mild_noise", "harsh_noise")}
    assert photo_sources and not photo_sources & eval_names  # calibration never reads an evaluation photo
    raws = {s.pair.raw.tobytes() for s in first}
    assert not any(s.pair.raw.tobytes() in raws for s in calibration)


def test_the_amplified_input_is_clipped_where_the_sensor_saturates():
    from toolkit.camera.bayer import input_ceiling, input_exposure, pack_network_input, pack_rggb

    mosaic = np.random.default_rng(0).uniform(0, 0.009, (32, 48)).astype(np.float32)
    mosaic[:4, :4] = 1.0  # a light source at full scale
    packed = pack_network_input(mosaic, 100.0)
    assert packed.max() == 1.0
    np.testing.assert_array_equal(packed, np.minimum(pack_rggb(mosaic)[None] * np.float32(100.0), 1.0))
    assert pack_network_input(mosaic, 100.0, ceiling=None).max() == pytest.approx(100.0)
    # White-balanced weights: each plane saturates at its own gain (full scale before the balance).
    balance = (2.0, 1.0, 1.5)
    gains = np.float32(100.0) * np.array([2.0, 1.0, 1.0, 1.5], np.float32)
    balanced = pack_network_input(mosaic, gains, ceiling=input_ceiling(balance))
    assert [float(plane.max()) for plane in balanced[0].reshape(4, 64, -1)] == [2.0, 1.0, 1.0, 1.5]
    stats = input_exposure(mosaic, 100.0)
    assert stats["clipped_fraction"] == pytest.approx(16 / mosaic.size)
    assert stats["mean"] == pytest.approx(float(np.minimum(mosaic * 100, 1).mean()), rel=1e-5)


@needs_torch
def test_int8_manifest_reports_the_stress_set_and_a_fresh_validation_reproduces_it(small_artifacts):
    """The stress figures in the manifest are what running the artifact on the stress set gives now."""
    import torch

    from targets import get_target
    from toolkit.data.stress import CATEGORIES
    from toolkit.deploy.export import stress_inputs, validate, validation_inputs
    from toolkit.model.checkpoint import load_model
    from toolkit.model.llpacknet import PackedBody

    model = load_model(None)
    body, white_balance = PackedBody(model).eval(), model.input_contract["white_balance"]
    checked = 0
    for (target, precision), manifest in small_artifacts.items():
        if precision != "int8":
            continue
        stress = manifest["validation"]["stress"]
        assert set(stress["categories"]) == set(CATEGORIES) and stress["images"] == 2 * len(CATEGORIES)
        assert stress["worst_db"] == min(c["worst_db"] for c in stress["categories"].values())
        limits = manifest["validation"]["validated_input"]
        assert 0 < limits["clipped_fraction"] < 1 and limits["mean"] > 0
        size = tuple(manifest["size"])
        images = validation_inputs(size, white_balance=white_balance) + stress_inputs(size, white_balance)
        with torch.inference_mode():
            references = [body(torch.from_numpy(i.packed)).numpy() for i in images]
        again = validate(get_target(target).load(Path(manifest["path"]), {}), images, references)
        assert again["stress"]["mean_db"] == pytest.approx(stress["mean_db"], abs=0.01)
        assert again["stress"]["worst_db"] == pytest.approx(stress["worst_db"], abs=0.01)
        checked += 1
    if not checked:
        pytest.skip("no INT8 backend installed")


@needs_torch
@pytest.mark.parametrize("target,size", [("openvino", (512, 512)), ("openvino", (768, 1024)),
                                         ("tflite", (512, 512)), ("tflite", (768, 1024))])
def test_int8_holds_on_the_stress_set(tmp_path, target, size):
    """A fresh export of the default weights: mean >= 40 dB and every stress image >= 32 dB against FP32."""
    needs = {"openvino": ("openvino", "nncf"), "tflite": ("litert_torch", "ai_edge_quantizer", "ai_edge_litert")}
    for module in needs[target]:
        pytest.importorskip(module)
    from toolkit.deploy.export import STRESS_MIN_MEAN_DB, STRESS_MIN_WORST_DB, export
    from toolkit.model.checkpoint import DEFAULT_CHECKPOINT

    if not DEFAULT_CHECKPOINT.exists():
        pytest.skip("INT8 accuracy is only meaningful with the trained default weights")
    manifest = export(target, "int8", size, tmp_path / "int8")
    stress = manifest["validation"]["stress"]
    assert not manifest["validation"]["degraded"]
    assert stress["mean_db"] >= STRESS_MIN_MEAN_DB and stress["worst_db"] >= STRESS_MIN_WORST_DB
    saved = json.loads((tmp_path / "int8" / "manifest.json").read_text())
    assert saved["validation"]["stress"] == stress


@needs_torch
def test_an_input_outside_the_validated_range_warns_and_a_normal_one_does_not(small_artifacts, tmp_path, capsys):
    from toolkit.cli import main
    from toolkit.data.synth import sample_scene

    if ("openvino", "int8") not in small_artifacts and ("tflite", "int8") not in small_artifacts:
        pytest.skip("no INT8 artifact")
    manifest = small_artifacts.get(("openvino", "int8")) or small_artifacts[("tflite", "int8")]
    pair = sample_scene(5, size=(64, 96), ratio=100)
    source = tmp_path / "dark.npy"
    np.save(source, pair.raw)
    common = ["enhance", str(source), "--model", manifest["path"], "--black-level", "512", "--white-level", "16383", "--json"]
    assert main([*common, "-o", str(tmp_path / "normal.png"), "--ratio", "100"]) == 0
    out = capsys.readouterr()
    assert json.loads(out.out)["input_warning"] is None and "validated on" not in out.err
    assert main([*common, "-o", str(tmp_path / "hot.png"), "--ratio", "3000"]) == 0  # 30x over: most of it clips
    out = capsys.readouterr()
    warning = json.loads(out.out)["input_warning"]
    assert warning and "clipped at full scale" in warning
    assert len([line for line in out.err.splitlines() if "validated on" in line]) == 1
    assert "FP32 artifact" in out.err and "--calibration" in out.err
    # An FP32 artifact is never warned about: its output does not depend on calibrated ranges.
    fp32 = small_artifacts.get(("openvino", "fp32")) or small_artifacts[("tflite", "fp32")]
    assert main(["enhance", str(source), "--model", fp32["path"], "--black-level", "512", "--white-level", "16383",
                 "--json", "-o", str(tmp_path / "fp32.png"), "--ratio", "3000"]) == 0
    assert json.loads(capsys.readouterr().out)["input_warning"] is None
