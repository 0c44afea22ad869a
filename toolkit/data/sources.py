"""Clean sRGB image sources for synthetic dark RAW data, with a fixed train/evaluation split.

No photo dataset can be downloaded here, so natural photos come from files that installable
packages ship (scikit-image, scikit-learn, matplotlib), and unlimited training scenes come from
the dead-leaves model. The split is by source file, fixed in this module, and checked by tests:

- evaluation: 7 colour photos (`EVAL_PHOTOS`) that training never reads;
- training: dead-leaves scenes plus the other shipped photos (`TRAIN_PHOTOS`), grey ones tinted;
  recipes after the first also read real camera photographs that a Debian package installs
  (`SYSTEM_TRAIN_PHOTOS`: `apt-get install mate-backgrounds`, GPL-2+), skipped with a warning
  when absent.
"""
from __future__ import annotations

import hashlib
import importlib.util
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from toolkit.errors import InputError, MissingDependencyError

DATA_VERSION = "synth-v1"


@dataclass(frozen=True)
class PackagedPhoto:
    """A photo file shipped inside an installable package."""

    package: str  # import name, located without importing it
    relpath: str  # path inside the package folder
    extra: str = "train"  # install extra that brings the package

    @property
    def name(self) -> str:
        return f"{self.package}:{Path(self.relpath).stem}"

    def path(self) -> Path:
        spec = importlib.util.find_spec(self.package)
        if spec is None or not spec.submodule_search_locations:
            raise MissingDependencyError(self.package, self.extra, f"the photo {self.name}")
        file = Path(list(spec.submodule_search_locations)[0]) / self.relpath
        if not file.exists():
            raise InputError(f"{file} is missing from the installed {self.package}", "reinstall that package")
        return file

    def sha256(self) -> str:
        return hashlib.sha256(self.path().read_bytes()).hexdigest()

    def load(self) -> np.ndarray:
        """sRGB float32 H x W x 3 in [0, 1]; grey photos are returned grey (3 equal channels)."""
        return read_image_file(self.path())


EVAL_PHOTOS = (
    PackagedPhoto("sklearn", "datasets/images/china.jpg"),
    PackagedPhoto("sklearn", "datasets/images/flower.jpg"),
    PackagedPhoto("matplotlib", "mpl-data/sample_data/grace_hopper.jpg"),
    PackagedPhoto("skimage", "data/astronaut.png"),
    PackagedPhoto("skimage", "data/chelsea.png"),
    PackagedPhoto("skimage", "data/coffee.png"),
    PackagedPhoto("skimage", "data/rocket.jpg"),
)

TRAIN_PHOTOS = (
    PackagedPhoto("skimage", "data/motorcycle_left.png"),
    PackagedPhoto("skimage", "data/motorcycle_right.png"),
    PackagedPhoto("skimage", "data/hubble_deep_field.jpg"),
    PackagedPhoto("skimage", "data/ihc.png"),
    PackagedPhoto("skimage", "data/retina.jpg"),
    PackagedPhoto("skimage", "data/camera.png"),
    PackagedPhoto("skimage", "data/grass.png"),
    PackagedPhoto("skimage", "data/brick.png"),
    PackagedPhoto("skimage", "data/gravel.png"),
    PackagedPhoto("skimage", "data/clock_motion.png"),
    PackagedPhoto("skimage", "data/moon.png"),
    PackagedPhoto("skimage", "data/coins.png"),
    PackagedPhoto("skimage", "data/cell.png"),
)


@dataclass(frozen=True)
class SystemPhoto:
    """A photo file that a Debian package installs (found by path; never downloaded by the code)."""

    path_text: str
    package: str  # the Debian package that installs it
    licence: str

    @property
    def name(self) -> str:
        return f"debian:{self.package}:{Path(self.path_text).stem}"

    def path(self) -> Path:
        """Where the package put it, under $LLPACK_SYSTEM_ROOT when that is set (a copy of those files
        carried to a machine without the package, such as a rented GPU)."""
        root = os.environ.get("LLPACK_SYSTEM_ROOT")
        file = Path(root) / self.path_text.lstrip("/") if root else Path(self.path_text)
        if not file.exists():
            raise InputError(f"{file} is missing", f"install the Debian package: apt-get install {self.package}")
        return file

    def sha256(self) -> str:
        return hashlib.sha256(self.path().read_bytes()).hexdigest()

    def load(self) -> np.ndarray:
        return read_image_file(self.path())


_MATE_NATURE = "/usr/share/backgrounds/mate/nature/"
SYSTEM_TRAIN_PHOTOS = tuple(
    SystemPhoto(_MATE_NATURE + name, "mate-backgrounds", "GPL-2+")
    for name in ("Aqua.jpg", "Blinds.jpg", "Dune.jpg", "FreshFlower.jpg", "Garden.jpg", "GreenMeadow.jpg", "LadyBird.jpg",
                 "RainDrops.jpg", "Storm.jpg", "TwoWings.jpg", "Wood.jpg", "YellowFlower.jpg")
)


def read_image_file(path: str | Path) -> np.ndarray:
    """Read an 8/16-bit PNG/JPEG/TIFF as float32 sRGB H x W x 3 in [0, 1] (needs Pillow)."""
    try:
        from PIL import Image, UnidentifiedImageError
    except ImportError as exc:
        raise MissingDependencyError("pillow", "train", "reading training photos") from exc
    try:
        with Image.open(path) as im:
            im.load()
            if im.mode in ("I;16", "I;16B", "I"):
                arr = np.asarray(im, np.float32) / 65535.0
            else:
                arr = np.asarray(im.convert("RGB"), np.float32) / 255.0
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        raise InputError(f"{path}: cannot read this image ({exc})", "use PNG, JPEG or TIFF files") from exc
    if arr.ndim == 2:
        arr = np.repeat(arr[..., None], 3, axis=2)
    return np.ascontiguousarray(arr[..., :3])


def is_grey(image: np.ndarray) -> bool:
    return bool(np.ptp(image - image.mean(axis=2, keepdims=True)) <= 1e-3)


def random_tint(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Give a grey photo a random colour cast so training sees colour on every source."""
    tint = rng.uniform(0.6, 1.0, 3)
    return np.clip(image * (tint / tint.max()), 0, 1).astype(np.float32)
