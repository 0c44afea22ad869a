"""Will these weights survive 8-bit activations? A minutes-long check before any export.

Every INT8 backend here quantises activations per tensor and weights per output channel. This
check simulates exactly that in PyTorch (round-to-nearest, ranges = the true extremes over the
default synthetic calibration set, as OpenVINO's default remedy takes them) and prints, for each
checkpoint given, the PSNR against its own FP32 output on 9 held-out scenes:

- weights alone, activations alone, and both;
- the widest conv inputs, with the spread of their per-channel extremes: one wide tensor is
  enough to sink an export. A few outlier channels (largest far above the median) could be
  equalised across layers; a tensor whose every channel is wide cannot.

It compares weights and finds the widest tensors; it does not predict an exporter's figure (the
first default weights simulate at 34.2 dB and export at 40-42, detail-wb-v3 at 22.1 and 30-33).
`benchmarks/int8_remedies.py` and `llpack export -v` measure real exports.

    python benchmarks/int8_activation_ranges.py [CHECKPOINT ...]   (default: the built-in weights)
"""
from __future__ import annotations

import argparse
import copy

import numpy as np
import torch

from quantization.calibration import synthetic_calibration
from toolkit.data.dataset import evaluation_scenes, packed_input
from toolkit.model.checkpoint import load_model


def conv_input_stats(model, inputs) -> dict[str, tuple[float, float, np.ndarray]]:
    """(min, max, per-channel max |x|) of every convolution's input over `inputs`."""
    stats: dict[str, tuple[float, float, np.ndarray]] = {}

    def hook(name):
        def record(module, args):
            x = args[0]
            lo, hi, ch = stats.get(name, (0.0, 0.0, np.zeros(x.shape[1])))
            stats[name] = (min(lo, float(x.min())), max(hi, float(x.max())),
                           np.maximum(ch, x.abs().amax(dim=(0, 2, 3)).numpy()))
        return record

    handles = [m.register_forward_pre_hook(hook(n)) for n, m in model.named_modules() if isinstance(m, torch.nn.Conv2d)]
    with torch.no_grad():
        for x in inputs:
            model.packed_body(x)
    for h in handles:
        h.remove()
    return stats


def fake_quantised(model, stats, activations: bool = True, weights: bool = True):
    """A copy of `model` whose conv inputs are rounded to 8 bits over their calibration range and whose
    weights are rounded to 8 bits per output channel."""
    q = copy.deepcopy(model)
    for name, conv in q.named_modules():
        if not isinstance(conv, torch.nn.Conv2d):
            continue
        if activations:
            lo, hi, _ = stats[name]
            step = max(hi - lo, 1e-12) / 255
            conv.register_forward_pre_hook(lambda m, a, lo=lo, step=step: (torch.clamp(torch.round((a[0] - lo) / step), 0, 255) * step + lo,))
        if weights:
            with torch.no_grad():
                scale = conv.weight.abs().amax(dim=(1, 2, 3), keepdim=True).clamp(min=1e-12) / 127
                conv.weight.copy_(torch.round(conv.weight / scale) * scale)
    return q


def psnr_against(reference, model, inputs) -> float:
    with torch.no_grad():
        scores = [10 * np.log10(1 / (1e-12 + float(((model.packed_body(x).clamp(0, 1) - r) ** 2).mean())))
                  for x, r in zip(inputs, reference)]
    return float(np.mean(scores))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("checkpoints", nargs="*", default=[None], help="weights to check (default: the built-in weights)")
    parser.add_argument("--widest", type=int, default=5, help="how many of the widest conv inputs to list")
    args = parser.parse_args()
    scenes = evaluation_scenes()[::5]
    for checkpoint in args.checkpoints:
        model = load_model(checkpoint)
        balance = model.input_contract["white_balance"]
        calibration = [torch.from_numpy(x) for x in synthetic_calibration(white_balance=balance).inputs]
        held_out = [torch.from_numpy(packed_input(s.pair, s.ratio, balance)[0]) for s in scenes]
        with torch.no_grad():
            reference = [model.packed_body(x).clamp(0, 1) for x in held_out]
        stats = conv_input_stats(model, calibration)
        print(f"== {checkpoint or 'the built-in weights'} (input white balance: {balance})")
        print(f"simulated INT8, PSNR against FP32 on {len(held_out)} held-out scenes: "
              f"weights {psnr_against(reference, fake_quantised(model, stats, activations=False), held_out):.2f} dB, "
              f"activations {psnr_against(reference, fake_quantised(model, stats, weights=False), held_out):.2f}, "
              f"both {psnr_against(reference, fake_quantised(model, stats), held_out):.2f}")
        widest = sorted(stats.items(), key=lambda kv: kv[1][0] - kv[1][1])[: args.widest]
        for name, (lo, hi, per_channel) in widest:
            print(f"  {name:34s} range {lo:+7.2f} .. {hi:+7.2f}; per-channel max |x|: median {np.median(per_channel):.2f}, "
                  f"largest {per_channel.max():.2f}")


if __name__ == "__main__":
    main()
