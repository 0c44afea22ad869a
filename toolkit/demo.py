"""The demo on embedded defaults: a generated dark RAW scene restored by LLPackNet."""
from __future__ import annotations

import logging
from pathlib import Path

from toolkit.camera.dng import write_dng
from toolkit.data.metrics import psnr
from toolkit.data.synth import sample_scene
from toolkit.deploy.enhance import Enhancer
from toolkit.training.evaluate import libraw_baseline

from .errors import OutputError
from .fileio import write_image

log = logging.getLogger(__name__)


def run_demo(out: Path, seed: int = 0, checkpoint: str | None = None) -> dict:
    """Write a dark sample DNG, enhance it, and score the result against the clean scene."""
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OutputError(f"cannot create the demo folder {out} ({exc.strerror})", "pass --out with a writable folder") from exc
    pair = sample_scene(seed)
    sample = out / "sample_dark.dng"
    neutral = pair.unprocess.as_shot_neutral
    write_dng(sample, pair.raw, "RGGB", pair.sensor.black_level, pair.sensor.white_level, as_shot_neutral=neutral)
    log.info("generated %s (%dx%d, exposure ratio x%g)", sample, pair.raw.shape[1], pair.raw.shape[0], pair.ratio)
    write_image(out / "ground_truth.png", pair.target)
    enhancer = Enhancer(checkpoint=checkpoint, ratio="auto")
    enhanced = out / "enhanced.png"
    result = enhancer.enhance_file(sample, enhanced)
    baseline = libraw_baseline(pair)
    write_image(out / "libraw_baseline.png", baseline)
    return {
        "baseline": str(out / "libraw_baseline.png"),
        "baseline_psnr_db": round(psnr(baseline, pair.target), 3),
        "sample": str(sample),
        "enhanced": str(enhanced),
        "ground_truth": str(out / "ground_truth.png"),
        "ratio": pair.ratio,
        "gain": result.gain,
        "psnr_db": round(psnr(result.image, pair.target), 3),
        "variant": enhancer.backend.variant,
        "trained_weights": enhancer.trained,
        "seconds": {k: round(v, 4) for k, v in result.seconds.items()},
    }
