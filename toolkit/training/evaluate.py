"""`llpack evaluate`: LLPackNet against what a user would do without it, on held-out scenes.

Two baselines: LibRaw alone (the dark RAW times the true exposure ratio, demosaiced by rawpy
`postprocess` with the camera white balance, no auto brightness, 16-bit: the way SID renders its
ground truth), and LibRaw followed by a classical denoiser (scikit-image's non-local means, its
strength tuned once on training scenes: `DENOISER`). Every image is scored by PSNR and SSIM, by
PSNR after a least-squares 3x4 colour fit onto the ground truth (restoration apart from colour
rendering), and by mean CIEDE2000 colour difference.
"""
from __future__ import annotations

import io
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from toolkit.camera.dng import write_dng_bytes
from toolkit.camera.raw import Mosaic
from toolkit.data.dataset import EVAL_SETS, EvalScene, evaluation_fingerprint, evaluation_scenes, evaluation_set, load_photo_dir
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
    matrix = sensor.xyz_to_cam if pair.xyz_to_cam is None else pair.xyz_to_cam
    dng = write_dng_bytes(bright, "RGGB", sensor.black_level, sensor.white_level, xyz_to_cam=matrix,
                          as_shot_neutral=pair.unprocess.as_shot_neutral)
    with rawpy.imread(io.BytesIO(dng)) as raw:
        rgb = raw.postprocess(use_camera_wb=True, no_auto_bright=True, output_bps=16, user_flip=0)
    return rgb.astype(np.float32) / 65535.0


# Non-local means on LibRaw's sRGB output, h = strength x the image's noise sigma (`noise_sigma`). Tuned once on training scenes (`tune_denoiser`, the grid and scores recorded here).
DENOISER = {"method": "skimage.restoration.denoise_nl_means", "patch_size": 5, "patch_distance": 6, "strength": 2.4,
            "tuned_by": "llpack evaluate --tune-denoiser: 16 training scenes (A7S II, x100-x300), mean PSNR 14.78 / 16.59 / "
                        "16.91 / 16.66 / 16.21 / 15.95 / 15.71 dB at strengths 0.8 / 1.6 / 2.4 / 3.2 / 4.8 / 6.4 / 9.6"}


def denoised_baseline(image: np.ndarray, strength: float | None = None) -> np.ndarray:
    """LibRaw's rendering through the classical denoiser a user would reach for (`DENOISER`)."""
    from skimage.restoration import denoise_nl_means

    sigma = noise_sigma(image)
    h = (DENOISER["strength"] if strength is None else strength) * sigma
    out = denoise_nl_means(image, h=h, sigma=sigma, fast_mode=True, patch_size=DENOISER["patch_size"],
                           patch_distance=DENOISER["patch_distance"], channel_axis=-1)
    return np.clip(out, 0, 1).astype(np.float32)


def noise_sigma(image: np.ndarray) -> float:
    """Gaussian noise sigma of an image, averaged over channels, by Immerkaer's estimator (Computer
    Vision and Image Understanding, 1996): the mean absolute response to a 3x3 mask that cancels
    smooth structure, scaled by sqrt(pi / 2) / 6."""
    x = np.asarray(image, np.float64)
    response = (x[:-2, :-2] - 2 * x[:-2, 1:-1] + x[:-2, 2:] - 2 * x[1:-1, :-2] + 4 * x[1:-1, 1:-1] - 2 * x[1:-1, 2:]
                + x[2:, :-2] - 2 * x[2:, 1:-1] + x[2:, 2:])
    return float(np.sqrt(np.pi / 2) / 6 * np.abs(response).mean())


def tune_denoiser(strengths=(0.8, 1.6, 2.4, 3.2, 4.8, 6.4, 9.6), count: int = 16) -> dict:
    """PSNR of the denoised LibRaw baseline per strength on training scenes (never the held-out sets)."""
    from toolkit.data.dataset import TrainingSampler

    sampler = TrainingSampler(11, 256, 1, pool_size=8)
    pairs = [sampler.sample(np.random.default_rng([11, 7, i]))[0] for i in range(count)]
    renders = [(libraw_baseline(p), p.target) for p in pairs]
    scores = {s: round(float(np.mean([psnr(denoised_baseline(r, s), t) for r, t in renders])), 3) for s in strengths}
    return {"scores_db": scores, "best": max(scores, key=scores.get)}


def aligned_psnr(image: np.ndarray, target: np.ndarray) -> float:
    """PSNR after the least-squares 3x4 affine colour map of `image` onto `target` (clipped to [0, 1])."""
    x = np.asarray(image, np.float64).reshape(-1, 3)
    design = np.concatenate([x, np.ones((len(x), 1))], axis=1)
    fit, *_ = np.linalg.lstsq(design, np.asarray(target, np.float64).reshape(-1, 3), rcond=None)
    return psnr(np.clip(design @ fit, 0, 1).reshape(target.shape), target)


