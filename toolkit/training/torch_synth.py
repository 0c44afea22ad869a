"""The dark-RAW synthesiser of `toolkit.data.synth` in torch, batched, on any device.

On a GPU the numpy synthesiser would starve the network (a CPU core makes a few batches a second;
a GPU trains hundreds). Here the CPU only draws each sample's clean crop and parameters
(`TrainingSampler.draw`); unprocessing, the mosaic, every noise term and the white balance run on
the training device. Same model as the numpy code, term by term; checked against it statistically
in `tests/test_torch_synth.py` (its random streams differ, so not bit for bit).
"""
from __future__ import annotations

import numpy as np
import torch

from toolkit.data.dataset import SampleSpec
from toolkit.data.synth import A7S2, HIGHLIGHTS, SensorProfile, srgb_to_cam


def _inverse_tone(srgb: torch.Tensor) -> torch.Tensor:
    y = srgb.clamp(0.0, 1.0)
    return 0.5 - torch.sin(torch.asin(1.0 - 2.0 * y) / 3.0)


def _tukey_lambda(u: torch.Tensor, lam: torch.Tensor) -> torch.Tensor:
    small = lam.abs() < 1e-6
    safe = torch.where(small, torch.ones_like(lam), lam)
    general = (u ** safe - (1 - u) ** safe) / safe
    return torch.where(small, torch.log(u / (1 - u)), general)


def synthesise(specs: list[SampleSpec], device: torch.device | str, white_balance: str = "file",
               sensor: SensorProfile = A7S2, generator: torch.Generator | None = None,
               highlights: str = "keep") -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """(inputs [B, 1, H, W] as the network sees them, targets [B, 3, H, W] sRGB, ratios [B], the
    white-balance gains applied [B, 3]) on `device`. `white_balance` "file" balances the input with
    each sample's gains times its estimation error; `highlights` as `toolkit.data.synth.unprocess`."""
    if highlights not in HIGHLIGHTS:
        raise ValueError(f"highlights must be one of {HIGHLIGHTS}, not {highlights!r}")
    device = torch.device(device)

    def column(values) -> torch.Tensor:
        return torch.tensor(np.asarray(values, np.float32), device=device).reshape(-1, 1, 1, 1)

    clean = torch.from_numpy(np.stack([s.clean for s in specs])).to(device).permute(0, 3, 1, 2)  # B, 3, H, W
    target = clean.clamp(0, 1)
    linear = _inverse_tone(clean).clamp_min(1e-8) ** 2.2
    matrices = torch.tensor(np.stack([srgb_to_cam(s.xyz_to_cam) for s in specs]), dtype=torch.float32, device=device)
    cam = torch.einsum("bij,bjhw->bihw", matrices, linear)
    gains = torch.tensor([[1.0 / s.unprocess.red_gain, 1.0, 1.0 / s.unprocess.blue_gain] for s in specs], device=device)
    gains = (gains / column([s.unprocess.brightness_gain for s in specs]).reshape(-1, 1)).reshape(-1, 3, 1, 1)
    if highlights == "keep":
        grey = cam.mean(dim=1, keepdim=True)
        mask = ((grey - 0.9).clamp_min(0.0) / 0.1) ** 2  # keep saturated whites from turning grey
        gains = torch.maximum(mask + (1.0 - mask) * gains, gains)
    cam = (cam * gains).clamp(0.0, 1.0)
    mosaic = torch.empty_like(cam[:, :1])
    mosaic[:, 0, 0::2, 0::2] = cam[:, 0, 0::2, 0::2]
    mosaic[:, 0, 0::2, 1::2] = cam[:, 1, 0::2, 1::2]
    mosaic[:, 0, 1::2, 0::2] = cam[:, 1, 1::2, 0::2]
    mosaic[:, 0, 1::2, 1::2] = cam[:, 2, 1::2, 1::2]
    span = float(sensor.white_level - sensor.black_level)
    ratio = column([s.ratio for s in specs])
    signal = mosaic * span / ratio
    k = column([s.noise.system_gain for s in specs])
    shot = torch.poisson(signal.clamp_min(0.0) / k, generator=generator) * k
    u = torch.rand(signal.shape, generator=generator, device=device).mul(1 - 2e-6).add(1e-6)
    read = _tukey_lambda(u, column([s.noise.read_lambda for s in specs])) * column([s.noise.read_scale for s in specs])
    rows = torch.randn((len(specs), 1, signal.shape[2], 1), generator=generator, device=device) * column([s.noise.row_scale for s in specs])
    quant = torch.rand(signal.shape, generator=generator, device=device) - 0.5
    raw = torch.round(shot + read + rows + quant + sensor.black_level).clamp(0, sensor.white_level)
    x = ((raw - sensor.black_level) / span).clamp_min(0.0)
    wb = torch.ones((len(specs), 3), device=device)
    if white_balance == "file":
        wb = torch.tensor([[s.unprocess.red_gain * s.white_balance_error[0], 1.0, s.unprocess.blue_gain * s.white_balance_error[2]]
                           for s in specs], device=device)
        x[:, 0, 0::2, 0::2] *= wb[:, 0, None, None]
        x[:, 0, 1::2, 1::2] *= wb[:, 2, None, None]
    return x, target, ratio.reshape(-1), wb
