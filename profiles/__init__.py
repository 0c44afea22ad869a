"""Device profiles: what a device is given by default (threads, targets, sizes, memory budget).

`--device NAME` on the command line reads `profiles/devices/NAME.json`; measured reference
reports live beside them in `profiles/reports/` (not installed with the package).
"""
from __future__ import annotations

import json
from pathlib import Path

from toolkit.errors import UserError, closest_hint

DEVICES_DIR = Path(__file__).parent / "devices"
REQUIRED = {"name": str, "description": str, "arch": str, "threads": int, "default_target": str,
            "default_precision": str, "targets": list, "sizes": list, "memory_budget_mb": int}


def device_names() -> list[str]:
    return sorted(p.stem for p in DEVICES_DIR.glob("*.json"))


def load_device_profile(name: str) -> dict:
    """A device profile by name, checked field by field."""
    path = DEVICES_DIR / f"{name}.json"
    if not path.is_file():
        raise UserError(f"unknown device profile '{name}'", closest_hint(name, device_names()))
    try:
        profile = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise UserError(f"device profile {path} is not valid JSON ({exc})", "fix or restore the file") from exc
    wrong = [key for key, kind in REQUIRED.items() if not isinstance(profile.get(key), kind)]
    if wrong:
        raise UserError(f"device profile {path} lacks or mistypes {', '.join(wrong)}", "fix or restore the file")
    return profile


__all__ = ["DEVICES_DIR", "device_names", "load_device_profile"]
