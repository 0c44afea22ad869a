"""The FP32 PyTorch reference as an artifact: the official `{'model': state_dict}` checkpoint.

Every other target is compared with this; it also lets the profiler treat the reference like
any other artifact.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

MODEL_FILE = "model.pt"


def build(body, size: tuple[int, int], precision: str, out_dir: Path, calibration=None, remedy=None) -> list[str]:
    from toolkit.checkpoint import save_checkpoint

    save_checkpoint(body.model, out_dir / MODEL_FILE)
    return [MODEL_FILE]


class TorchRunner:
    def __init__(self, model):
        import torch

        self.torch, self.model = torch, model

    def run(self, packed: np.ndarray) -> np.ndarray:
        with self.torch.inference_mode():
            return self.model.packed_body(self.torch.from_numpy(packed)).numpy()


def load(artifact_dir: Path, manifest: dict, threads: int | None) -> TorchRunner:
    import torch

    from toolkit.checkpoint import load_model

    if threads:
        torch.set_num_threads(int(threads))
    return TorchRunner(load_model(artifact_dir / MODEL_FILE))
