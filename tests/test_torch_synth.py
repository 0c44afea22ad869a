"""The torch synthesiser (for GPU training) follows the numpy one: same means, same noise, same balance."""
from __future__ import annotations

import numpy as np
import pytest

from conftest import needs_torch
from toolkit.camera.colour import CAMERA_MATRICES
from toolkit.data.dataset import SampleSpec
from toolkit.data.synth import A7S2, NoiseParams, UnprocessParams, make_dark_pair

pytestmark = needs_torch


def _spec(level: float, ratio: float, gain: float, size: int = 64) -> SampleSpec:
    rng = np.random.default_rng(0)
    clean = np.full((size, size, 3), level, np.float32)
    clean[: size // 2] *= 0.5  # two flat regions
    noise = NoiseParams.sample(rng, A7S2, gain=gain)
    return SampleSpec(clean, ratio, UnprocessParams(2.1, 1.7, 1.2), CAMERA_MATRICES["Canon EOS 6D"], noise, (1.0, 1.0, 1.0))


@pytest.mark.parametrize("level, ratio, gain, highlights", [(0.6, 100.0, 0.3, "keep"), (0.4, 300.0, 4.0, "keep"), (0.8, 10.0, 1.0, "keep"),
                                                         (0.95, 1.0, 0.1, "keep"), (0.95, 1.0, 0.1, "clip"), (0.6, 100.0, 0.3, "clip")])
def test_torch_pairs_match_numpy_statistics(level, ratio, gain, highlights):
    import torch

    from toolkit.training.torch_synth import synthesise

    spec = _spec(level, ratio, gain)
    generator = torch.Generator().manual_seed(1)
    torch_inputs = torch.cat([synthesise([spec], "cpu", generator=generator, highlights=highlights)[0] for _ in range(24)]).numpy()[:, 0]
    numpy_inputs = []
    for i in range(24):
        pair = make_dark_pair(spec.clean, ratio, np.random.default_rng(100 + i), A7S2, params=spec.unprocess,
                              xyz_to_cam=spec.xyz_to_cam, noise=spec.noise, highlights=highlights)
        numpy_inputs.append(pair.white_balanced())
    numpy_inputs = np.stack(numpy_inputs)
    for dy in range(2):
        for dx in range(2):
            for rows in (slice(0, 32), slice(32, 64)):  # each flat region, each Bayer site
                a = torch_inputs[:, rows, :][:, dy::2, dx::2]
                b = numpy_inputs[:, rows, :][:, dy::2, dx::2]
                assert a.mean() == pytest.approx(b.mean(), rel=0.03, abs=2e-5)
                assert a.std() == pytest.approx(b.std(), rel=0.08, abs=2e-5)


def test_torch_targets_and_white_balance():
    import torch

    from toolkit.training.torch_synth import synthesise

    spec = _spec(0.5, 1.0, 0.1)
    inputs, targets, ratios, gains = synthesise([spec, spec], "cpu", generator=torch.Generator().manual_seed(0))
    assert inputs.shape == (2, 1, 64, 64) and targets.shape == (2, 3, 64, 64) and ratios.tolist() == [1.0, 1.0]
    np.testing.assert_allclose(gains.numpy(), [[2.1, 1.0, 1.7]] * 2, rtol=1e-6)
    np.testing.assert_array_equal(targets[0].permute(1, 2, 0).numpy(), spec.clean)
    plain, _, _, ones = synthesise([spec], "cpu", white_balance="none", generator=torch.Generator().manual_seed(0))
    assert ones.tolist() == [[1.0, 1.0, 1.0]]
    red = inputs[0, 0, 0::2, 0::2].mean() / plain[0, 0, 0::2, 0::2].mean()
    assert float(red) == pytest.approx(2.1, rel=0.02)


def test_draw_gives_what_sample_would_make():
    from toolkit.data.dataset import TrainingSampler
    from toolkit.training.config import RECIPES

    sampler = TrainingSampler(2, 64, 2, pool_size=4, mix=RECIPES["detail-wb-v2"].data)
    spec = sampler.draw(np.random.default_rng(9))
    pair, ratio = sampler.sample(np.random.default_rng(9))
    assert spec.ratio == ratio and spec.unprocess == pair.unprocess and spec.noise == pair.noise
    np.testing.assert_array_equal(spec.clean, pair.target)
    np.testing.assert_array_equal(spec.xyz_to_cam, pair.xyz_to_cam)
