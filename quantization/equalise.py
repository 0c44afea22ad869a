"""Channel equalisation before INT8: the same network in float, with ranges that 8 bits can hold.

In a dense block every layer reads the concatenation of the block's input and all earlier layers'
outputs, and the INT8 runtimes quantise such an input with one scale. When one layer's channels
reach 70 while the block's input stays within 12 (the white-balanced weights, docs/training.md),
that one scale is set by the widest channel and every other channel loses most of its 256 levels.

Because ReLU commutes with a positive factor, a dense layer's output channel can be divided by s
(its convolution's row divided by s) and every later reader's matching input column multiplied by s
without changing the network's output: the rewrite is exact in float. `equalise` narrows every
channel whose largest value over the calibration set exceeds the block input's largest |value| down
to it, so one wide layer no longer sets the step for the whole concatenation. Narrower channels are
left as they are: widening a channel that barely fired in calibration (tried, up to 1000x) lets a
bright input push it past the range, and cost 1-2 dB on the stress scenes. The same holds for the
four per-plane convolutions before the fusion that reads their concatenation (their bias is divided
too), narrowed to their median channel's reach.
"""
from __future__ import annotations

import copy

import numpy as np
import torch

def _calibration_extremes(model, inputs: list[np.ndarray]) -> tuple[dict[str, torch.Tensor], dict[str, float]]:
    """Per-channel max |output| of every dense layer and per-plane convolution, and max |input| of
    each dense block, over `inputs` (packed, gain applied)."""
    channels: dict[str, torch.Tensor] = {}
    block_inputs: dict[str, float] = {}
    handles = []

    def per_channel(name):
        def hook(module, args, out):
            value = out.detach().abs().amax(dim=(0, 2, 3))
            channels[name] = torch.maximum(channels[name], value) if name in channels else value
        return hook

    def whole_input(name):
        def hook(module, args):
            block_inputs[name] = max(block_inputs.get(name, 0.0), float(args[0].detach().abs().max()))
        return hook

    for name, block in _dense_blocks(model).items():
        handles.append(block.register_forward_pre_hook(whole_input(name)))
        for index, layer in enumerate(block.dense_layers):
            handles.append(layer.register_forward_hook(per_channel(f"{name}.{index}")))
    for index, conv in enumerate(model.plane_convs):
        handles.append(conv.register_forward_hook(per_channel(f"plane.{index}")))
    try:
        with torch.inference_mode():
            for x in inputs:
                model.packed_body(torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32)))
    finally:
        for handle in handles:
            handle.remove()
    return channels, block_inputs


def _dense_blocks(model) -> dict:
    return {"RDB1": model.RDB1, "RDB2": model.RDB2, "RDB3": model.RDB3, "final.1": model.final[1]}


def _factors(reach: torch.Tensor, target: float) -> torch.Tensor:
    """s per channel: reach / s == target where the channel reaches beyond it, 1 elsewhere (channels
    are only narrowed: widening one that barely fired in calibration lets a bright input overflow it)."""
    if target <= 0:
        return torch.ones_like(reach)
    return (reach / target).clamp(min=1.0)


def equalise(model, calibration_inputs: list[np.ndarray]):
    """A copy of `model` (an LLPackNet) whose concatenated activations fit one range, with the same
    output in float (to rounding); `calibration_inputs`: packed inputs as the quantiser sees them."""
    model = copy.deepcopy(model).eval()
    channels, block_inputs = _calibration_extremes(model, calibration_inputs)
    with torch.no_grad():
        for name, block in _dense_blocks(model).items():
            first = block.dense_layers[0].conv
            offset, growth = first.in_channels, first.out_channels
            for index, layer in enumerate(block.dense_layers):
                s = _factors(channels[f"{name}.{index}"], block_inputs[name])
                layer.conv.weight.div_(s.view(-1, 1, 1, 1))
                for reader in [later.conv for later in block.dense_layers[index + 1:]] + [block.conv_1x1]:
                    reader.weight[:, offset : offset + growth].mul_(s.view(1, -1, 1, 1))
                offset += growth
        reach = torch.cat([channels[f"plane.{i}"] for i in range(len(model.plane_convs))])
        target = float(reach[reach > 0].median()) if bool((reach > 0).any()) else 0.0
        width = model.plane_convs[0].out_channels
        for index, conv in enumerate(model.plane_convs):
            s = _factors(channels[f"plane.{index}"], target)
            conv.weight.div_(s.view(-1, 1, 1, 1))
            if conv.bias is not None:
                conv.bias.div_(s)
            model.before_identity.weight[:, index * width : (index + 1) * width].mul_(s.view(1, -1, 1, 1))
    return model