def least_squares_gain(image: np.ndarray, target: np.ndarray) -> float:
    """The one global gain that brings `image` nearest `target` (least squares): the exposure error."""
    x, y = np.asarray(image, np.float64), np.asarray(target, np.float64)
    return float((x * y).sum() / max((x * x).sum(), 1e-12))


def gain_aligned_psnr(image: np.ndarray, target: np.ndarray) -> float:
    """PSNR after the one global gain that best matches `target`: exposure apart from everything else."""
    x = np.asarray(image, np.float64)
    return psnr(np.clip(x * least_squares_gain(x, target), 0, 1), np.asarray(target, np.float64))


def ciede2000(image: np.ndarray, target: np.ndarray) -> float:
    """Mean CIEDE2000 colour difference between two sRGB images."""
    from skimage.color import deltaE_ciede2000, rgb2lab

    return float(np.mean(deltaE_ciede2000(rgb2lab(np.clip(image, 0, 1)), rgb2lab(np.clip(target, 0, 1)))))


def grey_lab(image: np.ndarray) -> np.ndarray:
    """CIELAB (L*, a*, b*) of the colour chart's six grey patches (`toolkit.data.scenes.colour_chart` at
    this image's size), each measured as a camera chart is: the mean colour of its inner half. [6, 3]"""
    from skimage.color import rgb2lab

    from toolkit.data.scenes import CHART_NEUTRALS, chart_patches

    patches = chart_patches(image.shape[:2])
    labs = []
    for k in CHART_NEUTRALS:
        top, left, bottom, right = patches[k]
        dy, dx = (bottom - top) // 4, (right - left) // 4
        mean = np.clip(image[top + dy : bottom - dy, left + dx : right - dx].reshape(-1, 3).mean(axis=0), 0, 1)
        labs.append(rgb2lab(mean[None, None].astype(np.float64))[0, 0])
    return np.array(labs)


def neutral_cast(image: np.ndarray) -> float:
    """The largest |a*| or |b*| among the colour chart's six grey patches (`grey_lab`)."""
    return float(np.abs(grey_lab(image)[:, 1:]).max())


def image_scores(image: np.ndarray, target: np.ndarray, chart: bool = False) -> dict:
    """PSNR, SSIM, colour-aligned PSNR, mean CIEDE2000; for the colour chart also its greys' worst a*/b*."""
    scores = {"psnr_db": round(psnr(image, target), 4), "ssim": round(ssim(image, target), 5),
              "aligned_psnr_db": round(aligned_psnr(image, target), 4), "ciede2000": round(ciede2000(image, target), 4)}
    if chart:
        scores["neutral_ab_max"] = round(neutral_cast(image), 3)
    return scores


def summarise_rows(rows: list[dict]) -> dict:
    """Means per method, overall and per group."""
    def means(subset):
        return {method: {k: round(float(np.mean([r[method][k] for r in subset])), 4) for k in subset[0][method]}
                for method in ("model", "libraw", "denoised")} | {"images": len(subset)}

    groups = sorted({r["group"] for r in rows}, key=lambda g: (len(g), g))
    return {"overall": means(rows), "groups": {g: means([r for r in rows if r["group"] == g]) for g in groups}}


def scene_mosaic(scene: EvalScene) -> Mosaic:
    """The scene as a reader gives it: normalised, with the white balance its DNG would carry."""
    return Mosaic(scene.pair.normalised(), "RGGB", (0.0,) * 4, 1.0, source=scene.name, white_balance=scene.pair.unprocess.white_balance)


def brightened_input(scene: EvalScene) -> np.ndarray:
    """The dark RAW as a person would preview it: x ratio, white-balanced, gamma 2.2, no denoising."""
    pair = scene.pair
    x = pair.normalised() * pair.ratio
    rgb = np.stack([x[0::2, 0::2], (x[0::2, 1::2] + x[1::2, 0::2]) / 2, x[1::2, 1::2]], axis=-1)
    wb = np.asarray(pair.unprocess.white_balance)
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


def score_scene(enhancer: Enhancer, scene: EvalScene, ratio: float | None) -> tuple[dict, np.ndarray, np.ndarray]:
    """One scene's scores (LLPackNet at `ratio`, None: the amplifier's gain; LibRaw; LibRaw + denoiser),
    with LLPackNet's image and LibRaw's rendering."""
    result = enhancer.enhance(scene_mosaic(scene), ratio=ratio)
    rendered = libraw_baseline(scene.pair)
    target = scene.pair.target
    chart = scene.source == "chart"
    row = {"name": scene.name, "group": scene.group, "ratio": scene.ratio, "gain": round(result.gain, 3),
           "model": image_scores(result.image, target, chart), "libraw": image_scores(rendered, target, chart),
           "denoised": image_scores(denoised_baseline(rendered), target, chart)}
    return row, result.image, rendered


