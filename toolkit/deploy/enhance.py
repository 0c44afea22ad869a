"""The runtime object: dark Bayer mosaic in, sRGB image out.

`Enhancer` owns the steps a camera pays for (read, pad to the network grid, choose the gain,
run, crop, write) and delegates only the network call to a backend, so later targets (OpenVINO,
TFLite, ONNX Runtime) slot in without touching the rest.
"""
from __future__ import annotations

import functools
import logging
import math
import os
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Iterator

import numpy as np

from toolkit.camera.colour import (
    WhiteBalance,
    choose_white_balance,
    normalise_gains,
    parse_white_balance,
)
from toolkit.camera.raw import NPY_SUFFIX, RAW_SUFFIXES, Mosaic, read_mosaic
from toolkit.errors import InputError, OutputError, UserError, require_torch
from toolkit.fileio import (
    DEFAULT_QUALITY,
    IMAGE_FORMATS,
    ImageMetadata,
    atomic_write_bytes,
    check_image_options,
    check_output_path,
    encode_image,
    image_format,
    to_integer_image,
)
from toolkit.memory import OutputBuffers
from toolkit.parallel import pipelined

log = logging.getLogger(__name__)


MAX_GAIN = 1e5  # far above any exposure ratio (100-300); beyond it float32 inputs head for overflow


def parse_ratio(value: str | float | None) -> float | None:
    """'auto' or None -> None (automatic gain); otherwise a positive exposure ratio up to `MAX_GAIN`."""
    if value is None or (isinstance(value, str) and value.strip().lower() == "auto"):
        return None
    try:
        ratio = float(value)
    except (TypeError, ValueError):
        raise InputError(f"--ratio must be 'auto' or a number, not '{value}'", "for example --ratio 100") from None
    if not math.isfinite(ratio) or ratio <= 0:
        raise InputError(f"--ratio must be a positive number, not {value}", "typical exposure ratios are 100 to 300")
    if ratio > MAX_GAIN:
        raise InputError(f"--ratio must be at most {MAX_GAIN:g}, not {value}", "typical exposure ratios are 100 to 300")
    return ratio


def parse_tile(value: str | int | None) -> str | int:
    """'auto' | 'off' | N (pixels, a multiple of 16 of at least 2 overlaps plus 128)."""
    from toolkit.camera.bayer import GRID

    from .tiling import DEFAULT_HALO_CELLS

    if value is None:
        return "off"
    text = str(value).strip().lower()
    if text in ("auto", "off"):
        return text
    smallest = (2 * DEFAULT_HALO_CELLS + 8) * GRID
    try:
        pixels = int(text)
    except ValueError:
        raise InputError(f"--tile must be 'auto', 'off' or a size in pixels, not '{value}'", "for example --tile 1024") from None
    if pixels < smallest or pixels % GRID:
        raise InputError(f"--tile {pixels} must be a multiple of {GRID} of at least {smallest} (two overlaps of "
                         f"{DEFAULT_HALO_CELLS * GRID} pixels plus a core)", f"for example --tile {max(1024, smallest)}")
    return pixels


@dataclass
class EnhanceResult:
    image: np.ndarray  # H x W x 3 sRGB aligned with the input mosaic: float32 in [0, 1], or uint8/uint16
    gain: float  # the amplification applied (automatic gamma or the given ratio)
    seconds: dict[str, float] = field(default_factory=dict)
    tiles: int = 1  # windows the network ran on (1: the whole image at once)
    white_balance: WhiteBalance | None = None  # applied before packing (weights that expect it), else None
    input_warning: str | None = None  # why the input lies outside what an INT8 artifact was validated on
    metadata: ImageMetadata = field(default_factory=ImageMetadata)  # orientation and capture time for the output file


