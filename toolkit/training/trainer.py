"""`llpack train`: train LLPackNet on synthetic dark RAW pairs, on CPU or GPU, resumably, for hours.

Design choices (see docs/training.md):
- A named recipe (`config.RECIPES`) fixes what is learnt: the data mix, the input's white balance
  and the loss; every checkpoint records its recipe, step and input contract.
- The paper's amplifier (two Linear layers, no activation: an affine map of the histogram) is
  fitted first, in closed form, to predict the exposure ratio of synthetic samples (non-negative
  least squares on the relative error, so the gain can never fall to the paper's 1e-4 floor),
  then frozen. Adam would need far more steps to move a linear map to gains of 100-300 than a
  CPU budget allows, and the closed form is exact.
- The body then sees the true ratio (slightly jittered) or, for a share of the dark samples, the
  amplifier's estimate, so both `--ratio true` and `--ratio auto` work with the same weights.
- The resume state lives outside the work tree and is saved by steps and by time; everything
  written is written atomically, so a run interrupted at any point continues with the same results.
"""
from __future__ import annotations

import csv
import io
import logging
import math
import platform
import signal
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager, nullcontext
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np
import torch

from toolkit.data.dataset import TrainingSampler, load_photo_dir
from toolkit.data.sources import DATA_VERSION
from toolkit.errors import UserError
from toolkit.fileio import atomic_path, atomic_write_bytes, atomic_write_json, file_sha256, user_cache_dir
from toolkit.model.checkpoint import save_checkpoint
from toolkit.model.llpacknet import create_model
from toolkit.progress import Progress

from .config import TrainConfig, get_recipe
from .fake_quant import ActivationQuantiser
from .losses import combined_loss
from .torch_synth import synthesise

log = logging.getLogger(__name__)

STATE_FILE = "train_state.pt"
# May differ on resume: larger patches late in a run (--crop, --batch-size) among them; the validation
# set keeps the crop the run began with, so "best so far" stays comparable across the change.
_RESUMABLE_CHANGES = ("steps", "checkpoint_every", "log_every", "device", "precision", "save_every_s", "validate_every", "synthesis",
                      "ema", "crop", "batch_size")
VALIDATION_COUNT = 16
FINAL_FILE = "llpacknet.pt"
FIRST_LOG_ROWS = 2  # the first logged losses a record keeps, so a test can re-run them
BEST_FILE = "best.pt"
LATEST_FILE = "latest.pt"  # weights written where a run stops early, so they can be scored before it finishes


@contextmanager
def stop_requests():
    """Inside the block, SIGTERM and Ctrl-C ask the run to stop cleanly after the step in hand (its state
    and evaluable weights saved) rather than kill it between checkpoints; a second one stops at once.
    Yields a callable saying whether a stop was asked. Outside the main thread it never is."""
    asked: list[int] = []
    if threading.current_thread() is not threading.main_thread():
        yield lambda: False
        return

    def ask(signum, frame):
        if asked:
            raise KeyboardInterrupt
        asked.append(signum)
        log.warning("stopping after this step (again to stop at once)")

    saved = {s: signal.signal(s, ask) for s in (signal.SIGTERM, signal.SIGINT)}
    try:
        yield lambda: bool(asked)
    finally:
        for s, handler in saved.items():
            signal.signal(s, handler)


@dataclass
class TrainLog:
    rows: list[dict] = field(default_factory=list)

    def csv_bytes(self) -> bytes:
        buf = io.StringIO()
        if self.rows:
            names = list(dict.fromkeys(k for row in self.rows for k in row))
            writer = csv.DictWriter(buf, fieldnames=names, restval="")
            writer.writeheader()
            writer.writerows(self.rows)
        return buf.getvalue().encode()


def pick_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise UserError("--device cuda was asked for but no CUDA GPU is available", "use --device cpu")
    return torch.device(name)


def learning_rate(step: int, cfg: TrainConfig, peak: float) -> float:
    """Linear warm-up, then cosine decay to `min_lr`."""
    if step < cfg.warmup:
        return peak * (step + 1) / cfg.warmup
    t = (step - cfg.warmup) / max(cfg.steps - cfg.warmup, 1)
    return cfg.min_lr + 0.5 * (peak - cfg.min_lr) * (1 + math.cos(math.pi * min(t, 1.0)))


def _new_model(cfg: TrainConfig) -> torch.nn.Module:
    torch.manual_seed(cfg.seed)
    return create_model(cfg.variant)


