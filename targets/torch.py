"""The FP32 PyTorch reference as an artifact: the official `{'model': state_dict}` checkpoint.

Every other target is compared with this; it also lets the profiler treat the reference like
any other artifact.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from .base import ChannelsFirstRunner

MODEL_FILE = "model.pt"


def build(body, size: tuple[int, int], out_dir: Path) -> list[str]:
    from toolkit.model.checkpoint import save_checkpoint

    save_checkpoint(body.model, out_dir / MODEL_FILE)
    return [MODEL_FILE]


class TorchRunner(ChannelsFirstRunner):
    def __init__(self, model):
        import torch

        self.torch, self.model = torch, model

    def run(self, packed: np.ndarray) -> np.ndarray:
        with self.torch.inference_mode():
            return self.model.packed_body(self.torch.from_numpy(packed), lean=True).numpy()

    # The two stages on their own, for tiled inference in strips (toolkit.deploy.tiling.run_strips).
    def run_trunk_by_rows(self, packed_rows, height: int, step: int) -> np.ndarray:
        """The trunk's output [1, 64, h, w] for the whole photo, from packed input rows read on demand."""
        torch = self.torch
        with torch.inference_mode():
            return self.model.trunk_by_rows(lambda a, b: torch.from_numpy(packed_rows(a, b)), height, step).numpy()

    def run_head(self, trunk_features: np.ndarray) -> np.ndarray:
        with self.torch.inference_mode():
            return self.model.head(self.torch.from_numpy(trunk_features), lean=True).numpy()


def load(artifact_dir: Path, manifest: dict, threads: int | None) -> TorchRunner:
    import torch

    from toolkit.model.checkpoint import load_model

    if threads:
        torch.set_num_threads(int(threads))
    return TorchRunner(load_model(artifact_dir / MODEL_FILE))
