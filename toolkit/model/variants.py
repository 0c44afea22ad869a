"""The named LLPackNet configurations (torch-free, so the CLI and manifests can name them anywhere)."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class VariantConfig:
    """A named LLPackNet configuration."""

    name: str
    amplifier: bool  # paper: gamma from a histogram; 2022: caller multiplies by the exposure ratio
    sigmoid: bool  # 2022 adds a final sigmoid; the paper's output is linear
    weight_norm: bool  # how the official checkpoint stores its convolutions
    description: str


VARIANTS: dict[str, VariantConfig] = {
    "llpacknet-bmvc2020": VariantConfig(
        "llpacknet-bmvc2020", amplifier=True, sigmoid=False, weight_norm=False,
        description="paper version: histogram amplifier computes the gain, linear output",
    ),
    "llpacknet-2022": VariantConfig(
        "llpacknet-2022", amplifier=False, sigmoid=True, weight_norm=True,
        description="2022 revision: input pre-multiplied by the exposure ratio, sigmoid output",
    ),
}
DEFAULT_VARIANT = "llpacknet-bmvc2020"
WEIGHTS_DIR = Path(__file__).resolve().parent / "weights"
DEFAULT_CHECKPOINT = WEIGHTS_DIR / "llpacknet_default.pt"  # the trained default weights, with their JSON record beside them