def score_set(enhancer: Enhancer, scenes: list[EvalScene], bar: Progress | None = None, done: int = 0) -> list[dict]:
    """Every scene of a held-out set at its true ratio."""
    rows = []
    for scene in scenes:
        rows.append(score_scene(enhancer, scene, scene.ratio)[0])
        if bar is not None:
            done += 1
            bar.update(done)
    return rows


def exposure_report(rows_auto: list[dict], true_images: list[np.ndarray], auto_images: list[np.ndarray], targets: list[np.ndarray]) -> dict:
    """`--ratio auto` judged as an exposure choice: its error in stops, and the PSNR once one global
    gain is fitted to the ground truth, beside the same figure at the true ratio."""
    stops = np.abs(np.log2([r["gain"] / r["ratio"] for r in rows_auto]))
    auto = float(np.mean([gain_aligned_psnr(i, t) for i, t in zip(auto_images, targets)]))
    true = float(np.mean([gain_aligned_psnr(i, t) for i, t in zip(true_images, targets)]))
    return {"error_stops_median": round(float(np.median(stops)), 4), "error_stops_p90": round(float(np.percentile(stops, 90)), 4),
            "gain_aligned_psnr_db": {"auto": round(auto, 4), "true_ratio": round(true, 4), "difference": round(auto - true, 4)}}


def evaluate(
    checkpoint: str | os.PathLike | None = None,
    ratio_mode: str = "auto",
    out_dir: str | os.PathLike | None = None,
    photos_dir: str | os.PathLike | None = None,
    limit: int | None = None,
    show_progress: bool = True,
    sets: Sequence[str] = (),
) -> dict:
    """Score the model and the baselines on the 42-image set (or `photos_dir`), and on the named extra
    held-out `sets` (`toolkit.data.dataset.EVAL_SETS`, always at the true ratio); writes
    `evaluation.json` and `grid.png` into `out_dir`."""
    if ratio_mode not in RATIO_MODES:
        raise UserError(f"--ratio must be 'auto' or 'true', not '{ratio_mode}'")
    for name in sets:
        if name not in EVAL_SETS or name == "sid":
            raise UserError(f"unknown extra evaluation set '{name}'", f"choose from {', '.join(s for s in EVAL_SETS if s != 'sid')}")
    photos = load_photo_dir(photos_dir) if photos_dir else None
    scenes = evaluation_scenes(photos=photos)
    if limit is not None:
        scenes = scenes[:limit]
    extra = {name: evaluation_set(name)[:limit] if limit else evaluation_set(name) for name in sets}
    enhancer = Enhancer(checkpoint=checkpoint, ratio="auto" if ratio_mode == "auto" else 1.0)
    bar = Progress(len(scenes) + sum(map(len, extra.values())), "evaluate", show_progress)
    rows, scores, previews, auto_images, true_images = [], [], [], [], []
    for i, scene in enumerate(scenes):
        row, image, baseline = score_scene(enhancer, scene, None if ratio_mode == "auto" else scene.ratio)
        rows.append(row)
        if ratio_mode == "auto":
            auto_images.append(image)
            true_images.append(enhancer.enhance(scene_mosaic(scene), ratio=scene.ratio).image)
        scores.append(SceneScore(scene.name, scene.source, scene.ratio, row["gain"], row["model"]["psnr_db"], row["model"]["ssim"],
                                 row["libraw"]["psnr_db"], row["libraw"]["ssim"]))
        if scene.ratio == max(s.ratio for s in scenes) and len(previews) < 8:
            previews.append((brightened_input(scene), baseline, image, scene.pair.target))
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
        "methods": summarise_rows(rows),
        "denoiser": DENOISER,
        "eval_set": evaluation_fingerprint() if photos is None else {"photos_dir": str(photos_dir)},
        "per_scene": [s.__dict__ for s in scores],
    }
    if ratio_mode == "auto":
        report["exposure"] = exposure_report(rows, true_images, auto_images, [s.pair.target for s in scenes])
    done = len(scenes)
    report["sets"] = {}
    for name, set_scenes in extra.items():
        set_rows = score_set(enhancer, set_scenes, bar, done)
        done += len(set_scenes)
        report["sets"][name] = {"description": EVAL_SETS[name], **summarise_rows(set_rows), "per_scene": set_rows}
        if name == "neutral":  # the criterion is the worst grey, not the mean
            report["sets"][name]["neutral_ab_worst"] = {method: max(r[method]["neutral_ab_max"] for r in set_rows)
                                                        for method in ("model", "libraw", "denoised")}
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