@dataclass(frozen=True)
class FileJob:
    """One photo to enhance: a RAW/.npy file (or a `Mosaic` already in memory, such as a camera
    frame) and the image file to write. Levels and pattern apply to .npy files only."""

    source: str | os.PathLike | Mosaic
    output: str | os.PathLike
    bits: int = 8
    quality: int = DEFAULT_QUALITY
    black_level: float | None = None
    white_level: float | None = None
    pattern: str | None = None

    @property
    def levels(self) -> dict:
        return {"black_level": self.black_level, "white_level": self.white_level, "pattern": self.pattern}


class TorchBackend:
    """Runs the PyTorch LLPackNet (the FP32 reference)."""

    def __init__(self, checkpoint: str | os.PathLike | None = None):
        self.torch = require_torch("running the PyTorch model")
        from targets.torch import TorchRunner
        from toolkit.model.checkpoint import load_model

        self.model = load_model(checkpoint)
        self.runner = TorchRunner(self.model)
        self.variant = self.model.variant
        self.trained = self.model.checkpoint_info["trained"]

    @property
    def has_amplifier(self) -> bool:
        return self.model.config.amplifier

    def automatic_gain(self, mosaic: Mosaic, white_balance=None) -> float:
        return self.model.automatic_gain(mosaic, white_balance)

    @property
    def white_balance_contract(self) -> str:
        """"file": the weights expect the mosaic white-balanced before packing; "none": as read."""
        return self.model.input_contract["white_balance"]

    layout = "NCHW"

    def run_packed(self, packed: np.ndarray) -> np.ndarray:
        """The network between Pack and UnPack: [N, 256, h, w] float32 -> [N, 192, 2h, 2w] float32."""
        return self.runner.run(packed)

    run_native = run_packed


class ArtifactBackend:
    """Runs an exported artifact with the runtime its manifest names (no torch needed)."""

    def __init__(self, folder: str | os.PathLike, threads: int | None = None):
        from targets import get_target

        from .artifact import ArtifactError, read_manifest

        self.folder = Path(folder)
        self.manifest = read_manifest(folder)  # every field used below is type-checked there
        self.target = get_target(self.manifest["target"])
        start = time.perf_counter()
        self.target.check_runtime(f"running a {self.target.name} artifact")  # imports it: timed apart from the load
        self.import_seconds = time.perf_counter() - start
        try:
            self.runner = self.target.load(folder, self.manifest, threads)
        except UserError:
            raise
        except Exception as exc:  # the runtime's own exception types (ONNX Runtime Fail, OpenVINO RuntimeError, ...)
            raise ArtifactError(
                f"{self.folder}: the {self.target.name} runtime cannot load this artifact ({_one_line(exc)})",
                "export it again with 'llpack export', with the runtime version it names",
            ) from exc
        self.variant = self.manifest["model"]["variant"]
        self.trained = self.manifest["model"]["trained"]
        self.input_size = tuple(self.manifest["size"])

    @property
    def has_amplifier(self) -> bool:
        gain = next(s for s in self.manifest["input"]["preprocessing"] if s["step"] == "gain")
        return "automatic" in gain

    def automatic_gain(self, mosaic: Mosaic, white_balance=None) -> float:
        from .artifact import automatic_gain

        return automatic_gain(self.manifest, mosaic, white_balance)

    @property
    def white_balance_contract(self) -> str:
        from .artifact import white_balance_contract

        return white_balance_contract(self.manifest)

    @property
    def layout(self) -> str:
        """The model file's axis order (NCHW, or NHWC for TFLite): `run_native` takes and gives it."""
        return self.manifest["input"]["layout"]

    def run_packed(self, packed: np.ndarray) -> np.ndarray:
        """[N, 256, h, w] -> [N, 192, 2h, 2w] whatever the model's layout (transposes if it is NHWC)."""
        from toolkit.camera.bayer import run_in_layout

        return run_in_layout(self.run_native, packed, self.layout)

    def run_native(self, packed: np.ndarray) -> np.ndarray:
        """The network in the model's own layout: what the camera path packs for it, no transposes."""
        from .artifact import ArtifactError

        nhwc = self.layout == "NHWC"
        h, w = packed.shape[1:3] if nhwc else packed.shape[2:]
        expected = (packed.shape[0], 2 * h, 2 * w, 192) if nhwc else (packed.shape[0], 192, 2 * h, 2 * w)
        try:
            features = self.runner.run_native(packed)
        except UserError:
            raise
        except Exception as exc:  # e.g. a model file whose input shape is not the manifest's size
            raise ArtifactError(
                f"{self.folder}: the {self.target.name} runtime failed on a {h * 16}x{w * 16} input "
                f"({_one_line(exc)})",
                "the model file does not fit its manifest; export the artifact again",
            ) from exc
        if not isinstance(features, np.ndarray) or features.shape != expected:
            shape = getattr(features, "shape", type(features).__name__)
            raise ArtifactError(f"{self.folder}: the model returned {shape}, its contract says {list(expected)}",
                                "the model file does not fit its manifest; export the artifact again")
        return features


