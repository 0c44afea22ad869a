"""Will these weights survive INT8? A minute's check in PyTorch before any export.

Simulates what the INT8 exporters here do and prints, for each checkpoint, the PSNR against its
own FP32 output on the export gate's held-out scenes (`toolkit.deploy.export.validation_inputs`):

- **as exported**: every tensor rounded to 8 bits where it is produced, over its own range (the
  extremes over the default synthetic calibration set): the packed input (per colour plane), the
  per-plane convolutions, the fusion before the trunk, each dense layer's output, each block's output
  and the trunk's output; weights rounded per output channel. A dense block concatenates tensors that
  were rounded one by one, each over its own range, as the exporters quantise every branch before a
  concatenation. This predicts the real exports within about 1 dB: the first default weights 41.4 dB
  (OpenVINO INT8 41.6), detail-wb-v3 30.8 (30.8-33.1 over the three runtimes' remedies),
  detail-wb-v4-int8 at step 8,000 33.6 (32.3-33.4).
- **concatenations rounded whole**: every convolution's input rounded over its own range instead,
  so a dense layer's input, a concatenation, shares one range: far more pessimistic (32.5, 20.4
  and 27.4 dB for the same weights), and what `detail-wb-v4-int8` trained against.
- the widest produced tensors: one wide tensor coarsens its own rounding, and a network trained on
  8-bit activations has to keep them narrow.

Neither mode is the exporters' exact arithmetic, and both have missed: keeping the per-plane and
fusion convolutions in float was predicted at 40.1 dB for detail-wb-v4-int8 ("as exported") and
scored 33.3 in OpenVINO and 32.5 in TFLite; "concatenations rounded whole" predicted channel
equalisation (`quantization/equalise.py`) within 0.2 dB of OpenVINO (37.8 vs 38.0) but puts the
first default weights at 32.5, where OpenVINO scores 41.6. Use it to rank ideas in seconds, and
`benchmarks/int8_remedies.py --checkpoint W` (the real quantisers) to decide.

    python benchmarks/int8_activation_ranges.py [CHECKPOINT ...] [--size 512x512]   (default: the built-in weights)
"""
from __future__ import annotations

import argparse
import copy

import numpy as np
import torch

from quantization.calibration import synthetic_calibration
from toolkit.deploy.export import validation_inputs
from toolkit.model.checkpoint import load_model
from toolkit.training.fake_quant import PLANE_CONVS, body_convolutions, produced_tensors, rounded_over


def extremes(model, inputs, names: list[str], inputs_of: bool = False) -> dict[str, tuple[float, float, float]]:
    """(min, max, median per-channel max |x|) of the named modules' outputs (or inputs) over `inputs`."""
    found: dict[str, list] = {}
    modules = dict(model.named_modules())

    def record(name):
        def hook(module, args, out=None):
            x = args[0] if inputs_of else out
            low, high, channels = found.get(name, (0.0, 0.0, np.zeros(x.shape[1])))
            found[name] = [min(low, float(x.min())), max(high, float(x.max())), np.maximum(channels, x.abs().amax(dim=(0, 2, 3)).numpy())]
        return hook

    handles = [modules[n].register_forward_pre_hook(record(n)) if inputs_of else modules[n].register_forward_hook(record(n))
               for n in names]
    with torch.no_grad():
        for x in inputs:
            model.packed_body(x)
    for h in handles:
        h.remove()
    return {n: (low, high, float(np.median(channels))) for n, (low, high, channels) in found.items()}


def _rounder(low: float, high: float):
    return lambda x: rounded_over(x, low, high)


def with_int8_weights(model):
    q = copy.deepcopy(model)
    with torch.no_grad():
        for conv in q.modules():
            if isinstance(conv, torch.nn.Conv2d):
                scale = conv.weight.abs().amax(dim=(1, 2, 3), keepdim=True).clamp(min=1e-12) / 127
                conv.weight.copy_(torch.round(conv.weight / scale) * scale)
    return q


def as_exported(model, calibration):
    """`model` with 8-bit weights and every produced tensor rounded over its own calibration range."""
    q = with_int8_weights(model)
    modules = dict(q.named_modules())
    for name, (low, high, _) in extremes(model, calibration, produced_tensors(model)).items():
        modules[name].register_forward_hook(lambda m, a, out, r=_rounder(low, high): r(out))
    for name, (low, high, _) in extremes(model, calibration, list(PLANE_CONVS), inputs_of=True).items():
        modules[name].register_forward_pre_hook(lambda m, a, r=_rounder(low, high): (r(a[0]),))
    return q


def concatenations_whole(model, calibration):
    """`model` with 8-bit weights and every convolution's input rounded over its own range."""
    q = with_int8_weights(model)
    convs = [n for n, _ in body_convolutions(model)]
    modules = dict(q.named_modules())
    for name, (low, high, _) in extremes(model, calibration, convs, inputs_of=True).items():
        modules[name].register_forward_pre_hook(lambda m, a, r=_rounder(low, high): (r(a[0]),))
    return q


def psnr_against(reference, model, inputs) -> float:
    with torch.no_grad():
        scores = [10 * np.log10(1 / (1e-12 + float(((model.packed_body(x).clamp(0, 1) - r) ** 2).mean())))
                  for x, r in zip(inputs, reference)]
    return float(np.mean(scores))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("checkpoints", nargs="*", default=[None], help="weights to check (default: the built-in weights)")
    parser.add_argument("--size", default="512x512", help="HxW of the gate's held-out scenes, as `llpack export --size`")
    parser.add_argument("--widest", type=int, default=5, help="how many of the widest produced tensors to list")
    args = parser.parse_args()
    size = tuple(int(v) for v in args.size.lower().split("x"))
    for checkpoint in args.checkpoints:
        model = load_model(checkpoint)
        balance = model.input_contract["white_balance"]
        calibration = [torch.from_numpy(x) for x in synthetic_calibration(white_balance=balance).inputs]
        held_out = [torch.from_numpy(item.packed) for item in validation_inputs(size, white_balance=balance)]
        with torch.no_grad():
            reference = [model.packed_body(x).clamp(0, 1) for x in held_out]
        print(f"== {checkpoint or 'the built-in weights'} (input white balance: {balance})")
        print(f"simulated INT8 against FP32 on the gate's {len(held_out)} held-out scenes at {args.size}: "
              f"as exported {psnr_against(reference, as_exported(model, calibration), held_out):.2f} dB, "
              f"concatenations rounded whole {psnr_against(reference, concatenations_whole(model, calibration), held_out):.2f}, "
              f"weights only {psnr_against(reference, with_int8_weights(model), held_out):.2f}")
        ranges = extremes(model, calibration, produced_tensors(model))
        for name, (low, high, median) in sorted(ranges.items(), key=lambda kv: kv[1][0] - kv[1][1])[: args.widest]:
            print(f"  {name:28s} range {low:+7.2f} .. {high:+7.2f}; median per-channel max |x| {median:.2f}")


if __name__ == "__main__":
    main()
