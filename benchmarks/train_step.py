"""Training speed on this machine: one optimiser step of LLPackNet (batch 8, 256x256, Adam, the
recipe's loss) in FP32, FP32 channels-last and bf16 autocast channels-last, for each recipe named,
alternating in one process; prints each median against the first recipe's FP32 median measured in
the same run (so `--recipes detail-wb-v4-int8,detail-wb-v7-int8` prices v7's SSIM term).

    python benchmarks/train_step.py [--repeats 10] [--batch 8] [--crop 256] [--recipes detail-wb-v4-int8]

Pause any training run first (kill -STOP PID): its load would be charged to every mode alike,
but the ratios are only meaningful on an otherwise idle machine.
"""
from __future__ import annotations

import argparse
import statistics
import time

import torch

from toolkit.model.llpacknet import create_model
from toolkit.training.config import get_recipe
from toolkit.training.losses import combined_loss

MODES = {"fp32": (False, None), "fp32 channels-last": (True, None), "bf16 channels-last": (True, torch.bfloat16)}


def step_seconds(channels_last: bool, dtype, batch: int, crop: int, repeats: int, loss_terms: tuple) -> list[float]:
    torch.manual_seed(0)
    model = create_model().train()
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    optimizer = torch.optim.Adam([p for n, p in model.named_parameters() if not n.startswith("amplifier.")], 1e-4)
    x, y, gain = torch.rand(batch, 1, crop, crop) * 0.01, torch.rand(batch, 3, crop, crop), torch.full((batch,), 100.0)
    times = []
    for i in range(repeats + 2):
        start = time.perf_counter()
        with torch.autocast("cpu", dtype=dtype or torch.float32, enabled=dtype is not None):
            out = model(x, gain=gain)
        loss, _ = combined_loss(loss_terms, out.float(), y)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        if i >= 2:  # two warm-up steps
            times.append(time.perf_counter() - start)
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--crop", type=int, default=256)
    parser.add_argument("--recipes", default="detail-wb-v4-int8", help="comma-separated: whose loss terms each step computes")
    args = parser.parse_args()
    losses = {name: get_recipe(name).loss for name in args.recipes.split(",")}
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, CPU capability {torch.backends.cpu.get_cpu_capability()}")
    for recipe, terms in losses.items():
        print(f"{recipe}: loss {' + '.join(f'{w} x {n}' for n, w in terms)}")
    medians = {(recipe, mode): [] for recipe in losses for mode in MODES}
    for _ in range(2):  # two rounds, alternating modes and recipes, so drift hits each alike
        for recipe, mode in medians:
            channels_last, dtype = MODES[mode]
            medians[recipe, mode] += step_seconds(channels_last, dtype, args.batch, args.crop, args.repeats // 2 or 1, losses[recipe])
    base = statistics.median(next(iter(medians.values())))
    for (recipe, mode), times in medians.items():
        median = statistics.median(times)
        print(f"{recipe:20} {mode:20} median step {median * 1000:7.1f} ms   / first fp32: {median / base:.3f}")


if __name__ == "__main__":
    main()