class BackendCache:
    """Backends kept loaded between calls in one long-lived process (the warm server, `llpack serve`).

    An `Enhancer` given the cache reuses a backend loaded from the same files (compared by their
    checksums, checked again on every call), with the same threads and `LLPACK_*` settings, instead of
    loading and compiling again: a changed artifact or checkpoint is loaded afresh. The `keep` most
    recently used stay loaded."""

    def __init__(self, keep: int = 2):
        self.keep = keep
        self._loaded: OrderedDict[tuple, TorchBackend | ArtifactBackend] = OrderedDict()
        self._last: dict = {}

    def get(self, key: tuple, load: Callable[[], TorchBackend | ArtifactBackend]) -> TorchBackend | ArtifactBackend:
        """The backend loaded for `key`, or `load()`'s (kept for later); `last_use` says which."""
        reused = key in self._loaded
        if reused:
            self._loaded.move_to_end(key)
        else:
            self._loaded[key] = load()
            while len(self._loaded) > self.keep:
                self._loaded.popitem(last=False)
        self._last = {"pid": os.getpid(), "model": "reused" if reused else "loaded"}
        return self._loaded[key]

    def last_use(self) -> dict:
        """The server's pid and whether the latest call reused a loaded model; empty when no model was
        asked for since the previous `last_use`."""
        last, self._last = self._last, {}
        return last

    def describe(self) -> list[dict]:
        return [{"kind": key[0], "path": key[1], "threads": key[3]} for key in self._loaded]


def backend_key(checkpoint: str | os.PathLike | None, model: str | os.PathLike | None, threads: int | None) -> tuple:
    """What a loaded backend depends on: its files' checksums (an artifact's are checked against its
    manifest here), threads, and the LLPACK_* settings read at load time."""
    from toolkit.fileio import file_sha256

    settings = tuple(sorted((k, v) for k, v in os.environ.items() if k.startswith("LLPACK_")))
    if model is not None:
        from .artifact import read_manifest

        files = read_manifest(model)["files"]
        return ("artifact", str(Path(model).resolve()), tuple(sorted(files.items())), threads, settings)
    from toolkit.model.variants import DEFAULT_CHECKPOINT

    file = Path(checkpoint) if checkpoint is not None else DEFAULT_CHECKPOINT
    try:
        digest = file_sha256(file)
    except OSError:
        digest = None  # load_model says what is wrong with it
    return ("torch", str(file.resolve()), digest, threads, settings)


