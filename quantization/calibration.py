"""Calibration data for INT8: packed network inputs with the gain applied.

By default it is synthesised from the training sources (dead leaves and the training photos,
never the evaluation photos), at a fixed seed; or it is read from a folder of the user's own
RAW files through the same reader as `llpack enhance`.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from toolkit.camera.bayer import input_scaling, pack_network_input, to_network_grid
from toolkit.errors import InputError, UserError

log = logging.getLogger(__name__)

CALIBRATION_SEED = 123
DEFAULT_COUNT = 32
DEFAULT_CROP = 512


@dataclass
class CalibrationSet:
    inputs: list[np.ndarray]  # each [1, 256, crop/16, crop/16] float32, gain applied
    source: dict  # what it was made from, for the manifest

    def __len__(self) -> int:
        return len(self.inputs)


def synthetic_calibration(count: int = DEFAULT_COUNT, crop: int = DEFAULT_CROP, seed: int = CALIBRATION_SEED,
                          white_balance: str = "none") -> CalibrationSet:
    """Dark RAW crops synthesised from the training sources at their true ratio, white-balanced for
    weights whose input contract asks for it (`white_balance` "file")."""
    from toolkit.data.dataset import TrainingSampler, packed_input

    sampler = TrainingSampler(seed=seed, crop=crop, pool_size=max(4, count // 4))
    inputs = []
    for i in range(count):
        pair, ratio = sampler.sample(np.random.default_rng([seed, 9, i]))
        inputs.append(packed_input(pair, ratio, white_balance)[0])
    source = {"kind": "synthetic", "seed": seed, "count": count, "crop": crop,
              "sources": "dead leaves + training photos (no evaluation photos)"}
    return CalibrationSet(inputs, source if white_balance == "none" else {**source, "white_balance": white_balance})


STRESS_PER_CATEGORY = 3


def with_stress(calibration: CalibrationSet, white_balance: str = "none", per_category: int = STRESS_PER_CATEGORY) -> CalibrationSet:
    """`calibration` plus the stress categories (`toolkit.data.stress`, calibration split: training
    photos and seeds the validation never uses), padded to its inputs' shape: calibration that has
    seen bright, saturated, clipped, over-amplified and very noisy inputs."""
    from toolkit.data.dataset import packed_input
    from toolkit.data.stress import stress_scenes

    _, _, h, w = calibration.inputs[0].shape
    size = (h * 16, w * 16)
    extra = [packed_input(s.pair, s.gain, white_balance, size)[0]
             for s in stress_scenes(size, split="calibration", per_category=per_category)]
    return CalibrationSet(calibration.inputs + extra, {**calibration.source, "stress_categories": per_category})


def raw_folder_calibration(
    folder: str | Path, gain: Callable[..., float], count: int = DEFAULT_COUNT, crop: int = DEFAULT_CROP,
    white_balance: str = "none",
) -> CalibrationSet:
    """Centre crops of the user's RAW files (sorted by name); `gain(mosaic)` maps a mosaic to its gain.
    With `white_balance` "file" each crop is balanced as `llpack enhance` would, and the gain is
    `gain(mosaic, white_balance_gains)` (what `LLPackNet.automatic_gain` takes)."""
    from toolkit.camera.colour import choose_white_balance
    from toolkit.camera.raw import read_mosaic

    root = Path(folder)
    if not root.is_dir():
        raise UserError(f"calibration folder {root} does not exist or is not a folder", "give a folder of RAW files")
    inputs, used, skipped = [], [], []
    for file in sorted(p for p in root.iterdir() if p.is_file()):
        if len(inputs) >= count:
            break
        try:
            mosaic = read_mosaic(file)
        except InputError as exc:
            skipped.append(f"{file.name} ({exc.message.split(': ', 1)[-1]})")
            continue
        grid, _ = to_network_grid(mosaic.data, mosaic.pattern)
        h, w = grid.shape
        ch, cw = min(crop, h), min(crop, w)
        y, x = (h - ch) // 32 * 16, (w - cw) // 32 * 16  # centre, on the 16-pixel grid
        patch = grid[y : y + ch, x : x + cw]
        balance = choose_white_balance(mosaic, "file").gains if white_balance == "file" else None
        exposure = gain(mosaic) if balance is None else gain(mosaic, balance)
        multipliers, ceiling = input_scaling(exposure, balance)
        inputs.append(pack_network_input(patch, multipliers, ceiling=ceiling))
        used.append(file.name)
    for item in skipped:
        log.warning("calibration: skipped %s/%s", root, item)
    if not inputs:
        raise UserError(f"calibration folder {root} has no usable RAW file ({len(skipped)} skipped)",
                        "add camera RAW files (DNG, ARW, NEF, CR2, ...) or leave --calibration out")
    shapes = {x.shape for x in inputs}
    if len(shapes) > 1:  # one static shape per calibration run: keep the most common
        common = max(shapes, key=lambda s: sum(x.shape == s for x in inputs))
        inputs = [x for x in inputs if x.shape == common]
    return CalibrationSet(inputs, {"kind": "raw_folder", "folder": str(root), "files": used, "crop": crop})