def fit_amplifier(amplifier: torch.nn.Module, histograms: np.ndarray, ratios: np.ndarray, smoothness: float = 1e-3) -> float:
    """Fit the amplifier so gamma = 1 + sum_i d_i * hist_i predicts the exposure ratio.

    The histogram sums to 1 (every normalised pixel lies in [0, 1]), so `1 + d_i` is the gain for
    an image whose pixels all fall in bin i, and gamma is their histogram-weighted mean. Solving
    for d >= 0 (non-negative least squares on the relative error gamma / ratio - 1, with a small
    penalty on differences between neighbouring bins) keeps gamma >= 1 for any input, so the
    paper's floor (gamma <= 0 -> 1e-4, a black image) can never trigger on an unusual photo.
    The first Linear keeps its (full-rank) random weights; the second is solved so the
    composition equals the fitted map. Returns the median |log gamma - log ratio| on the data.
    """
    from scipy.optimize import nnls

    bins = histograms.shape[1]
    design = histograms / ratios[:, None]
    target = 1.0 - 1.0 / ratios
    smooth = np.sqrt(smoothness) * np.diff(np.eye(bins), axis=0)
    d, _ = nnls(np.vstack([design, smooth]), np.concatenate([target, np.zeros(bins - 1)]), maxiter=50 * bins)
    first, second = amplifier.conv_post[0], amplifier.conv_post[1]
    w1 = first.weight.detach().double().numpy()  # hidden x bins
    b1 = first.bias.detach().double().numpy()
    w2 = np.linalg.lstsq(w1.T, d, rcond=None)[0]  # w2 @ w1 == d
    with torch.no_grad():
        second.weight.copy_(torch.from_numpy(w2[None]).float())
        second.bias.fill_(float(1.0 - w2 @ b1))
        gamma = amplifier.forward_histogram(torch.from_numpy(histograms).float()).double().numpy().reshape(-1)
    return float(np.median(np.abs(np.log(gamma) - np.log(ratios))))


def amplifier_data(sampler: TrainingSampler, count: int, seed: int, show_progress: bool) -> tuple[np.ndarray, np.ndarray]:
    """Histograms (of what the network sees) and true ratios of `count` synthetic dark samples,
    disjoint from training batches."""
    from toolkit.camera.bayer import exposure_histogram

    bar = Progress(count, "amplifier fit", show_progress)
    hists, ratios = [], []
    for i in range(count):
        rng = np.random.default_rng([seed, 3, i])
        pair, ratio = sampler.sample(rng)
        hists.append(exposure_histogram(sampler.network_input(pair, rng)[0]))
        ratios.append(ratio)
        bar.update(i + 1)
    return np.array(hists, np.float64), np.array(ratios, np.float64)


def training_sampler(cfg: TrainConfig, show_progress: bool) -> TrainingSampler:
    """The sampler of a run's data (its recipe's mix and any `--photos`), its scene pool built with progress."""
    mix = get_recipe(cfg.recipe).data
    photos = load_photo_dir(cfg.photos_dir) if cfg.photos_dir else []
    pool_bar = Progress(TrainingSampler.pool_count(cfg.pool_size, mix), "scenes", show_progress)
    return TrainingSampler(cfg.seed, cfg.crop, cfg.batch_size, cfg.pool_size, extra_photos=photos,
                           on_progress=pool_bar.update, mix=mix)


def fit_amplifier_on_band(amplifier: torch.nn.Module, sampler: TrainingSampler, count: int, seed: int, min_ratio: float,
                          show_progress: bool) -> dict:
    """Fit the amplifier on `count` samples of `sampler`, keeping those at `min_ratio` and darker
    (0: all). Returns what a record keeps of the fit."""
    hists, ratios = amplifier_data(sampler, count, seed, show_progress)
    band = ratios >= min_ratio
    error = fit_amplifier(amplifier, hists[band], ratios[band])
    return {"min_ratio": float(min_ratio), "samples": int(band.sum()), "median_log_error": round(error, 4)}


def _save_plot(path: Path, rows: list[dict]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    steps = [r["step"] for r in rows]
    fig, (a, b) = plt.subplots(1, 2, figsize=(10, 3.6))
    a.plot(steps, [r["l1"] for r in rows], lw=1)
    a.set(xlabel="step", ylabel="L1 (sRGB)", title="image loss", yscale="log")
    b.plot(steps, [r["gain_err"] for r in rows], lw=1, color="tab:orange")
    b.set(xlabel="step", ylabel="|log gain - log ratio|", title="amplifier error")
    for ax in (a, b):
        ax.grid(alpha=0.3)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110)
    plt.close(fig)


