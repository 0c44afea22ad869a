"""Training settings and the registry of named recipes, kept free of torch so the CLI can describe
them on a device without it.

A recipe is everything about *what* the network learns (data mix, exposure ratios, colour
rendering, the input's white balance, the loss); `TrainConfig` is *how long and how fast*. The
recipe's name is recorded in every checkpoint it produces, so weights say what they expect.
"""
from __future__ import annotations

from dataclasses import dataclass, replace

from toolkit.data.dataset import DataMix
from toolkit.model.variants import DEFAULT_VARIANT


@dataclass(frozen=True)
class Recipe:
    """What a training run teaches: its data (`DataMix`: sources, exposure ratios, colour, the
    input's white balance) and its loss, as (term, weight) pairs of `toolkit.training.losses`."""

    name: str
    description: str
    data: DataMix
    loss: tuple[tuple[str, float], ...]
    # The body sees the amplifier's gain instead of the (jittered) true ratio for this share of the
    # samples whose ratio is at least the given one, so `--ratio auto` works with the same weights;
    # below it (near-clean inputs) a histogram says little about the exposure.
    auto_gain: tuple[float, float] = (0.5, 0.0)
    # Fit the amplifier only on the ratios at which the body is fed its estimate (auto_gain's lowest
    # ratio and up), the exposures `--ratio auto` serves; off in recipes recorded before, so they reproduce.
    amplifier_on_auto_band: bool = False
    # Round activations to 8 bits while training, so the weights survive INT8 export: "" (no), or where
    # (`toolkit.training.fake_quant.WHERE`: "conv_inputs" or "produced", as the exporters quantise).
    quantisation_aware: str = ""


RECIPE_V3_DATA = DataMix(
    white_balance="file",
    ratio_bands=((0.6, 80.0, 320.0), (0.3, 10.0, 80.0), (0.1, 1.0, 10.0)),
    sources=(("photos", 0.37), ("leaves", 0.13), ("textured_leaves", 0.2), ("stripes", 0.1), ("text", 0.1), ("patches", 0.1)),
    cameras="mixed", white_balance_error=0.04, wide_white_balance=True, downscale=(0.35, 1.0),
    highlights="clip", clip_input=True,
)

RECIPES: dict[str, Recipe] = {
    "synth-v1": Recipe(
        "synth-v1", "the first default weights: A7S II colour, x100-x300, dead leaves and packaged photos, L1",
        data=DataMix(), loss=(("l1", 1.0),),
    ),
    "detail-wb-v2": Recipe(
        "detail-wb-v2",
        "white-balanced input from the file's metadata; cameras mixed; x1 (clean) to x300 at every sensor gain; "
        "photos, textured dead leaves, stripes and text; L1 plus image-gradient loss for detail",
        data=DataMix(
            white_balance="file",
            ratio_bands=((0.6, 80.0, 320.0), (0.3, 10.0, 80.0), (0.1, 1.0, 10.0)),
            sources=(("photos", 0.45), ("leaves", 0.15), ("textured_leaves", 0.2), ("stripes", 0.1), ("text", 0.1)),
            cameras="mixed", white_balance_error=0.04, wide_white_balance=True, downscale=(0.35, 1.0),
        ),
        loss=(("l1", 1.0), ("gradient", 0.2)),
        auto_gain=(0.3, 50.0),
    ),
    "detail-wb-v3": Recipe(
        "detail-wb-v3",
        "detail-wb-v2 with bright neutrals kept neutral: highlights take the inverse white balance (no Brooks "
        "highlight mask, which taught a white-balanced network to tint bright greys), the amplified input is "
        "clipped at full scale as at run time, and random charts with exact greys join the scenes",
        data=RECIPE_V3_DATA,
        loss=(("l1", 1.0), ("gradient", 0.2)),
        auto_gain=(0.3, 50.0),
    ),
    "detail-wb-v4-int8": Recipe(
        "detail-wb-v4-int8",
        "detail-wb-v3 with 8-bit activations in training (quantisation-aware, so INT8 exports keep the "
        "quality) and the amplifier fitted on the exposures --ratio auto serves",
        data=RECIPE_V3_DATA,
        loss=(("l1", 1.0), ("gradient", 0.2)),
        auto_gain=(0.3, 50.0),
        amplifier_on_auto_band=True,
        quantisation_aware="conv_inputs",
    ),
}
RECIPES["detail-wb-v5-int8"] = replace(
    RECIPES["detail-wb-v4-int8"], name="detail-wb-v5-int8", quantisation_aware="produced",
    description="detail-wb-v4-int8 with activations rounded where the INT8 exporters quantise them: every tensor as "
                "it is produced, over its own range, instead of each convolution's (concatenated) input",
)
RECIPES["detail-wb-v6-int8"] = replace(
    RECIPES["detail-wb-v4-int8"], name="detail-wb-v6-int8",
    data=replace(RECIPE_V3_DATA, ratio_bands=((0.45, 80.0, 320.0), (0.3, 10.0, 80.0), (0.25, 1.0, 10.0))),
    description="detail-wb-v4-int8 with a quarter of the samples near clean (x1-x10, where v4 has a tenth), "
                "for the detail a near-clean input still carries",
)
RECIPES["detail-wb-v7-int8"] = replace(
    RECIPES["detail-wb-v4-int8"], name="detail-wb-v7-int8",
    loss=(("l1", 1.0), ("gradient", 0.2), ("ssim", 0.5)),
    description="detail-wb-v4-int8 with a structural-similarity term (1 - SSIM, as the evaluation scores it) "
                "beside L1 and the gradient term: L1 weighs a flat region's small errors like an edge's",
)
RECIPES["detail-wb-v8-int8"] = replace(
    RECIPES["detail-wb-v7-int8"], name="detail-wb-v8-int8",
    loss=(("l1", 1.0), ("gradient", 0.2), ("ssim", 0.5), ("local_mean", 1.0)),
    description="detail-wb-v7-int8 with L1 on 16x16 block means: v7 tints greys by tone (dark ones magenta, "
                "light ones green-yellow), a local mean colour that per-pixel L1 and SSIM leave loose (tried: the tint "
                "stayed; docs/training.md)",
)
DEFAULT_RECIPE = "detail-wb-v2"


def get_recipe(name: str) -> Recipe:
    if name not in RECIPES:
        from toolkit.errors import UserError, closest_hint

        raise UserError(f"unknown training recipe '{name}'", closest_hint(name, RECIPES))
    return RECIPES[name]


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
    recipe: str = DEFAULT_RECIPE
    precision: str = "fp32"  # "bf16": autocast where the CPU or GPU computes bf16 natively
    validate_every: int = 0  # steps between validations that keep the best weights (0: never)
    save_every_s: float = 600.0  # also save the resume state this often (seconds of training)
    synthesis: str = "auto"  # where the noise is made: "numpy" (CPU thread), "torch" (on the training device), "auto" (torch on a GPU)
    ema: float = 0.0  # decay of the weights' moving average that is validated, kept and written (0: the raw weights)
