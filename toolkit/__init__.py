"""LLPackNet Edge: run LLPackNet on dark camera RAW photos, and put it on devices.

The package imports without torch (the device path). `load_model` and anything else that needs
PyTorch is imported only when used.
"""
from __future__ import annotations

from toolkit.camera.frames import read_frame
from toolkit.camera.raw import Mosaic, read_mosaic

from .errors import UserError

__version__ = "0.1.0"
__all__ = ["Enhancer", "Mosaic", "UserError", "load_model", "read_frame", "read_mosaic", "__version__"]


def __getattr__(name: str):
    if name == "load_model":
        from toolkit.model.checkpoint import load_model

        return load_model
    if name == "Enhancer":
        from toolkit.deploy.enhance import Enhancer

        return Enhancer
    raise AttributeError(f"module 'toolkit' has no attribute '{name}'")
