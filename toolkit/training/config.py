"""Training settings, kept free of torch so the CLI can describe them on a device without it."""
from __future__ import annotations

from dataclasses import dataclass

from toolkit.model.variants import DEFAULT_VARIANT


@dataclass
class TrainConfig:
    steps: int = 12000
    batch_size: int = 8
    crop: int = 256
    lr: float = 3e-4
    min_lr: float = 1e-5
    warmup: int = 200
    amplifier_samples: int = 2048
    ratio_jitter: float = 0.1  # std of log-gain noise when the body sees the true ratio
    pool_size: int = 256
    seed: int = 0
    variant: str = DEFAULT_VARIANT
    photos_dir: str | None = None
    checkpoint_every: int = 250
    log_every: int = 50
    device: str = "auto"