def _one_line(exc: BaseException, limit: int = 200) -> str:
    """An exception as one short line (runtimes raise multi-line messages with C++ stack frames)."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    text = lines[0] if lines else type(exc).__name__
    return text if len(text) <= limit else text[: limit - 3] + "..."


class Enhancer:
    """Restore dark Bayer RAW photos: `Enhancer().enhance_file('dark.dng', 'out.png')`."""

    def __init__(
        self,
        checkpoint: str | os.PathLike | None = None,
        ratio: str | float | None = "auto",
        model: str | os.PathLike | None = None,
        threads: int | None = None,
        tile: str | int | None = "auto",
        memory_budget_mb: float | None = None,
        white_balance: str | tuple[float, float, float] | None = "file",
        backends: BackendCache | None = None,
    ):
        """`checkpoint` runs the PyTorch model; `model` an exported artifact folder instead.
        `backends`: a `BackendCache` to take an already loaded backend from (a long-lived process).

        `tile`: "auto" tiles only when the image is larger than a static-shape artifact or does not
        fit `memory_budget_mb`; an integer N runs N x N-pixel windows; "off" never tiles (and refuses
        an image whose estimate exceeds the budget)."""
        if checkpoint is not None and model is not None:
            raise UserError("give either a checkpoint or an artifact folder (--model), not both")
        self.ratio = parse_ratio(ratio)
        self.white_balance = parse_white_balance(white_balance) if isinstance(white_balance, (str, type(None))) else normalise_gains(white_balance)
        self.checkpoint, self.model, self.threads = checkpoint, model, threads
        self.tile = parse_tile(tile)
        if memory_budget_mb is not None and not (math.isfinite(memory_budget_mb) and memory_budget_mb > 0):
            raise UserError(f"the memory budget must be a positive number of MB, not {memory_budget_mb}")
        self.memory_budget_mb = memory_budget_mb
        self._images = OutputBuffers()  # a photo's image memory, reused once the caller lets go of a result
        self.load_seconds: float | None = None  # reading and checking the model, compiling it: once loaded
        self.runtime_import_seconds = 0.0  # importing an artifact's runtime library (start-up, not load)
        self.backends = backends

    @functools.cached_property
    def backend(self) -> TorchBackend | ArtifactBackend:
        """Loaded on first use, so cheap checks on inputs and outputs fail before the model loads."""
        start = time.perf_counter()
        if self.backends is not None:
            backend = self.backends.get(backend_key(self.checkpoint, self.model, self.threads), self._load_backend)
        else:
            backend = self._load_backend()
        self.load_seconds = time.perf_counter() - start - self.runtime_import_seconds
        if self.ratio is None and not backend.has_amplifier:
            raise UserError(
                f"the {backend.variant} model has no automatic amplifier",
                "pass the exposure ratio, for example --ratio 100",
            )
        return backend

    def _load_backend(self) -> TorchBackend | ArtifactBackend:
        if self.model is not None:
            backend = ArtifactBackend(self.model, self.threads)
            self.runtime_import_seconds = backend.import_seconds
            return backend
        return TorchBackend(self.checkpoint)

    @property
    def trained(self) -> bool:
        return self.backend.trained

    def choose_white_balance(self, mosaic: Mosaic) -> WhiteBalance | None:
        """The white balance to apply, for weights that expect white-balanced input; else None."""
        if self.backend.white_balance_contract != "file":
            return None
        return choose_white_balance(mosaic, self.white_balance)

    def choose_gain(self, mosaic: Mosaic, ratio: float | None = None, white_balance: WhiteBalance | None = None) -> float:
        ratio = ratio if ratio is not None else self.ratio
        if ratio is not None:
            return ratio
        gain = self.backend.automatic_gain(mosaic, white_balance.gains if white_balance else None)
        if not (math.isfinite(gain) and 0 < gain <= MAX_GAIN):  # only damaged amplifier constants get here
            raise self._model_error(f"the model's automatic gain is {gain:g}, outside (0, {MAX_GAIN:g}]",
                                    "pass the exposure ratio instead, for example --ratio 100")
        return gain

    def check_input(self, mosaic: Mosaic, gain: float) -> str | None:
        """For an INT8 artifact: why this input lies outside what its export validated (logged as one
        warning line naming what to do), else None. The output is never changed for it."""
        if not isinstance(self.backend, ArtifactBackend) or self.backend.manifest.get("precision") != "int8":
            return None
        from toolkit.camera.bayer import input_exposure

        from .artifact import input_outside_validation

        reason = input_outside_validation(self.backend.manifest, input_exposure(mosaic.data, gain))
        if reason:
            log.warning("%s%s: INT8 output may be degraded; use an FP32 artifact, or re-export with --calibration "
                        "on RAW files like this one", f"{mosaic.source}: " if mosaic.source else "", reason)
        return reason

    def _model_error(self, message: str, hint: str) -> UserError:
        if isinstance(self.backend, ArtifactBackend):
            from .artifact import ArtifactError

            return ArtifactError(f"{self.backend.folder}: {message}", hint)
        return UserError(message, hint)

    def plan_tiles(self, cells: tuple[int, int], static: tuple[int, int] | None, bits: int | None = 8):
        """The `TilePlan` for an image of `cells`, or None to run it whole (checked against the budget)."""
        from toolkit.camera.bayer import GRID

        from .tiling import (
            DEFAULT_HALO_CELLS,
            TilePlan,
            choose_plan,
            estimate_memory_mb,
        )

        budget = self.memory_budget_mb
        if static is not None:  # a static-shape artifact: its own shape is the window
            window = (static[0] // GRID, static[1] // GRID)
            if window[0] >= cells[0] and window[1] >= cells[1]:
                plan = None
                cells = window
            elif self.tile == "off":
                raise InputError(f"the image ({cells[1] * GRID}x{cells[0] * GRID}) is larger than this model's input size "
                                 f"({static[1]}x{static[0]})", "allow tiling (--tile auto) or export an artifact of a larger --size")
            else:
                smallest = 2 * DEFAULT_HALO_CELLS + 8
                if (cells[0] > window[0] and window[0] < smallest) or (cells[1] > window[1] and window[1] < smallest):
                    raise InputError(f"the image ({cells[1] * GRID}x{cells[0] * GRID}) is larger than this model's input size "
                                     f"({static[1]}x{static[0]}), which is too small to tile it (overlaps of "
                                     f"{DEFAULT_HALO_CELLS * GRID} pixels need windows of at least {smallest * GRID})",
                                     f"export an artifact with --size of at least {smallest * GRID}x{smallest * GRID}, or the image's size")
                plan = TilePlan(window=window)
        elif isinstance(self.tile, int):
            plan = TilePlan(window=(self.tile // GRID, self.tile // GRID))
        elif self.tile == "auto" and budget is not None:
            return choose_plan(cells, budget, strips=hasattr(self.backend.runner, "run_head"), bits=bits)
        else:
            plan = None
        if plan is not None and plan.window[0] >= cells[0] and plan.window[1] >= cells[1]:
            plan = None
        estimate = estimate_memory_mb(cells, plan, bits)
        if budget is not None and estimate > budget:
            raise InputError(f"enhancing this {cells[1] * GRID}x{cells[0] * GRID} image needs about {estimate:.0f} MB, "
                             f"over the memory budget of {budget:.0f} MB",
                             "use --tile auto (tiles sized to the budget) or a smaller --tile" if static is None
                             else "export an artifact of a smaller --size: it becomes the tile")
        return plan

    def enhance(self, mosaic: Mosaic, ratio: float | None = None, bits: int | None = None) -> EnhanceResult:
        """Restore one mosaic; `ratio` overrides the enhancer's own setting for this call. `bits` 8 or 16
        returns the image already rounded to uint8/uint16 (what gets written; a quarter or half of
        the float image's memory), None float32 in [0, 1]."""
        from toolkit.camera.bayer import (
            GRID,
            OUTPUT_DTYPES,
            input_scaling,
            new_image,
            pack_window,
            plan_placement,
            unpack_into,
        )

        from .tiling import run_strips, run_windows

        if bits not in OUTPUT_DTYPES:
            raise OutputError(f"--bits must be 8 or 16, not {bits}")
        backend = self.backend  # load (and compile) before the clock starts
        seconds: dict[str, float] = {}
        start = time.perf_counter()
        static = getattr(backend, "input_size", None)
        natural = plan_placement(*mosaic.shape, mosaic.pattern)
        cells = (natural.padded_height // GRID, natural.padded_width // GRID)
        plan = self.plan_tiles(cells, static, bits)  # refuses over-budget images before any large allocation
        size = None if static is None else (max(static[0], natural.padded_height), max(static[1], natural.padded_width))
        placement = plan_placement(*mosaic.shape, mosaic.pattern, size=size)
        cells = (placement.padded_height // GRID, placement.padded_width // GRID)
        balance = self.choose_white_balance(mosaic)
        gain = self.choose_gain(mosaic, ratio, balance)
        multipliers, ceiling = input_scaling(gain, balance.gains if balance else None)
        warning = self.check_input(mosaic, gain)

        layout = backend.layout

        def packed_window(rows: tuple[int, int], columns: tuple[int, int]) -> np.ndarray:
            return pack_window(mosaic.data, placement, rows, columns, multipliers, layout, ceiling)

        image = new_image(mosaic.shape, bits, self._images)
        origin = (placement.top, placement.left)
        tiles = 1
        try:
            if plan is None:
                packed = packed_window((0, cells[0]), (0, cells[1]))
                seconds["preprocess"] = time.perf_counter() - start
                start = time.perf_counter()
                features = backend.run_native(packed)[0]
                del packed
                if not np.isfinite(features).all():
                    raise FloatingPointError
                seconds["inference"] = time.perf_counter() - start
                start = time.perf_counter()
                unpack_into(image, features, -origin[0], -origin[1], layout=layout)
                seconds["postprocess"] = time.perf_counter() - start
            else:  # packing and UnPack happen per piece, inside
                seconds["preprocess"] = time.perf_counter() - start
                start = time.perf_counter()
                if plan.strips:
                    tiles = run_strips(backend.runner, packed_window, cells, plan.head_rows, image, origin)
                else:
                    tiles = run_windows(backend.run_native, packed_window, cells, plan.window, image, origin, layout=layout)
                seconds["inference"] = time.perf_counter() - start
                seconds["postprocess"] = 0.0
        except FloatingPointError:  # damaged weights (or absurd inputs): never write garbage pixels
            raise self._model_error(f"the network's output holds NaN or Inf values (gain {gain:g})",
                                    "check the model or checkpoint, and the input's levels") from None
        metadata = ImageMetadata(orientation=mosaic.orientation, captured=mosaic.captured)
        return EnhanceResult(image, gain, seconds, tiles=tiles, white_balance=balance, input_warning=warning,
                             metadata=metadata)

    # ------------------------------------------------------------ files: read, enhance, encode, write
    def read_file(self, job: FileJob) -> tuple[Mosaic, float]:
        """The job's mosaic (read from its file, or the frame it carries) and the seconds reading took."""
        if isinstance(job.source, Mosaic):
            return job.source, 0.0
        start = time.perf_counter()
        levels = job.levels if Path(job.source).suffix.lower() == NPY_SUFFIX else {}
        mosaic = read_mosaic(job.source, **levels)
        return mosaic, time.perf_counter() - start

    def _enhance_read(self, job: FileJob, read: tuple[Mosaic, float]) -> EnhanceResult:
        mosaic, decode = read
        result = self.enhance(mosaic, bits=job.bits)
        result.seconds = {"decode": decode, **result.seconds}
        return result

    def save(self, result: EnhanceResult, output: str | os.PathLike, bits: int = 8,
             quality: int = DEFAULT_QUALITY) -> EnhanceResult:
        """Encode `result` in the format `output`'s suffix names and write it atomically; the seconds
        of each go into `result.seconds` ("encode", "write")."""
        fmt = image_format(output)
        start = time.perf_counter()
        data = encode_image(to_integer_image(result.image, bits), fmt, result.metadata, quality)
        encoded = time.perf_counter()
        atomic_write_bytes(output, data)
        result.seconds.update(encode=encoded - start, write=time.perf_counter() - encoded)
        log.info("wrote %s (%dx%d, gain %.1f)", Path(output), result.image.shape[1], result.image.shape[0], result.gain)
        return result

    def _save_job(self, job: FileJob, result: EnhanceResult) -> EnhanceResult:
        return self.save(result, job.output, job.bits, job.quality)

    def enhance_files(self, jobs: Iterable[FileJob], overlap: bool = True) -> Iterator[tuple[FileJob, EnhanceResult | Exception]]:
        """Enhance each `FileJob` in order, yielding (job, its result, or the exception that stopped it).

        With `overlap` (the default), reading the next job and encoding and writing the previous
        one run beside the current inference (at most one photo ahead and one behind); the files
        written are byte for byte those of the one-by-one path. `jobs` may be a generator, such as
        a capture loop handing over frames: it is advanced one job ahead, on a reader thread."""
        def load() -> None:  # while the first photo is read
            self.backend

        yield from pipelined(jobs, self.read_file, self._enhance_read, self._save_job, overlap=overlap, prepare=load)

    def enhance_file(
        self,
        source: str | os.PathLike | Mosaic,
        output: str | os.PathLike,
        bits: int = 8,
        black_level: float | None = None,
        white_level: float | None = None,
        pattern: str | None = None,
        quality: int = DEFAULT_QUALITY,
    ) -> EnhanceResult:
        """Read a RAW/.npy file, enhance it and write it in the format `output`'s suffix names (PNG,
        JPEG, TIFF), atomically: nothing is written on failure."""
        job = FileJob(source, Path(output), bits, quality, black_level, white_level, pattern)
        check_image_options(image_format(output), bits, quality)  # refuse a bad suffix, depth or folder before any work
        check_output_path(output)
        return self._save_job(job, self._enhance_read(job, self.read_file(job)))

# ---------------------------------------------------------------- a folder of inputs


def folder_inputs(src_dir: str | os.PathLike) -> tuple[list[Path], list[Path]]:
    """(RAW and .npy files directly in `src_dir`, sorted by name; the other files, skipped). Hidden files are ignored."""
    src = Path(src_dir)
    if not src.is_dir():
        raise InputError(f"{src} is not a folder", "give a folder of RAW or .npy files")
    try:
        entries = sorted(p for p in src.iterdir() if not p.name.startswith(".") and p.is_file())
    except OSError as exc:
        raise InputError(f"cannot list {src} ({exc.strerror or exc})", "check the folder's permissions") from exc
    wanted = set(RAW_SUFFIXES) | {NPY_SUFFIX}
    inputs = [p for p in entries if p.suffix.lower() in wanted]
    return inputs, [p for p in entries if p.suffix.lower() not in wanted]


def output_names(inputs: list[Path], suffix: str) -> list[str]:
    """<stem><suffix> for each input; inputs sharing a stem (a.dng, a.npy) keep their whole name (a.dng.png)."""
    stems: dict[str, int] = {}
    for p in inputs:
        stems[p.stem.casefold()] = stems.get(p.stem.casefold(), 0) + 1
    return [(p.stem if stems[p.stem.casefold()] == 1 else p.name) + suffix for p in inputs]


def _output_folder(out_dir: Path) -> None:
    if out_dir.exists() and not out_dir.is_dir():
        raise OutputError(f"{out_dir} is a file; a folder of inputs needs an output folder", "give -o a folder name")
    if not out_dir.exists() and any(out_dir.suffix.lower() in f.suffixes for f in IMAGE_FORMATS.values()):
        raise OutputError(f"for a folder of inputs, -o names an output folder, not an image ({out_dir})",
                          "give -o a folder name such as out/")
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OutputError(f"cannot create the output folder {out_dir} ({exc.strerror or exc})", "choose another -o folder") from exc


def file_entry(source: str | os.PathLike, output: str | os.PathLike, outcome: EnhanceResult | Exception) -> dict:
    """One file's line in a batch result (a folder here, or a cluster's worker): its output and
    timings, or why it failed. A `UserError` says it; anything else is a bug on that one file, which
    must not lose the others, and is named as one."""
    if isinstance(outcome, UserError):
        return {"input": str(source), "error": str(outcome)}
    if isinstance(outcome, Exception):
        return {"input": str(source), "error": f"internal error: {type(outcome).__name__}: {_one_line(outcome)}"}
    return {"input": str(source), "output": str(output), "size": list(outcome.image.shape[:2]), "gain": outcome.gain,
            "seconds": {k: round(v, 4) for k, v in outcome.seconds.items()}, "input_warning": outcome.input_warning}


def enhance_folder(
    enhancer: Enhancer,
    src_dir: str | os.PathLike,
    out_dir: str | os.PathLike,
    bits: int = 8,
    fmt: str = "png",
    black_level: float | None = None,
    white_level: float | None = None,
    pattern: str | None = None,
    on_file: Callable[[int, int, dict], None] | None = None,
    show_progress: bool = False,
    quality: int = DEFAULT_QUALITY,
    overlap: bool = True,
) -> dict:
    """Enhance every RAW/.npy file of `src_dir` (sorted) into `out_dir`/<stem>.<format's suffix>.

    Each output is written atomically. A file that fails is recorded with its reason and the
    others go on; `on_file(done, total, entry)` is called after each file (progress, tests).
    Levels and pattern apply to .npy files only (camera RAW files carry their own). With
    `overlap`, reading and writing run beside inference (`Enhancer.enhance_files`), and the model
    loads while the first photo is read. Raises a `UserError` before any output if the folder holds
    no input or the model cannot be loaded.
    The result's 'failed' counts the files that failed.
    """
    from toolkit.progress import Progress

    check_image_options(fmt, bits, quality)
    src, out = Path(src_dir), Path(out_dir)
    inputs, skipped = folder_inputs(src)
    if not inputs:
        raise InputError(f"{src} holds no RAW or .npy files", f"looked for {', '.join(RAW_SUFFIXES + (NPY_SUFFIX,))}")
    _output_folder(out)
    names = output_names(inputs, IMAGE_FORMATS[fmt].suffixes[0])
    check_output_path(out / names[0])  # writable, before the model loads
    progress = Progress(len(inputs), "enhance", enabled=show_progress)
    jobs = [FileJob(source, out / name, bits, quality, black_level, white_level, pattern) for source, name in zip(inputs, names)]
    results: list[dict] = []
    start = time.perf_counter()
    for done, (job, outcome) in enumerate(enhancer.enhance_files(jobs, overlap=overlap), 1):
        source = job.source
        entry = file_entry(source, job.output, outcome)
        if isinstance(outcome, UserError):
            log.error("%s: %s", source.name, outcome)
        elif isinstance(outcome, Exception):
            log.error("%s: %s (run with -vv for the traceback)", source.name, entry["error"])
            log.debug("traceback for %s", source.name, exc_info=outcome)
        outcome = None  # let go of the image: its memory serves a later photo
        results.append(entry)
        progress.update(done, source.name)
        if on_file is not None:
            on_file(done, len(inputs), entry)
    failed = sum("error" in r for r in results)
    return {
        "input": str(src),
        "output": str(out),
        "files": len(inputs),
        "ok": len(inputs) - failed,
        "failed": failed,
        "skipped": [str(p) for p in skipped],
        "results": results,
        "seconds": round(time.perf_counter() - start, 3),
        "overlap": overlap,
    }
