"""`llpack evaluate`: PSNR/SSIM of LLPackNet and of the LibRaw baseline on the held-out scenes.

The baseline is what a user would do without us: multiply the dark RAW by the true exposure
ratio and let LibRaw (rawpy `postprocess`) demosaic it with the camera white balance, no auto
brightness, 16-bit output: the way SID renders its ground truth.
"""
from __future__ import annotations

import io
import logging
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from toolkit.camera.dng import write_dng_bytes
from toolkit.camera.raw import Mosaic
from toolkit.data.dataset import EvalScene, evaluation_fingerprint, evaluation_scenes, load_photo_dir
from toolkit.data.metrics import psnr, ssim
from toolkit.data.synth import DarkPair
from toolkit.deploy.enhance import Enhancer
from toolkit.errors import UserError
from toolkit.fileio import atomic_path, atomic_write_json
from toolkit.progress import Progress

log = logging.getLogger(__name__)
RATIO_MODES = ("auto", "true")


def libraw_baseline(pair: DarkPair) -> np.ndarray:
    """Scale the dark RAW by the true ratio and render it with LibRaw (camera WB): float32 H x W x 3."""
    import rawpy

    sensor = pair.sensor
    signal = (pair.raw.astype(np.float64) - sensor.black_level) * pair.ratio + sensor.black_level
    bright = np.clip(np.rint(signal), 0, sensor.white_level).astype(np.uint16)
    dng = write_dng_bytes(bright, "RGGB", sensor.black_level, sensor.white_level, as_shot_neutral=pair.unprocess.as_shot_neutral)
    with rawpy.imread(io.BytesIO(dng)) as raw:
        rgb = raw.postprocess(use_camera_wb=True, no_auto_bright=True, output_bps=16, user_flip=0)
    return rgb.astype(np.float32) / 65535.0


def brightened_input(scene: EvalScene) -> np.ndarray:
    """The dark RAW as a person would preview it: x ratio, white-balanced, gamma 2.2, no denoising."""
    pair = scene.pair
    x = pair.normalised() * pair.ratio
    rgb = np.stack([x[0::2, 0::2], (x[0::2, 1::2] + x[1::2, 0::2]) / 2, x[1::2, 1::2]], axis=-1)
    wb = 1.0 / np.asarray(pair.unprocess.as_shot_neutral)
    rgb = np.clip(rgb * wb, 0, 1) ** (1 / 2.2)
    return np.repeat(np.repeat(rgb, 2, axis=0), 2, axis=1).astype(np.float32)


@dataclass
class SceneScore:
    name: str
    source: str
    ratio: float
    gain: float
    model_psnr: float
    model_ssim: float
    baseline_psnr: float
    baseline_ssim: float


def _summary(scores: list[SceneScore], prefix: str) -> dict:
    def mean(rows, field):
        return round(float(np.mean([getattr(r, f"{prefix}_{field}") for r in rows])), 4)

    ratios = sorted({s.ratio for s in scores})
    return {
        "psnr_db": mean(scores, "psnr"),
        "ssim": mean(scores, "ssim"),
        "per_ratio": {f"{r:g}": {"psnr_db": mean(rows, "psnr"), "ssim": mean(rows, "ssim"), "images": len(rows)}
                      for r in ratios for rows in [[s for s in scores if s.ratio == r]]},
    }


def evaluate(
    checkpoint: str | os.PathLike | None = None,
    ratio_mode: str = "auto",
    out_dir: str | os.PathLike | None = None,
    photos_dir: str | os.PathLike | None = None,
    limit: int | None = None,
    show_progress: bool = True,
) -> dict:
    """Score the model and the LibRaw baseline; writes `evaluation.json` and `grid.png` into `out_dir`."""
    if ratio_mode not in RATIO_MODES:
        raise UserError(f"--ratio must be 'auto' or 'true', not '{ratio_mode}'")
    photos = load_photo_dir(photos_dir) if photos_dir else None
    scenes = evaluation_scenes(photos=photos)
    if limit is not None:
        scenes = scenes[:limit]
    enhancer = Enhancer(checkpoint=checkpoint, ratio="auto" if ratio_mode == "auto" else 1.0)
    bar = Progress(len(scenes), "evaluate", show_progress)
    scores, previews = [], []
    for i, scene in enumerate(scenes):
        mosaic = Mosaic(scene.pair.normalised(), "RGGB", (0.0,) * 4, 1.0, source=scene.name)
        result = enhancer.enhance(mosaic, ratio=None if ratio_mode == "auto" else scene.ratio)
        baseline = libraw_baseline(scene.pair)
        target = scene.pair.target
        scores.append(SceneScore(
            scene.name, scene.source, scene.ratio, round(result.gain, 3),
            round(psnr(result.image, target), 4), round(ssim(result.image, target), 5),
            round(psnr(baseline, target), 4), round(ssim(baseline, target), 5),
        ))
        if scene.ratio == max(s.ratio for s in scenes) and len(previews) < 8:
            previews.append((brightened_input(scene), baseline, result.image, target))
        bar.update(i + 1)
    model_summary, baseline_summary = _summary(scores, "model"), _summary(scores, "baseline")
    report = {
        "checkpoint": enhancer.backend.model.checkpoint_info,
        "variant": enhancer.backend.variant,
        "ratio_mode": ratio_mode,
        "images": len(scores),
        "model": model_summary,
        "baseline": baseline_summary,
        "gain_db": round(model_summary["psnr_db"] - baseline_summary["psnr_db"], 4),
        "eval_set": evaluation_fingerprint() if photos is None else {"photos_dir": str(photos_dir)},
        "per_scene": [s.__dict__ for s in scores],
    }
    if out_dir is not None:
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        atomic_write_json(out / "evaluation.json", report)
        if previews:
            save_grid(out / "grid.png", previews)
            report["grid"] = str(out / "grid.png")
        report["report"] = str(out / "evaluation.json")
    return report


def save_grid(path: Path, rows: list[tuple[np.ndarray, ...]], titles=("dark input x ratio", "LibRaw baseline", "LLPackNet", "ground truth")) -> None:
    """A picture grid, one scene per row, columns as `titles`, with a header line."""
    from PIL import Image, ImageDraw

    h = min(r[0].shape[0] for r in rows)
    w = min(r[0].shape[1] for r in rows)
    gap, header = 4, 22
    canvas = np.ones((header + len(rows) * (h + gap), len(titles) * (w + gap), 3), np.float32)
    for i, images in enumerate(rows):
        for j, image in enumerate(images):
            y, x = header + i * (h + gap), j * (w + gap)
            canvas[y : y + h, x : x + w] = np.clip(image[:h, :w], 0, 1)
    picture = Image.fromarray(np.rint(canvas * 255).astype(np.uint8))
    draw = ImageDraw.Draw(picture)
    for j, title in enumerate(titles):
        draw.text((j * (w + gap) + 6, 5), title, fill=(0, 0, 0))
    with atomic_path(path) as tmp:
        picture.save(tmp, format="PNG")
