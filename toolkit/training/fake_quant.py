"""Training that expects 8-bit activations (quantisation-aware fine-tuning).

Every INT8 target quantises a convolution's input per tensor to 8 bits. Weights trained in float
alone can grow activations that 8 bits cannot hold: `detail-wb-v3` at step 8,000 kept 46 dB
against FP32 with 8-bit weights but 22 dB with 8-bit activations, and its INT8 exports failed the
gate at 30-33 dB (docs/training.md). Here each body convolution's input is rounded to 8 bits over
a running range during training, with the rounding's gradient passed straight through, so the
network learns features that survive it. Validation, checkpoints and export see the float network.
"""
from __future__ import annotations

import torch

BITS = 8
SHRINK = 0.01  # how fast a running range narrows when batches stop reaching its ends (it widens at once)


def body_convolutions(model: torch.nn.Module) -> list[tuple[str, torch.nn.Conv2d]]:
    """The convolutions an INT8 export quantises: all but the amplifier's."""
    return [(n, m) for n, m in model.named_modules() if isinstance(m, torch.nn.Conv2d) and not n.startswith("amplifier")]


class ActivationQuantiser:
    """Rounds the inputs of `model`'s body convolutions to `BITS` bits while the model trains.

    The range of each input follows its batches' extremes as exporters calibrate, on the true
    extremes: it widens at once to a new extreme and narrows by `SHRINK` a step when batches stay
    inside (the low end never above 0). A rare outlier therefore coarsens every value's rounding, as
    it will in the INT8 artifact, and the network learns to do without such outliers. The ranges are
    kept in `ranges` so a resumed run rounds exactly as the interrupted one did."""

    def __init__(self, model: torch.nn.Module, ranges: dict[str, list[float]] | None = None):
        self.ranges: dict[str, list[float]] = {k: list(v) for k, v in (ranges or {}).items()}
        self._handles = [conv.register_forward_pre_hook(self._rounding(name)) for name, conv in body_convolutions(model)]

    def _rounding(self, name: str):
        levels = 2**BITS - 1

        def hook(module: torch.nn.Module, args: tuple) -> tuple | None:
            if not module.training:
                return None
            x = args[0]
            low, high = min(float(x.detach().min()), 0.0), float(x.detach().max())
            if name in self.ranges:
                old_low, old_high = self.ranges[name]
                low = min(low, old_low + SHRINK * (low - old_low))
                high = max(high, old_high + SHRINK * (high - old_high))
            self.ranges[name] = [low, high]
            step = max(high - low, 1e-8) / levels
            rounded = torch.clamp(torch.round((x - low) / step), 0, levels) * step + low
            return (x + (rounded - x).detach(),)

        return hook

    def state_dict(self) -> dict[str, list[float]]:
        return {k: list(v) for k, v in self.ranges.items()}

    def remove(self) -> None:
        for handle in self._handles:
            handle.remove()
