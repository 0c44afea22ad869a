"""The dark RAW synthesiser: noise statistics, levels, ratio, phase, determinism, the split."""
from __future__ import annotations

import hashlib
import logging

import numpy as np
import pytest

from toolkit.data.dataset import EVAL_CROPS_PER_PHOTO, evaluation_scenes, load_photo_dir
from toolkit.errors import InputError
from toolkit.data.sources import EVAL_PHOTOS, TRAIN_PHOTOS
from toolkit.data.synth import A7S2, NoiseParams, UnprocessParams, add_sensor_noise, make_dark_pair, mosaic_rggb, sample_scene, unprocess

NO_READ = dict(read_scale=1e-9, read_lambda=0.1, row_scale=1e-9)


def test_shot_noise_variance_grows_with_signal_as_the_model_says():
    rng = np.random.default_rng(0)
    k = 2.0
    noise = NoiseParams(system_gain=k, **NO_READ)
    for level in (20.0, 200.0, 2000.0):
        raw = add_sensor_noise(np.full((256, 256), level), noise, rng).astype(np.float64)
        # Poisson(level / K) * K has variance K * level; rounding adds about 1/12 + 1/12.
        assert raw.var() == pytest.approx(k * level + 1 / 6, rel=0.08)
        assert raw.mean() == pytest.approx(A7S2.black_level + level, abs=0.5)


def test_read_and_row_noise_scale_with_their_parameters():
    rng = np.random.default_rng(1)
    weak = NoiseParams(system_gain=1.0, read_scale=1.0, read_lambda=0.1, row_scale=0.5)
    strong = NoiseParams(system_gain=1.0, read_scale=8.0, read_lambda=0.1, row_scale=4.0)
    dark = np.zeros((256, 256))
    v_weak = add_sensor_noise(dark, weak, rng).astype(float).var()
    v_strong = add_sensor_noise(dark, strong, rng).astype(float).var()
    assert v_strong > 20 * v_weak  # no signal: read, row and rounding noise only
    rows = add_sensor_noise(dark + 100, NoiseParams(1.0, 1e-9, 0.1, 20.0), rng).astype(float)
    assert rows.mean(axis=1).std() > 15  # banding: whole rows move together


def test_black_level_and_ratio_are_respected():
    rng = np.random.default_rng(2)
    clean = np.full((128, 128, 3), 0.5, np.float32)
    for ratio in (100, 300):
        pair = make_dark_pair(clean, ratio, rng)
        linear = mosaic_rggb(unprocess(clean, pair.unprocess))
        assert (pair.normalised() * ratio).mean() == pytest.approx(linear.mean(), rel=0.1)
        assert pair.raw.dtype == np.uint16 and pair.raw.max() <= A7S2.white_level
    black = make_dark_pair(np.zeros((128, 128, 3), np.float32), 300, rng)
    assert black.raw.astype(float).mean() == pytest.approx(A7S2.black_level, abs=1.0)


def test_mosaic_phase_is_rggb():
    params = UnprocessParams(2.0, 1.7, 1.0)
    for channel, position in ((0, (0, 0)), (2, (1, 1))):
        image = np.zeros((4, 4, 3), np.float32)
        image[..., channel] = 1.0
        cam = unprocess(image, params)
        mosaic = mosaic_rggb(cam)
        # The dominant response sits at the colour's Bayer site.
        assert np.unravel_index(np.argmax(mosaic[:2, :2]), (2, 2)) == position


def test_same_seed_same_data_bit_for_bit():
    a, b, c = sample_scene(7, (64, 96)), sample_scene(7, (64, 96)), sample_scene(8, (64, 96))
    assert np.array_equal(a.raw, b.raw) and np.array_equal(a.target, b.target)
    assert not np.array_equal(a.raw, c.raw)


def test_evaluation_set_is_fixed_and_large_enough():
    first, second = evaluation_scenes(), evaluation_scenes()
    assert len(first) >= 30 and len(first) == len(EVAL_PHOTOS) * EVAL_CROPS_PER_PHOTO * 3
    assert {s.ratio for s in first} == {100.0, 250.0, 300.0}
    digest = lambda scenes: hashlib.sha256(b"".join(s.pair.raw.tobytes() + s.pair.target.tobytes() for s in scenes)).hexdigest()
    assert digest(first) == digest(second)


def test_split_keeps_evaluation_photos_out_of_training():
    from toolkit.data.dataset import TrainingSampler

    assert not {p.name for p in EVAL_PHOTOS} & {p.name for p in TRAIN_PHOTOS}
    eval_hashes = {p.sha256() for p in EVAL_PHOTOS}
    assert not eval_hashes & {p.sha256() for p in TRAIN_PHOTOS}
    eval_pixels = {hashlib.sha256(p.load().tobytes()).hexdigest() for p in EVAL_PHOTOS}
    sampler = TrainingSampler(pool_size=1)
    assert sampler.photos and not eval_pixels & {hashlib.sha256(p.tobytes()).hexdigest() for p in sampler.photos}


def test_photo_dir_reports_unusable_files_by_name(tmp_path, caplog):
    from PIL import Image

    with pytest.raises(InputError, match="no usable photo"):
        load_photo_dir(tmp_path)
    (tmp_path / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\nnot really")
    (tmp_path / "notes.txt").write_text("hello")
    Image.fromarray(np.zeros((80, 90, 3), np.uint8)).save(tmp_path / "good.png")
    with caplog.at_level(logging.WARNING):
        photos = load_photo_dir(tmp_path)
    assert [name for name, _ in photos] == ["good.png"]
    assert "broken.png" in caplog.text and "notes.txt" in caplog.text
    with pytest.raises(InputError, match="not a folder"):
        load_photo_dir(tmp_path / "good.png")


def test_detail_recipe_batches_are_deterministic_white_balanced_and_varied():
    from toolkit.data.dataset import DataMix, TrainingSampler
    from toolkit.training.config import RECIPES

    mix = RECIPES["detail-wb-v2"].data
    assert not mix.legacy and DataMix().legacy
    a = TrainingSampler(3, 64, 4, pool_size=4, mix=mix)
    b = TrainingSampler(3, 64, 4, pool_size=4, mix=mix)
    for step in (0, 7):
        for x, y in zip(a.batch(step), b.batch(step)):
            np.testing.assert_array_equal(x, y)
    ratios = np.concatenate([a.batch(s)[2] for s in range(40)])
    assert ratios.min() < 10 and ratios.max() > 100  # clean-ish to SID-dark
    rng = np.random.default_rng(0)
    pair, _ = a.sample(rng)
    balanced, applied = a.network_input(pair, np.random.default_rng(1))
    red_gain = pair.unprocess.red_gain
    ratio = balanced[0::2, 0::2].sum() / max(pair.normalised()[0::2, 0::2].sum(), 1e-9)
    assert abs(np.log(ratio / red_gain)) < 0.2  # the file's red gain, times a small estimation error
    assert ratio == pytest.approx(applied[0], rel=1e-4) and applied[1] == 1.0  # and it says which


def test_detail_scenes_are_deterministic_and_in_range():
    from toolkit.data.scenes import SCENE_KINDS, detail_scene

    for kind in SCENE_KINDS:
        a = detail_scene((48, 64), np.random.default_rng(1), kind)
        b = detail_scene((48, 64), np.random.default_rng(1), kind)
        np.testing.assert_array_equal(a, b)
        assert a.shape == (48, 64, 3) and a.dtype == np.float32 and 0 <= a.min() and a.max() <= 1
        assert np.abs(np.diff(a, axis=1)).mean() > 0.01  # detail, not flat colour
