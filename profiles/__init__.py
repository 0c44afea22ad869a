"""Device and sensor profiles: what a device is given by default (threads, targets, sizes, memory
budget), and what a camera sensor's raw frames need (bit depth, black and white levels).

`--device NAME` on the command line reads `profiles/devices/NAME.json`, `--sensor NAME`
`profiles/sensors/NAME.json` (each with its sources); measured reference reports live beside them
in `profiles/reports/` (not installed with the package).
"""
from __future__ import annotations

import json
from pathlib import Path

from toolkit.errors import UserError, closest_hint

DEVICES_DIR = Path(__file__).parent / "devices"
SENSORS_DIR = Path(__file__).parent / "sensors"
REQUIRED = {"name": str, "description": str, "arch": str, "threads": int, "default_target": str,
            "default_precision": str, "targets": list, "sizes": list, "memory_budget_mb": int}


SENSOR_REQUIRED = {"name": str, "description": str, "bit_depth": int, "native_pattern": str, "black_level": int,
                   "white_level": int, "sources": list}


def device_names() -> list[str]:
    return sorted(p.stem for p in DEVICES_DIR.glob("*.json"))


def sensor_names() -> list[str]:
    return sorted(p.stem for p in SENSORS_DIR.glob("*.json"))


def _load(folder: Path, kind: str, name: str, names: list[str], required: dict) -> dict:
    path = folder / f"{name}.json"
    if not path.is_file():
        raise UserError(f"unknown {kind} profile '{name}'", closest_hint(name, names))
    try:
        profile = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise UserError(f"{kind} profile {path} is not valid JSON ({exc})", "fix or restore the file") from exc
    wrong = [key for key, type_ in required.items() if not isinstance(profile.get(key), type_)]
    if wrong:
        raise UserError(f"{kind} profile {path} lacks or mistypes {', '.join(wrong)}", "fix or restore the file")
    return profile


def load_device_profile(name: str) -> dict:
    """A device profile by name, checked field by field."""
    return _load(DEVICES_DIR, "device", name, device_names(), REQUIRED)


def load_sensor_profile(name: str) -> dict:
    """A camera sensor's profile by name (imx477, imx708, imx296), checked field by field."""
    return _load(SENSORS_DIR, "sensor", name, sensor_names(), SENSOR_REQUIRED)


__all__ = ["DEVICES_DIR", "SENSORS_DIR", "device_names", "load_device_profile", "load_sensor_profile", "sensor_names"]
