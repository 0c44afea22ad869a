"""Training that expects 8-bit activations (quantisation-aware fine-tuning).

Every INT8 target quantises activations per tensor to 8 bits. Weights trained in float alone can
grow activations that 8 bits cannot hold: `detail-wb-v3` at step 8,000 kept 46 dB against FP32 with
8-bit weights, and its INT8 exports failed the gate at 30-33 dB (docs/training.md). Here tensors are
rounded to 8 bits over a running range while the model trains, with the rounding's gradient passed
straight through, so the network learns features that survive it. Validation, checkpoints and
export see the float network.

Where the rounding happens (`WHERE`):
- "conv_inputs": every body convolution's input, so a dense layer's concatenated input shares one
  range (recipe `detail-wb-v4-int8`; far more pessimistic than the exporters);
- "produced": every tensor where it is produced, over its own range, as the exporters quantise each
  branch before a concatenation (`produced_tensors`, the per-plane convolutions' inputs).
"""
from __future__ import annotations

import torch

BITS = 8
SHRINK = 0.01  # how fast a running range narrows when batches stop reaching its ends (it widens at once)
WHERE = ("conv_inputs", "produced")
PLANE_CONVS = ("RDBr", "RDBg1", "RDBg2", "RDBb")  # LLPackNet's per-colour-plane convolutions, first on the packed input


def body_convolutions(model: torch.nn.Module) -> list[tuple[str, torch.nn.Conv2d]]:
    """The convolutions an INT8 export quantises: all but the amplifier's."""
    return [(n, m) for n, m in model.named_modules() if isinstance(m, torch.nn.Conv2d) and not n.startswith("amplifier")]


def produced_tensors(model: torch.nn.Module) -> list[str]:
    """The modules of LLPackNet whose outputs an exporter quantises as they are produced: the
    per-plane convolutions, the fusion before the trunk, each dense layer and block, and the trunk's
    output as the head receives it (after the pixel shuffle, which moves values only)."""
    from toolkit.model.llpacknet import DenseLayer, ResidualDenseBlock

    return [n for n, m in model.named_modules()
            if isinstance(m, (DenseLayer, ResidualDenseBlock)) or n in (*PLANE_CONVS, "before_identity", "final.0")]


def rounded_over(x: torch.Tensor, low: float, high: float) -> torch.Tensor:
    """`x` rounded to the nearest of `BITS`-bit levels spread over [low, high], clipped to that range."""
    levels = 2**BITS - 1
    step = max(high - low, 1e-8) / levels
    return torch.clamp(torch.round((x - low) / step), 0, levels) * step + low


class ActivationQuantiser:
    """Rounds `model`'s activations to `BITS` bits while it trains, at the points `where` names.

    The range of each rounded tensor follows its batches' extremes as exporters calibrate, on the
    true extremes: it widens at once to a new extreme and narrows by `SHRINK` a step when batches stay
    inside (the low end never above 0). A rare outlier therefore coarsens every value's rounding, as
    it will in the INT8 artifact, and the network learns to do without such outliers. The ranges are
    kept in `ranges` so a resumed run rounds exactly as the interrupted one did."""

    def __init__(self, model: torch.nn.Module, ranges: dict[str, list[float]] | None = None, where: str = "conv_inputs"):
        if where not in WHERE:
            raise ValueError(f"where must be one of {WHERE}, not {where!r}")
        self.ranges: dict[str, list[float]] = {k: list(v) for k, v in (ranges or {}).items()}
        modules = dict(model.named_modules())
        if where == "conv_inputs":
            self._handles = [conv.register_forward_pre_hook(self._on_input(name)) for name, conv in body_convolutions(model)]
        else:
            self._handles = [modules[n].register_forward_pre_hook(self._on_input(n + ":input")) for n in PLANE_CONVS]
            self._handles += [modules[n].register_forward_hook(self._on_output(n)) for n in produced_tensors(model)]

    def _rounded(self, key: str, x: torch.Tensor) -> torch.Tensor:
        low, high = min(float(x.detach().min()), 0.0), float(x.detach().max())
        if key in self.ranges:
            old_low, old_high = self.ranges[key]
            low = min(low, old_low + SHRINK * (low - old_low))
            high = max(high, old_high + SHRINK * (high - old_high))
        self.ranges[key] = [low, high]
        return x + (rounded_over(x, low, high) - x).detach()

    def _on_input(self, key: str):
        def hook(module: torch.nn.Module, args: tuple) -> tuple | None:
            return (self._rounded(key, args[0]),) if module.training else None
        return hook

    def _on_output(self, key: str):
        def hook(module: torch.nn.Module, args: tuple, out: torch.Tensor) -> torch.Tensor | None:
            return self._rounded(key, out) if module.training else None
        return hook

    def state_dict(self) -> dict[str, list[float]]:
        return {k: list(v) for k, v in self.ranges.items()}

    def remove(self) -> None:
        for handle in self._handles:
            handle.remove()