def synthesis_on_device(cfg: TrainConfig, device: torch.device) -> bool:
    """Whether the noise is synthesised in torch on the training device ("auto": on a GPU) or in numpy."""
    if cfg.synthesis not in ("auto", "numpy", "torch"):
        raise UserError(f"--synthesis must be auto, numpy or torch, not '{cfg.synthesis}'")
    return cfg.synthesis == "torch" or (cfg.synthesis == "auto" and device.type == "cuda")


def default_state_dir(out_dir: str | Path) -> Path:
    """Where `llpack train` keeps a run's resume state: outside the work tree, in the user's cache
    ($LLPACK_CACHE, else $XDG_CACHE_HOME/llpack, else ~/.cache/llpack), one folder per run name."""
    return user_cache_dir("train", Path(out_dir).resolve().name)


def autocast_dtype(precision: str, device: torch.device):
    """The autocast dtype for `precision` on `device`, or None for plain FP32."""
    if precision == "fp32":
        return None
    if precision != "bf16":
        raise UserError(f"--precision must be fp32 or bf16, not '{precision}'")
    if device.type == "cuda" and not torch.cuda.is_bf16_supported():
        raise UserError("this GPU has no bf16", "use --precision fp32")
    if device.type == "cpu" and not cpu_has_native_bf16():
        raise UserError("this CPU has no native bf16 (AMX or AVX-512 BF16): it would emulate it, about 8x slower "
                        "than fp32", "use --precision fp32 (a run may resume in another precision)")
    return torch.bfloat16


def cpu_has_native_bf16() -> bool:
    """Whether oneDNN computes bf16 natively here. Without AMX or AVX-512 BF16 (an AVX2-only AMD EPYC,
    for one) bf16 autocast still works but is emulated: a training step took 2.99 s against 0.33 s in fp32."""
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):  # not exposed by this build: read the CPU's flags (Linux)
        try:
            flags = Path("/proc/cpuinfo").read_text()
        except OSError:
            return False
        return "avx512_bf16" in flags or "amx_bf16" in flags


def _validation_set(sampler: TrainingSampler, count: int, seed: int) -> tuple[torch.Tensor, ...]:
    """A fixed set from the training distribution (its own seed stream, never a training batch):
    what 'best weights so far' is judged on. The held-out evaluation sets stay untouched."""
    arrays = sampler.batch_of(np.random.default_rng([seed, 5, i]) for i in range(count))
    return tuple(torch.from_numpy(a) for a in arrays)


