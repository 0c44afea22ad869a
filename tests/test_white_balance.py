"""White balance from the file: read from DNG metadata, applied per Bayer plane before packing for
weights trained on white-balanced input, and estimated (grey world) when a file has none."""
from __future__ import annotations

import logging

import numpy as np
import pytest

from toolkit.camera.bayer import HISTOGRAM_EDGES, histogram_counts, mosaic_histogram, pack_network_input, plane_gains
from toolkit.camera.colour import (
    CAMERA_MATRICES,
    HELD_OUT_CAMERAS,
    TRAINING_CAMERAS,
    choose_white_balance,
    gray_world_gains,
    mixed_camera_matrix,
    parse_white_balance,
)
from toolkit.camera.dng import write_dng
from toolkit.camera.raw import Mosaic, read_mosaic
from toolkit.data.synth import apply_white_balance
from toolkit.errors import InputError

from conftest import needs_torch


def _mosaic(seed: int = 0, size: tuple[int, int] = (64, 96)) -> np.ndarray:
    return np.random.default_rng(seed).uniform(0, 0.5, size).astype(np.float32)


@pytest.mark.parametrize("layout", ["NCHW", "NHWC"])
def test_per_plane_gains_equal_packing_a_balanced_mosaic(layout):
    mosaic = _mosaic()
    gains = (2.1, 1.0, 1.6)
    direct = pack_network_input(mosaic, plane_gains(50.0, gains), layout)
    balanced = pack_network_input(apply_white_balance(mosaic, gains), 50.0, layout)
    np.testing.assert_allclose(direct, balanced, rtol=1e-6)
    np.testing.assert_array_equal(pack_network_input(mosaic, plane_gains(50.0), layout), pack_network_input(mosaic, 50.0, layout))


def test_histogram_of_a_balanced_mosaic_without_making_it():
    mosaic = _mosaic(1, (128, 128))
    gains = (2.0, 1.0, 1.5)
    counts, size = mosaic_histogram(mosaic, HISTOGRAM_EDGES, gains)
    expected = histogram_counts(apply_white_balance(mosaic, gains), HISTOGRAM_EDGES)
    assert size == mosaic.size
    assert np.abs(counts - expected).sum() <= 2  # only values within a rounding of a bin edge may move
    assert counts.sum() == expected.sum()


def test_dng_white_balance_is_read_as_gains(tmp_path):
    raw = (np.random.default_rng(2).uniform(600, 4000, (64, 64))).astype(np.uint16)
    write_dng(tmp_path / "wb.dng", raw, "RGGB", 512, 16383, as_shot_neutral=(0.5, 1.0, 0.625))
    mosaic = read_mosaic(tmp_path / "wb.dng")
    np.testing.assert_allclose(mosaic.white_balance, (2.0, 1.0, 1.6), rtol=1e-3)
    chosen = choose_white_balance(mosaic, "file")
    assert chosen.source == "file (as shot)"
    np.testing.assert_allclose(chosen.gains, (2.0, 1.0, 1.6), rtol=1e-3)


def test_no_metadata_falls_back_to_grey_world_and_says_so(caplog):
    rng = np.random.default_rng(3)
    grey = rng.uniform(0.05, 0.4, (64, 64)).repeat(2, 0).repeat(2, 1)  # a grey scene, constant per 2x2 cell
    cast = apply_white_balance(grey, (0.5, 1.0, 0.8))  # the raw under a coloured light: R and B weaker
    mosaic = Mosaic(cast, "RGGB", (0.0,) * 4, 1.0, source="cast.npy")
    with caplog.at_level(logging.WARNING):
        chosen = choose_white_balance(mosaic, "file")
    assert "no white-balance metadata" in caplog.text and chosen.source.startswith("grey world")
    np.testing.assert_allclose(chosen.gains, (2.0, 1.0, 1.25), rtol=1e-3)
    assert choose_white_balance(mosaic, (4.2, 2.0, 3.2)).gains == pytest.approx((2.1, 1.0, 1.6))


def test_grey_world_reads_the_pattern():
    grey = np.full((32, 32), 0.2, np.float32)
    bggr = grey.copy()
    bggr[0::2, 0::2] *= 0.5  # blue sites of a BGGR mosaic
    assert gray_world_gains(bggr, np.array([[2, 1], [1, 0]])) == pytest.approx((1.0, 1.0, 2.0))


@pytest.mark.parametrize("text", ["2,1", "a,b,c", "1,-1,1", "0,1,1", "nan,1,1"])
def test_bad_white_balance_is_one_input_error(text):
    with pytest.raises(InputError):
        parse_white_balance(text)


def test_white_balance_choices():
    assert parse_white_balance(None) == "file" and parse_white_balance("auto") == "auto"
    assert parse_white_balance("4,2,3") == (2.0, 1.0, 1.5)


