"""Can the network memorise one fixed batch? The minutes-long check to run before an hours-long one.

Draws `--crops` clean training crops of a recipe (ratio 1, no noise: only demosaicking, colour and
tone are left to learn), trains LLPackNet on that one batch alone, and prints its PSNR every 100
steps beside what this architecture can reach on the same crops at best:

- the crops averaged over 8x8 and 16x16 blocks (what a network that only blurs scores), and
- a linear code of 64 numbers per 16x16 block (PCA fitted on these very crops): LLPackNet carries
  64 channels per 16x16 cell from its first layer to its last, and its decoder is nearly linear,
  so this is about the most it can keep of a crop's detail.

A recipe whose fresh network stays near the block averages is broken (input scale, learning rate,
data path); one that climbs toward the linear code is limited by the architecture, not the recipe.

    python benchmarks/memorise_batch.py [--recipe detail-wb-v3] [--steps 2000] [--lr 1e-3] [--init WEIGHTS]
"""
from __future__ import annotations

import argparse
import math
import time

import numpy as np
import torch

from toolkit.data.dataset import TrainingSampler
from toolkit.data.synth import NoiseParams, UnprocessParams, make_dark_pair
from toolkit.model.checkpoint import load_model
from toolkit.model.llpacknet import create_model
from toolkit.training.config import get_recipe
from toolkit.training.losses import combined_loss

CELL = 16  # LLPackNet's cell: 64 channels per 16x16 pixels between its first and last layers


def clean_batch(recipe: str, crops: int, size: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(white-balanced clean mosaics [N,1,H,W], sRGB targets [N,3,H,W]) from the recipe's scenes."""
    mix = get_recipe(recipe).data
    sampler = TrainingSampler(seed=seed, crop=size, batch_size=crops, pool_size=16, mix=mix)
    rng = np.random.default_rng([seed, 77])
    silent = NoiseParams(system_gain=1e-9, read_scale=0.0, read_lambda=0.0, row_scale=0.0)
    inputs, targets = [], []
    for _ in range(crops):
        clean = np.ascontiguousarray(sampler._clean_crop(rng), np.float32)
        pair = make_dark_pair(clean, 1.0, rng, params=UnprocessParams.sample_wide(rng), noise=silent,
                              highlights=mix.highlights)
        mosaic = pair.white_balanced() if mix.white_balance == "file" else pair.normalised()
        inputs.append(mosaic[None])
        targets.append(pair.target.transpose(2, 0, 1))
    return torch.from_numpy(np.stack(inputs)), torch.from_numpy(np.ascontiguousarray(np.stack(targets)))


def psnr(images: np.ndarray, targets: np.ndarray) -> float:
    """Mean PSNR (dB) of [N, ...] images in [0, 1]."""
    return float(np.mean([10 * math.log10(1.0 / max(float(((a - b) ** 2).mean()), 1e-12)) for a, b in zip(images, targets)]))


def reachable(targets: np.ndarray) -> dict[str, float]:
    """PSNR of the block averages and of the best 64-number linear code per cell, on `targets` [N,3,H,W]."""
    y = targets.transpose(0, 2, 3, 1)
    n, h, w, _ = y.shape
    scores = {}
    for k in (8, CELL):
        blocks = y.reshape(n, h // k, k, w // k, k, 3).mean(axis=(2, 4), keepdims=True)
        scores[f"{k}x{k} block average"] = psnr(np.broadcast_to(blocks, (n, h // k, k, w // k, k, 3)).reshape(y.shape), y)
    cells = y.reshape(n, h // CELL, CELL, w // CELL, CELL, 3).transpose(0, 1, 3, 2, 4, 5).reshape(-1, CELL * CELL * 3)
    mean = cells.mean(axis=0)
    _, _, basis = np.linalg.svd(cells - mean, full_matrices=False)
    code = basis[:64]
    rebuilt = mean + ((cells - mean) @ code.T) @ code
    rebuilt = rebuilt.reshape(n, h // CELL, w // CELL, CELL, CELL, 3).transpose(0, 1, 3, 2, 4, 5).reshape(y.shape)
    scores["linear code, 64 per cell"] = psnr(np.clip(rebuilt, 0, 1), y)
    return scores


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--recipe", default="detail-wb-v3")
    parser.add_argument("--crops", type=int, default=8)
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--steps", type=int, default=2000)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--init", help="start from these weights instead of a fresh network")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    torch.manual_seed(args.seed)
    x, y = clean_batch(args.recipe, args.crops, args.size, args.seed)
    for name, score in reachable(y.numpy()).items():
        print(f"{name:>28}: {score:6.2f} dB")
    model = (load_model(args.init) if args.init else create_model()).train()
    params = [p for n, p in model.named_parameters() if not n.startswith("amplifier.")]
    optimizer = torch.optim.Adam(params, lr=args.lr)
    loss_terms = get_recipe(args.recipe).loss
    gain = torch.ones(len(x), 1)
    started = time.perf_counter()
    for step in range(1, args.steps + 1):
        out = model(x, gain=gain)
        loss, _ = combined_loss(loss_terms, out, y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if step % 100 == 0 or step == args.steps:
            score = psnr(out.detach().clamp(0, 1).numpy(), y.numpy())
            print(f"step {step:5d}: loss {loss.item():.4f}, PSNR {score:6.2f} dB ({time.perf_counter() - started:.0f} s)", flush=True)


if __name__ == "__main__":
    main()