def clipped_at_full_scale(x: torch.Tensor, gain: torch.Tensor, white_balance: torch.Tensor) -> torch.Tensor:
    """Mosaics [B, 1, H, W] (white-balanced by `white_balance` [B, 3], RGGB) times `gain` [B], each
    site clipped where the sensor saturates once amplified: what `toolkit.camera.bayer.input_scaling`
    makes at run time, in torch for training (`DataMix.clip_input`)."""
    batch = x.shape[0]
    red, green, blue = white_balance[:, 0], white_balance[:, 1], white_balance[:, 2]
    ceiling = torch.stack([red, green, green, blue], dim=1).reshape(batch, 1, 2, 2).to(x.dtype)
    ceiling = ceiling.repeat(1, 1, x.shape[2] // 2, x.shape[3] // 2)
    return torch.minimum(x * gain.reshape(batch, 1, 1, 1).to(x.dtype), ceiling)


def _forward(model: torch.nn.Module, x: torch.Tensor, gain: torch.Tensor, white_balance: torch.Tensor, clip: bool) -> torch.Tensor:
    """The network on training input at `gain`, clipped at full scale first when the recipe says so."""
    if clip:
        return model(clipped_at_full_scale(x, gain, white_balance), gain=torch.ones_like(gain))
    return model(x, gain=gain)


def validation_psnr(model: torch.nn.Module, data, device: torch.device, clip: bool = False) -> float:
    """Mean PSNR (dB) over the validation images at their true ratios, output clipped as shipped. Always
    in FP32, whatever the training precision, so a run that changes --precision still compares its scores."""
    x, y, ratio, white_balance = data
    scores = []
    model.eval()
    with torch.inference_mode():
        for i in range(len(x)):
            out = _forward(model, x[i : i + 1].to(device), ratio[i : i + 1].to(device), white_balance[i : i + 1].to(device), clip)
            mse = ((out.float().clamp(0, 1) - y[i : i + 1].to(device)) ** 2).mean().item()
            scores.append(10 * math.log10(1.0 / max(mse, 1e-12)))
    model.train()
    return float(np.mean(scores))


class WeightAverage:
    """An exponential moving average of the trained parameters (Polyak averaging), the weights a run
    validates, keeps and writes when `--ema` is set. With batches of 8 noisy crops, single Adam steps
    move the weights about a basin the average sits nearer the bottom of: the gain annealing the
    learning rate brings, without waiting for the end of the schedule. The decay ramps up as
    (1 + n) / (10 + n) over the first updates so an average started mid-run forgets its start."""

    def __init__(self, named_params: list[tuple[str, torch.nn.Parameter]], decay: float, state: dict | None = None):
        self.names = [name for name, _ in named_params]
        self.params = [p for _, p in named_params]
        self.decay, self.updates = decay, 0
        self.shadow = [p.detach().clone() for p in self.params]
        if state is not None:
            saved = state.get("shadow", {})
            if sorted(saved) != sorted(self.names):
                raise UserError("the resume state's weight average does not match the network", "use --no-resume")
            for mine, name in zip(self.shadow, self.names):
                mine.copy_(saved[name])
            self.updates = int(state["updates"])

    @torch.no_grad()
    def update(self) -> None:
        self.updates += 1
        decay = min(self.decay, (1 + self.updates) / (10 + self.updates))
        torch._foreach_lerp_(self.shadow, [p.detach() for p in self.params], 1.0 - decay)

    @contextmanager
    def swapped_in(self):
        """The network holds the averaged weights inside the block and its own again after it."""
        with torch.no_grad():
            own = [p.detach().clone() for p in self.params]
            for p, average in zip(self.params, self.shadow):
                p.copy_(average)
        try:
            yield
        finally:
            with torch.no_grad():
                for p, mine in zip(self.params, own):
                    p.copy_(mine)

    def state_dict(self) -> dict:
        return {"decay": self.decay, "updates": self.updates,
                "shadow": {name: t.detach().cpu().contiguous() for name, t in zip(self.names, self.shadow)}}


def _weights_meta(recipe_name: str, white_balance: str, step: int, record: dict) -> dict:
    """What a checkpoint written by training says about itself: the input it expects first."""
    return {"input": {"white_balance": white_balance}, "recipe": recipe_name, "step": step, "meta": record}


def train(cfg: TrainConfig, out_dir: str | Path, resume: bool = True, show_progress: bool = True,
          state_dir: str | Path | None = None, init: str | Path | None = None, stop_after_s: float | None = None,
          command: str | None = None, stop_at_step: int | None = None) -> dict:
    """Train (or continue training) into `out_dir`; returns a summary with the final checkpoint path.

    The resume state lives in `state_dir` (default: `out_dir`; the CLI puts it in the user's cache,
    outside any work tree) and is written every `checkpoint_every` steps and every `save_every_s`
    seconds. Without a state, `init` (a checkpoint, e.g. the committed weights) seeds the network
    and the run goes on from the step it records, with a fresh optimiser. With `validate_every`,
    the best weights so far are kept as `best.pt` (with `best.json`) in both folders.
    `stop_after_s` ends the run cleanly after that much time (the state is saved; run again to go on),
    `stop_at_step` after that step, with the learning-rate schedule still that of `cfg.steps` (how a
    test re-runs a recorded run's first steps); SIGTERM and Ctrl-C stop it the same way. A run that
    stops early writes the weights it keeps so far as `latest.pt` (with `latest.json`), which
    `llpack evaluate` and `llpack publish` read like the final ones.
    """
    recipe = get_recipe(cfg.recipe)
    mix = recipe.data
    if cfg.ema and not 0.0 < cfg.ema < 1.0:
        raise UserError(f"--ema must be a decay between 0 and 1, such as 0.999, not {cfg.ema}", "or 0 for the raw weights")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    state_root = Path(state_dir) if state_dir is not None else out
    state_root.mkdir(parents=True, exist_ok=True)
    device = pick_device(cfg.device)
    dtype = autocast_dtype(cfg.precision, device)
    model = _new_model(cfg).to(device)
    body_params = [p for n, p in model.named_parameters() if not n.startswith("amplifier.")]
    optimizer = torch.optim.Adam([{"params": body_params, "peak": cfg.lr}], lr=cfg.lr)
    history = TrainLog()
    start_step, elapsed_before, amplifier_fit_error, best = 0, 0.0, None, None
    segments: list[dict] = []
    first_log: list[dict] | None = None  # a run seeded from its own earlier weights keeps their first losses
    validation_crop = cfg.crop  # what "best so far" is judged on: the crop the run began with
    state_path = state_root / STATE_FILE
    amplifier_ready = False
    activation_ranges = None
    average_state = None
    init_sha256 = None  # the seed's identity, in case the file at that path changes later
    resumed = resume and state_path.exists()
    if resumed:
        state = torch.load(state_path, map_location="cpu", weights_only=True)
        saved = {k: v for k, v in state["config"].items() if k not in _RESUMABLE_CHANGES}
        now = {k: v for k, v in asdict(cfg).items() if k not in _RESUMABLE_CHANGES}
        if saved != now:
            diff = sorted(k for k in now if saved.get(k) != now[k])
            raise UserError(f"{state_path} was trained with other settings ({', '.join(diff)})", "use a new --out folder or --no-resume")
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        history.rows = state["log"]
        start_step, elapsed_before = int(state["step"]), float(state["elapsed_s"])
        amplifier_fit_error = state.get("amplifier_fit_error")
        activation_ranges = state.get("activation_ranges")
        best = state.get("best")
        average_state = state.get("ema")
        segments = list(state.get("segments", []))
        first_log = state.get("first_log")
        validation_crop = int(state.get("validation_crop", state["config"]["crop"]))
        amplifier_ready = True
        log.info("resuming %s at step %d of %d", state_path, start_step, cfg.steps)
    elif init is not None:
        from toolkit.model.checkpoint import load_model

        seed_model = load_model(init)
        if seed_model.variant != cfg.variant:
            raise UserError(f"--init {init} is {seed_model.variant}, not {cfg.variant}")
        model.load_state_dict(seed_model.state_dict())
        init_sha256 = seed_model.checkpoint_info["sha256"]
        meta = seed_model.training_meta
        if meta.get("recipe") == cfg.recipe:  # the same run, on another machine: its record goes on too
            start_step = min(int(meta.get("step", 0)), cfg.steps)
            amplifier_ready = True
            earlier = _record_beside(Path(init)) or meta["record"]
            segments = [s for s in earlier.get("segments", []) if isinstance(s, dict)]
            first_log = earlier.get("first_log") or None
            best = earlier.get("best") if isinstance(earlier.get("best"), dict) else None
            elapsed_before = float(earlier.get("train_seconds") or 0.0)
            amplifier_fit_error = earlier.get("amplifier_fit_median_log_error")
            validation_crop = int(earlier.get("validation_crop") or (earlier.get("config") or {}).get("crop", cfg.crop))
        log.info("no resume state: starting from %s at step %d with a fresh optimiser", init, start_step)
    sampler = training_sampler(cfg, show_progress)
    bar = Progress(cfg.steps, "train", show_progress, start=start_step)
    if model.config.amplifier:
        if not amplifier_ready:
            band = recipe.auto_gain[1] if recipe.amplifier_on_auto_band else 0.0
            amplifier_fit_error = fit_amplifier_on_band(model.amplifier, sampler, cfg.amplifier_samples, cfg.seed, band,
                                                        show_progress)["median_log_error"]
            log.info("amplifier fitted: median |log gain error| %.3f", amplifier_fit_error)
        model.amplifier.requires_grad_(False)
    quantiser = ActivationQuantiser(model, activation_ranges, recipe.quantisation_aware) if recipe.quantisation_aware else None
    validation = None
    if cfg.validate_every:
        validation_sampler = sampler
        if validation_crop != cfg.crop:
            log.info("training on %dx%d crops, validating on %dx%d as the run began", cfg.crop, cfg.crop, validation_crop, validation_crop)
            validation_sampler = training_sampler(replace(cfg, crop=validation_crop), show_progress)
        validation = _validation_set(validation_sampler, VALIDATION_COUNT, cfg.seed)
    if device.type == "cpu":
        model = model.to(memory_format=torch.channels_last)
    average = None
    if cfg.ema:
        body_named = [(n, p) for n, p in model.named_parameters() if not n.startswith("amplifier.")]
        average = WeightAverage(body_named, cfg.ema, average_state if average_state and average_state["decay"] == cfg.ema else None)
    kept_weights = average.swapped_in if average else nullcontext
    model.train()
    started = time.monotonic()
    last_save = started
    segment = {"start_step": start_step, "device": str(device), "precision": cfg.precision, "torch": str(torch.__version__),
               "threads": torch.get_num_threads(), "host": platform.node(), "started": _now(),
               "command": command or "python: toolkit.training.trainer.train", "init": str(init) if init and not resumed else None}
    if init_sha256:
        segment["init_sha256"] = init_sha256
    window: list[tuple[float, float]] = []

    def record_now(step: int) -> dict:
        elapsed = elapsed_before + time.monotonic() - started
        return {"variant": cfg.variant, "recipe": cfg.recipe, "steps": step, "seed": cfg.seed, "config": asdict(cfg),
                "data_version": f"{DATA_VERSION}+{cfg.recipe}", "train_seconds": round(elapsed, 1), "device": str(device),
                "torch": str(torch.__version__), "final_l1": history.rows[-1]["l1"] if history.rows else None,
                "amplifier_fit_median_log_error": amplifier_fit_error, "input": {"white_balance": mix.white_balance},
                "segments": segments + [{**segment, "end_step": step, "seconds": round(time.monotonic() - started, 1)}],
                "best": best, "first_log": first_log or history.rows[:FIRST_LOG_ROWS], "validation_crop": validation_crop}

    def save_weights(path: Path, step: int, record: dict) -> None:
        """The weights the run keeps, with the same record as the JSON written beside them."""
        with kept_weights():
            save_checkpoint(model, path, **_weights_meta(cfg.recipe, mix.white_balance, step, record))

    def checkpoint(step: int) -> None:
        payload = {
            "model": {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()},
            "optimizer": optimizer.state_dict(),
            "step": step, "elapsed_s": elapsed_before + time.monotonic() - started, "config": asdict(cfg), "log": history.rows,
            "amplifier_fit_error": amplifier_fit_error, "best": best,
            "activation_ranges": quantiser.state_dict() if quantiser else None, "first_log": first_log,
            "ema": average.state_dict() if average else None, "validation_crop": validation_crop,
            "segments": segments + [{**segment, "end_step": step, "seconds": round(time.monotonic() - started, 1)}],
        }
        with atomic_path(state_path) as tmp:
            torch.save(payload, tmp)
        for folder in {out, state_root}:
            atomic_write_bytes(folder / "loss.csv", history.csv_bytes())
        if history.rows:
            _save_plot(out / "loss.png", history.rows)

    def validate(step: int) -> None:
        nonlocal best
        with kept_weights():
            score = validation_psnr(model, validation, device, mix.clip_input)
        if history.rows and history.rows[-1]["step"] == step:
            history.rows[-1]["val_psnr"] = round(score, 4)
            if average:  # the raw weights' score beside the average's, so the log shows what it brings
                history.rows[-1]["val_psnr_raw"] = round(validation_psnr(model, validation, device, mix.clip_input), 4)
        if best is None or score > best["psnr_db"]:
            best = {"step": step, "psnr_db": round(score, 4)}
            record = record_now(step)
            for folder in {out, state_root}:
                save_weights(folder / BEST_FILE, step, record)
                atomic_write_json(folder / BEST_FILE.replace(".pt", ".json"), record)
            log.info("step %d: validation %.2f dB, the best so far: kept", step, score)

    stopped_early, done = False, start_step
    with stop_requests() as stop_asked, ThreadPoolExecutor(1) as pool:  # synthesise the next batch while this one trains
        on_device = synthesis_on_device(cfg, device)
        produce = sampler.draw_batch if on_device else sampler.batch
        upcoming = pool.submit(produce, start_step) if start_step < cfg.steps else None
        for step in range(start_step, cfg.steps):
            made = upcoming.result()
            if step + 1 < cfg.steps:
                upcoming = pool.submit(produce, step + 1)
            if on_device:  # noise made where the network trains (see torch_synth)
                noise_rng = torch.Generator(device).manual_seed(cfg.seed * 1_000_003 + step + 17)
                x, y, ratio, white_balance = synthesise(made, device, mix.white_balance, sampler.sensor, noise_rng, mix.highlights)
            else:
                x, y, ratio, white_balance = (torch.from_numpy(a).to(device) for a in made)
            ratios = ratio.cpu()
            for group in optimizer.param_groups:
                group["lr"] = learning_rate(step, cfg, group["peak"])
            step_rng = torch.Generator().manual_seed(cfg.seed * 1_000_003 + step)  # resumable: no global RNG
            jitter = torch.randn(len(ratios), generator=step_rng).to(device)
            share, min_ratio = recipe.auto_gain
            use_predicted = ((torch.rand(len(ratios), generator=step_rng) < share) & (ratios >= min_ratio)).to(device)
            gain = ratio * torch.exp(jitter * cfg.ratio_jitter)
            gain_error = torch.zeros(())
            if model.config.amplifier:
                with torch.no_grad():
                    predicted = model.gain(x).reshape(-1)
                gain_error = (torch.log(predicted) - torch.log(ratio)).abs().mean()
                gain = torch.where(use_predicted, predicted, gain)
            with torch.autocast(device.type, dtype=dtype or torch.float32, enabled=dtype is not None):
                output = _forward(model, x, gain, white_balance, mix.clip_input)
            loss, terms = combined_loss(recipe.loss, output.float(), y)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            if average:
                average.update()
            window.append((terms.get("l1", float(loss.detach())), float(loss.detach()), gain_error.item()))
            done = step + 1
            if done % cfg.log_every == 0 or done == cfg.steps:
                l1_mean, loss_mean, gerr = np.mean(window, axis=0)
                history.rows.append({"step": done, "l1": round(float(l1_mean), 6), "loss": round(float(loss_mean), 6),
                                     "gain_err": round(float(gerr), 5), "lr": round(optimizer.param_groups[0]["lr"], 8)})
                window.clear()
                bar.update(done, f"L1 {l1_mean:.4f} loss {loss_mean:.4f} gain err {gerr:.3f}")
            if validation is not None and (done % cfg.validate_every == 0 or done == cfg.steps):
                validate(done)
            out_of_time = ((stop_after_s is not None and time.monotonic() - started >= stop_after_s)
                           or (stop_at_step is not None and done >= stop_at_step) or stop_asked())
            if done % cfg.checkpoint_every == 0 or done == cfg.steps or out_of_time or time.monotonic() - last_save >= cfg.save_every_s:
                checkpoint(done)
                last_save = time.monotonic()
            if out_of_time and done < cfg.steps:
                stopped_early = True
                upcoming.cancel()
                log.info("stopping at step %d as asked; run the same command again to go on", done)
                break
    if start_step >= cfg.steps:
        bar.update(cfg.steps, "already complete")
    if quantiser:
        quantiser.remove()
    model = model.to(memory_format=torch.contiguous_format).eval()
    step = done if stopped_early else cfg.steps
    record = record_now(step)
    weights = out / (LATEST_FILE if stopped_early else FINAL_FILE)
    save_weights(weights, step, record)
    atomic_write_json(weights.with_suffix(".json") if stopped_early else out / "train_record.json", record)
    result = {**record, "checkpoint": str(weights), "out": str(out), "state": str(state_path)}
    return {**result, "stopped_early": True} if stopped_early else result


def _now() -> str:
    import datetime

    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")


def training_command(cfg: TrainConfig, out_dir: str | Path) -> str:
    """The `llpack train` command line that reproduces a configuration."""
    defaults = TrainConfig()
    parts = ["llpack", "train", "--out", str(out_dir)]
    for name in ("recipe", "steps", "batch_size", "crop", "seed", "pool_size", "amplifier_samples", "lr", "warmup", "precision",
                 "validate_every", "ema"):
        value = getattr(cfg, name)
        if name == "steps" or value != getattr(defaults, name):
            parts += ["--" + name.replace("_", "-"), str(value)]
    if cfg.photos_dir:
        parts += ["--photos", cfg.photos_dir]
    return " ".join(parts)


PUBLISH_RECORD_KEYS = ("variant", "config", "steps", "train_seconds", "device", "torch", "data_version", "final_l1")


def _read_record(record_file: Path) -> dict:
    """The JSON record `llpack train` wrote beside weights (`best.json`, `train_record.json`, a committed
    in-training pair), validated; UserError naming what is wrong."""
    import json

    if not record_file.is_file():
        raise UserError(f"{record_file} does not exist", "give a finished run folder, or a .pt written by llpack train with its .json beside it")
    try:
        record = json.loads(record_file.read_text())
    except (OSError, ValueError, UnicodeDecodeError) as exc:
        raise UserError(f"{record_file} is not a JSON training record ({exc})", "use the record llpack train wrote beside the weights") from exc
    missing = [k for k in PUBLISH_RECORD_KEYS if not isinstance(record, dict) or k not in record]
    if missing:
        raise UserError(f"{record_file} lacks {', '.join(missing)}", "use the record llpack train wrote beside the weights")
    return record


def _record_beside(weights: Path) -> dict:
    """The record committed beside training weights, which may have been corrected since they were
    written (a moved --init), or {} when there is none or it is not a run's record."""
    try:
        record = _read_record(weights.with_suffix(".json"))
    except UserError:
        return {}
    return record if record.get("recipe") and isinstance(record.get("segments"), list) else {}


def _weights_and_record(source: str | Path) -> tuple[Path, dict]:
    """A run folder (its final weights and `train_record.json`) or a weights file with its JSON
    record beside it (`best.pt` and `best.json`, or a committed in-training pair)."""
    source = Path(source)
    weights, record_file = (source / FINAL_FILE, source / "train_record.json") if source.is_dir() else (source, source.with_suffix(".json"))
    if not weights.is_file():
        raise UserError(f"{weights} does not exist", "give a finished run folder, or a .pt written by llpack train with its .json beside it")
    return weights, _read_record(record_file)


def refit_amplifier_for_auto(model: torch.nn.Module, cfg: TrainConfig, show_progress: bool = True) -> dict:
    """Fit the amplifier on the exposures `--ratio auto` serves: the recipe's dark band (the ratios at
    which training fed the body the amplifier's gain), not every ratio the recipe trains. One affine
    map of the histogram cannot predict both x2 and x300; fitted on x1-x320 it was off by a median
    1.05 stops on x50 and darker, fitted on the band by 0.39 (detail-wb-v3, step 8,000)."""
    return fit_amplifier_on_band(model.amplifier, training_sampler(cfg, show_progress), cfg.amplifier_samples, cfg.seed,
                                 get_recipe(cfg.recipe).auto_gain[1], show_progress)


def publish_default_weights(source: str | Path, show_progress: bool = True) -> dict:
    """Install trained weights as the project's default, with their record and their evaluation.

    `source` is a finished run folder or a weights file with its record beside it. The amplifier is
    refitted for `--ratio auto` (`refit_amplifier_for_auto`), the result is evaluated at both ratio
    modes from a temporary file, and only then are the weights and their JSON moved into place."""
    import os

    from toolkit.data.dataset import evaluation_fingerprint
    from toolkit.model.checkpoint import DEFAULT_CHECKPOINT, load_model

    from .evaluate import evaluate

    weights, record = _weights_and_record(source)
    load_model(weights)  # validates the file before anything is written
    try:
        cfg = TrainConfig(**record["config"])
        get_recipe(cfg.recipe)
    except TypeError as exc:
        raise UserError(f"the record of {weights} has settings this toolkit does not know ({exc})",
                        "publish with the toolkit version that trained it") from exc
    blob = torch.load(weights, map_location="cpu", weights_only=True)
    model = create_model(cfg.variant)
    model.load_state_dict(blob["model"])
    amplifier = refit_amplifier_for_auto(model, cfg, show_progress) if model.config.amplifier else None
    staged = DEFAULT_CHECKPOINT.with_name(DEFAULT_CHECKPOINT.stem + ".publishing.pt")
    save_checkpoint(model, staged, **{k: v for k, v in blob.items() if k != "model"})
    try:
        evaluation = {}
        for mode in ("auto", "true"):
            report = evaluate(staged, mode, None, show_progress=show_progress)
            evaluation[mode] = {k: report[k] for k in ("model", "baseline", "gain_db", "images") + (("exposure",) if mode == "auto" else ())}
        segments = record.get("segments", [])
        published = {
            "file": DEFAULT_CHECKPOINT.name,
            "sha256": file_sha256(staged),
            "source": {"file": str(weights), "sha256": file_sha256(weights)},
            "variant": record["variant"],
            "command": segments[-1]["command"] if segments else training_command(cfg, Path(source)),
            "seed": cfg.seed,
            "steps": record["steps"],
            "train_seconds": record["train_seconds"],
            "device": record["device"],
            "torch": record["torch"],
            "data_version": record["data_version"],
            "recipe": record.get("recipe", "synth-v1"),
            "input": record.get("input", {"white_balance": "none"}),
            "segments": segments,
            "final_l1": record["final_l1"],
            "amplifier_fit_median_log_error": amplifier["median_log_error"] if amplifier else None,
            "amplifier_fit": amplifier,
            "eval_set": evaluation_fingerprint(),
            "evaluation": evaluation,
            "reproduce_evaluation": "llpack evaluate --ratio auto; llpack evaluate --ratio true",
            "reproduce": f"llpack publish {weights}",
        }
        os.replace(staged, DEFAULT_CHECKPOINT)
    finally:
        staged.unlink(missing_ok=True)
    atomic_write_json(DEFAULT_CHECKPOINT.with_suffix(".json"), published)
    return published