def test_camera_split_and_mixtures():
    assert not set(TRAINING_CAMERAS) & set(HELD_OUT_CAMERAS)
    assert set(TRAINING_CAMERAS) | set(HELD_OUT_CAMERAS) == set(CAMERA_MATRICES)
    rng = np.random.default_rng(4)
    matrices = np.stack([CAMERA_MATRICES[c] for c in TRAINING_CAMERAS])
    mixed = mixed_camera_matrix(rng)
    assert np.all(mixed >= matrices.min(0) - 1e-12) and np.all(mixed <= matrices.max(0) + 1e-12)


def test_synthetic_pair_white_balance_undoes_the_unprocessing():
    from toolkit.data.synth import UnprocessParams, make_dark_pair

    rng = np.random.default_rng(5)
    params = UnprocessParams(2.2, 1.7, 1.0)
    grey = np.full((32, 32, 3), 0.5, np.float32)
    pair = make_dark_pair(grey, 1.0, rng, params=params)
    raw = pair.normalised()
    balanced = pair.white_balanced()
    before = [raw[dy::2, dx::2].mean() for dy in range(2) for dx in range(2)]
    after = [balanced[dy::2, dx::2].mean() for dy in range(2) for dx in range(2)]
    assert before[0] < 0.5 * before[1] and before[3] < 0.7 * before[1]  # the raw is far from grey
    assert np.ptp(after) < 0.02 * np.mean(after)  # a grey scene is grey again once balanced


def test_bright_greys_stay_grey_once_balanced_only_without_the_highlight_mask():
    """Brooks's highlight mask leaves near-white pixels at full scale in every raw channel, so the
    file's white balance turns a bright grey pink: a network trained on that tints true bright greys.
    `highlights="clip"` (recipe detail-wb-v3) keeps every grey grey, up to full white."""
    from toolkit.camera.colour import CAMERA_MATRICES
    from toolkit.data.synth import UnprocessParams, unprocess

    params = UnprocessParams(2.3, 1.6, 1.25)
    levels = np.linspace(0.02, 1.0, 50, dtype=np.float32)
    greys = np.repeat(levels[None, :, None], 3, axis=2)  # 1 x 50 x 3, from near black to white
    for matrix in (None, CAMERA_MATRICES["Canon EOS 6D"]):
        balanced = {mode: unprocess(greys, params, xyz_to_cam=matrix, highlights=mode) * np.array(params.white_balance, np.float32)
                    for mode in ("keep", "clip")}
        clip = balanced["clip"][0]
        np.testing.assert_allclose(clip[:, 0], clip[:, 1], rtol=1e-4)
        np.testing.assert_allclose(clip[:, 2], clip[:, 1], rtol=1e-4)
        assert np.all(np.diff(clip[:, 1]) > 0)  # brightness order kept up to white
        keep = balanced["keep"][0]
        assert keep[-1, 0] > 1.5 * keep[-1, 1] and np.allclose(keep[:20, 0], keep[:20, 1], rtol=1e-4)
    with pytest.raises(ValueError):
        unprocess(greys, params, highlights="bloom")


@needs_torch
def test_training_clips_the_amplified_input_where_inference_does():
    import torch

    from toolkit.camera.bayer import input_scaling, pack_network_input
    from toolkit.model.llpacknet import pack
    from toolkit.training.trainer import clipped_at_full_scale

    rng = np.random.default_rng(8)
    raw = rng.uniform(0, 0.03, (2, 32, 48)).astype(np.float32)
    balances = [(2.4, 1.0, 1.3), (1.1, 1.0, 3.0)]
    gains = [60.0, 45.0]
    balanced = np.stack([apply_white_balance(r, b) for r, b in zip(raw, balances)])[:, None]
    trained = clipped_at_full_scale(torch.from_numpy(balanced), torch.tensor(gains), torch.tensor(balances))
    for i in range(2):
        multipliers, ceiling = input_scaling(gains[i], balances[i])
        shipped = pack_network_input(raw[i], multipliers, ceiling=ceiling)
        np.testing.assert_allclose(pack(trained[i : i + 1]).numpy(), shipped, rtol=1e-6)
        assert (shipped == ceiling.max()).any() or (raw[i] * gains[i] >= 1).any()  # some sites really clip


