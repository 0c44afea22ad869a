"""Checkpoints: load official LLPackNet files as they are, refuse anything that does not fit.

Official files are `torch.save({'model': state_dict, ...})` in one of two layouts (see
`tests/data/official_checkpoint_keys.tsv`, described in `docs/model-facts.md`): the paper's plain convolutions with an amplifier, or
the 2022 revision with weight-normalised convolutions (`weight_g`, `weight_v`). Loading is always
`weights_only=True`, so a checkpoint can never run code.
"""
from __future__ import annotations

import logging
import os
import pickle
import re
import zipfile
from pathlib import Path

import torch

from toolkit.errors import CheckpointError
from toolkit.fileio import atomic_path, file_sha256

from .llpacknet import DEFAULT_VARIANT, LLPackNet, create_model
from .variants import DEFAULT_CHECKPOINT

log = logging.getLogger(__name__)

UNTRAINED_SEED = 0




def fold_weight_norm(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Replace each `X.weight_g`/`X.weight_v` pair by `X.weight` = g * v / ||v|| (norm over dims 1..)."""
    folded: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        if key.endswith(".weight_v"):
            continue
        if key.endswith(".weight_g"):
            stem = key[: -len(".weight_g")]
            v_key = stem + ".weight_v"
            if v_key not in state:
                raise CheckpointError(f"checkpoint has {key} but no {v_key}")
            v = state[v_key].to(torch.float32)
            norm = v.reshape(v.shape[0], -1).norm(dim=1).reshape(-1, *([1] * (v.dim() - 1)))
            folded[stem + ".weight"] = value.to(torch.float32) * v / norm
        else:
            folded[key] = value
    orphans = [k for k in state if k.endswith(".weight_v") and k[:-1] + "g" not in state]
    if orphans:
        raise CheckpointError(f"checkpoint has {orphans[0]} but no matching weight_g")
    return folded


def _rename_2022_keys(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """2022 wraps convs in Sequential(conv, ...): `RDBr.0.bias` -> `RDBr.bias`, `conv.0.` -> `conv.`."""
    renamed = {}
    for key, value in state.items():
        parts = key.split(".")
        if parts[-1] in ("weight", "bias") and len(parts) >= 3 and parts[-2] == "0":
            parts = parts[:-2] + [parts[-1]]
        renamed[".".join(parts)] = value
    return renamed


def detect_variant(state: dict[str, torch.Tensor]) -> str:
    if any(k.endswith(".weight_g") for k in state):
        return "llpacknet-2022"
    if any(k.startswith("amplifier.") for k in state):
        return "llpacknet-bmvc2020"
    raise CheckpointError(
        "checkpoint matches neither LLPackNet layout (no amplifier.* and no weight_g tensors)",
        "use an official LLPackNet checkpoint or one written by 'llpack train'",
    )


def _read_checkpoint_file(path: Path) -> dict:
    if not path.exists():
        raise CheckpointError(f"checkpoint {path} does not exist", "check the --checkpoint path")
    if path.is_dir():
        raise CheckpointError(f"checkpoint {path} is a directory", "give the .pt/.pth file")
    try:
        blob = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        found = re.search(r"(?:Unsupported global|Unsupported operand)[^.\n]*", str(exc))
        what = found.group(0).strip() if found else "content that weights-only loading does not allow"
        raise CheckpointError(
            f"checkpoint {path} holds objects other than tensors and is refused ({what[:160]})",
            "save only a state dict: torch.save({'model': model.state_dict()}, path)",
        ) from exc
    except (RuntimeError, EOFError, OSError, zipfile.BadZipFile, ValueError, AttributeError) as exc:
        raise CheckpointError(
            f"checkpoint {path} cannot be read ({type(exc).__name__}: {str(exc).splitlines()[0][:160] if str(exc) else ''})",
            "the file is damaged or not a PyTorch checkpoint",
        ) from exc
    if isinstance(blob, dict) and "model" in blob and isinstance(blob["model"], dict):
        return blob
    if isinstance(blob, dict) and blob and all(isinstance(v, torch.Tensor) for v in blob.values()):
        return {"model": blob}
    raise CheckpointError(
        f"checkpoint {path} has no 'model' state dict",
        "expected torch.save({'model': state_dict}) as the official repository writes",
    )


def state_dict_for(state: dict[str, torch.Tensor]) -> tuple[str, dict[str, torch.Tensor]]:
    """Detect the layout of an official/trained state dict and bring it to this network's keys."""
    if not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise CheckpointError("checkpoint 'model' entry holds non-tensor values")
    state = {k[len("module."):] if k.startswith("module.") else k: v for k, v in state.items()}
    variant = detect_variant(state)
    if variant == "llpacknet-2022":
        state = _rename_2022_keys(fold_weight_norm(state))
    return variant, state


def check_fit(model: LLPackNet, state: dict[str, torch.Tensor], source: str) -> None:
    """Name every missing, unexpected or mis-shaped tensor instead of a PyTorch traceback."""
    expected = model.state_dict()
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    shapes = [
        f"{k} is {tuple(state[k].shape)}, expected {tuple(expected[k].shape)}"
        for k in expected
        if k in state and tuple(state[k].shape) != tuple(expected[k].shape)
    ]
    problems = []
    for label, items in (("missing", missing), ("unexpected", unexpected), ("wrong shape", shapes)):
        if items:
            shown = ", ".join(items[:4]) + (f" and {len(items) - 4} more" if len(items) > 4 else "")
            problems.append(f"{label}: {shown}")
    if problems:
        raise CheckpointError(
            f"checkpoint {source} does not fit {model.variant} ({'; '.join(problems)})",
            "use a checkpoint of one of the two official LLPackNet layouts",
        )


def load_model(path: str | os.PathLike | None = None, variant: str | None = None) -> LLPackNet:
    """Load LLPackNet in eval mode with weight norm folded.

    `path=None` takes the project's default weights; if none are installed, an untrained network
    (fixed seed) is returned and a warning says so.
    """
    if path is None and not DEFAULT_CHECKPOINT.exists():
        log.warning("no trained default weights are installed: using an UNTRAINED network (seed %d)", UNTRAINED_SEED)
        with torch.random.fork_rng():
            torch.manual_seed(UNTRAINED_SEED)
            model = create_model(variant or DEFAULT_VARIANT)
        model.checkpoint_info = {"path": None, "sha256": None, "trained": False}
        model.input_contract = {"white_balance": "none"}
        model.training_meta = {}
        return model.eval()
    file = Path(path) if path is not None else DEFAULT_CHECKPOINT
    blob = _read_checkpoint_file(file)
    found, state = state_dict_for(blob["model"])
    if variant is not None and variant != found:
        raise CheckpointError(f"checkpoint {file} is {found}, not {variant}")
    model = create_model(found)
    check_fit(model, state, str(file))
    model.load_state_dict({k: v.to(torch.float32) for k, v in state.items()})
    model.checkpoint_info = {"path": str(file), "sha256": file_sha256(file), "trained": True}
    model.input_contract = input_contract(blob, str(file))
    model.training_meta = training_meta(blob)
    return model.eval()


WHITE_BALANCE_CONTRACTS = ("none", "file")


def input_contract(blob: dict, source: str) -> dict:
    """What the weights expect of their input beyond the architecture: `white_balance` "file" (the
    mosaic multiplied by the file's white balance before packing, as `llpack train` recipes after
    the first do) or "none" (as read: the official weights and the first default weights)."""
    contract = blob.get("input", {"white_balance": "none"})
    if not isinstance(contract, dict) or contract.get("white_balance") not in WHITE_BALANCE_CONTRACTS:
        raise CheckpointError(f"checkpoint {source} has an unreadable input contract ({str(contract)[:80]})",
                              f"its 'input' entry must say white_balance: one of {', '.join(WHITE_BALANCE_CONTRACTS)}")
    return {"white_balance": contract["white_balance"]}


def training_meta(blob: dict) -> dict:
    """The recipe and step a checkpoint written by `llpack train` records, with its training record
    when it carries one ({} for other checkpoints): what `llpack train --init` goes on from."""
    recipe, step, record = blob.get("recipe"), blob.get("step"), blob.get("meta")
    if isinstance(recipe, str) and isinstance(step, int) and step >= 0:
        return {"recipe": recipe, "step": step, "record": record if isinstance(record, dict) else {}}
    return {}


def save_checkpoint(model: LLPackNet, path: str | os.PathLike, **extra) -> None:
    """Write `{'model': state_dict, ...}` (the official container) atomically."""
    payload = {"model": {k: v.detach().cpu() for k, v in model.state_dict().items()}, **extra}
    with atomic_path(path) as tmp:
        torch.save(payload, tmp)