@needs_torch
def test_weights_that_expect_white_balance_get_it(tmp_path):
    import torch

    from toolkit.deploy.enhance import Enhancer
    from toolkit.model.checkpoint import load_model, save_checkpoint
    from toolkit.model.llpacknet import create_model

    torch.manual_seed(0)
    model = create_model("llpacknet-bmvc2020")
    save_checkpoint(model, tmp_path / "plain.pt")
    save_checkpoint(model, tmp_path / "balanced.pt", input={"white_balance": "file"})
    assert load_model(tmp_path / "plain.pt").input_contract == {"white_balance": "none"}
    assert load_model(tmp_path / "balanced.pt").input_contract == {"white_balance": "file"}
    data = _mosaic(6, (64, 64)) * 0.01
    gains = (2.0, 1.0, 1.5)
    with_metadata = Mosaic(data, "RGGB", (0.0,) * 4, 1.0, white_balance=gains)
    pre_balanced = Mosaic(apply_white_balance(data, gains), "RGGB", (0.0,) * 4, 1.0, white_balance=gains)
    a = Enhancer(checkpoint=tmp_path / "balanced.pt", ratio=100).enhance(with_metadata)
    b = Enhancer(checkpoint=tmp_path / "plain.pt", ratio=100).enhance(pre_balanced)
    assert a.white_balance.gains == gains and a.white_balance.source == "file (as shot)" and b.white_balance is None
    np.testing.assert_allclose(a.image, b.image, atol=1e-5)
    forced = Enhancer(checkpoint=tmp_path / "balanced.pt", ratio=100, white_balance="1,1,1").enhance(with_metadata)
    assert forced.white_balance.source == "user"


@needs_torch
def test_an_unreadable_input_contract_is_refused(tmp_path):
    from toolkit.errors import CheckpointError
    from toolkit.model.checkpoint import load_model, save_checkpoint
    from toolkit.model.llpacknet import create_model

    save_checkpoint(create_model("llpacknet-bmvc2020"), tmp_path / "odd.pt", input={"white_balance": "sometimes"})
    with pytest.raises(CheckpointError, match="input contract"):
        load_model(tmp_path / "odd.pt")


@needs_torch
def test_an_artifact_carries_and_applies_the_white_balance_contract(tmp_path):
    import json

    import torch

    from conftest import missing_for_export
    from toolkit.deploy.enhance import Enhancer
    from toolkit.deploy.export import export
    from toolkit.model.checkpoint import save_checkpoint
    from toolkit.model.llpacknet import create_model

    if missing_for_export("onnxruntime", "fp32"):
        pytest.skip(missing_for_export("onnxruntime", "fp32"))
    torch.manual_seed(1)
    save_checkpoint(create_model("llpacknet-bmvc2020"), tmp_path / "balanced.pt", input={"white_balance": "file"})
    export("onnxruntime", "fp32", "64x96", tmp_path / "artifact", checkpoint=tmp_path / "balanced.pt")
    steps = json.loads((tmp_path / "artifact" / "manifest.json").read_text())["input"]["preprocessing"]
    assert [s["step"] for s in steps][:2] == ["normalise", "white_balance"] and steps[1]["applied"] is True
    mosaic = Mosaic(_mosaic(7, (64, 96)) * 0.01, "RGGB", (0.0,) * 4, 1.0, white_balance=(2.0, 1.0, 1.5))
    by_torch = Enhancer(checkpoint=tmp_path / "balanced.pt", ratio="auto").enhance(mosaic)
    by_artifact = Enhancer(model=tmp_path / "artifact", ratio="auto").enhance(mosaic)
    assert by_artifact.white_balance == by_torch.white_balance and by_artifact.gain == pytest.approx(by_torch.gain, rel=1e-5)
    np.testing.assert_allclose(by_artifact.image, by_torch.image, atol=1e-4)
    # The profiler's camera path and its quality inputs follow the same contract as `llpack enhance`.
    from toolkit.bench.profile import ModelSpec, input_contract, prepare_inputs
    from toolkit.bench.worker import LLPackNetModel
    from toolkit.camera.bayer import features_to_image

    worker = LLPackNetModel({"path": str(tmp_path / "artifact")})
    worker.load()
    packed, place = worker.preprocess(mosaic, (64, 96), ratio=100.0)
    np.testing.assert_allclose(features_to_image(worker.run(packed)[0], place), by_artifact.image, atol=1e-5)
    spec = ModelSpec("onnxruntime-fp32", "artifact", (64, 96), str(tmp_path / "artifact"), "onnxruntime")
    assert input_contract([spec]) == "file"
    info = prepare_inputs(tmp_path / "inputs", (64, 96), "file")
    assert info["white_balance"] == "file" and prepare_inputs(tmp_path / "inputs", (64, 96))["white_balance"] == "none"


def test_the_colour_matrix_decision_rests_on_the_figures_the_docs_give():
    """docs/enhance.md says why the file's colour matrix is not an input: one shared colour map costs
    the A7S II 37.7 dB (CIEDE2000 1.66) on clean crops. The benchmark re-measures it."""
    import json
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    proc = subprocess.run([sys.executable, "benchmarks/colour_matrix_cost.py", "--json"], cwd=root, capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    rows = {r["camera"]: r for r in json.loads(proc.stdout)["cameras"]}
    assert len(rows) == 11 and sum(r["held_out"] for r in rows.values()) == 4
    sony = rows["Sony ILCE-7SM2"]
    docs = " ".join((root / "docs" / "enhance.md").read_text().split())
    assert f"{sony['psnr_db']:.1f} dB and CIEDE2000 {sony['ciede2000']:.2f}" in docs
    assert min(r["psnr_db"] for r in rows.values()) >= 34.0
