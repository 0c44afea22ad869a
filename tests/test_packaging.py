"""Packaging: extras keep the device path light, and the device path imports without torch."""
from __future__ import annotations

import subprocess
import sys
import textwrap
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_base_install_has_no_torch_and_extras_exist():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    base = " ".join(project["dependencies"]).lower()
    assert "torch" not in base
    for needed in ("numpy", "rawpy", "psutil"):
        assert needed in base
    extras = project["optional-dependencies"]
    device = " ".join(project["dependencies"] + extras["runtime"]).lower()  # pip install llpacknet-edge[runtime]
    assert "torch" not in device and "ray" not in device and "rosbags" not in device and "opencv" not in device
    assert "torch==2.13.0" in extras["export"]
    assert {"export", "dev", "all"} <= set(extras)
    assert project["scripts"]["llpack"] == "toolkit.cli:main"


def test_the_emulated_board_installs_the_base_dependencies():
    """The aarch64 environment that proves bundles installs what `pip install llpacknet-edge` would."""
    import re

    from toolkit.bench.emulation import DEVICE_PACKAGES, OPTIONAL_PACKAGES

    def names(requirements) -> set[str]:
        return {re.split(r"[<>=!~ ;\[]", r, maxsplit=1)[0].lower() for r in requirements}

    base = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    assert names(DEVICE_PACKAGES) | names(OPTIONAL_PACKAGES) == names(base)


def test_layout_exists():
    for folder in ("toolkit", "targets", "quantization", "profiles", "tests"):
        assert (ROOT / folder).is_dir(), folder
    assert (ROOT / "README.md").read_text().lstrip().splitlines()[0].startswith("#")


NO_TORCH = """
import sys
sys.modules['torch'] = None  # any 'import torch' now raises ImportError
import toolkit, toolkit.camera.raw, toolkit.camera.bayer, toolkit.data.synth, toolkit.camera.dng, toolkit.deploy.enhance, toolkit.cli
import targets, targets.openvino, targets.onnxruntime, quantization, quantization.calibration
import toolkit.deploy.artifact, toolkit.deploy.export, toolkit.training.evaluate, toolkit.data.dataset
assert 'torch' not in [m for m in sys.modules if sys.modules[m] is not None]
"""


def test_device_path_imports_without_torch():
    subprocess.run([sys.executable, "-c", NO_TORCH], check=True, cwd=ROOT)


def test_enhance_without_torch_names_the_extra(tmp_path):
    np_file = tmp_path / "m.npy"
    script = NO_TORCH + textwrap.dedent(f"""
        import numpy as np
        np.save({str(np_file)!r}, np.zeros((64, 64), np.float32))
        from toolkit.cli import main
        sys.exit(main(['enhance', {str(np_file)!r}, '-o', {str(tmp_path / 'o.png')!r}]))
    """)
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=ROOT)
    assert proc.returncode == 2, proc.stderr
    assert "llpacknet-edge[export]" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert not (tmp_path / "o.png").exists()


def test_console_script_help_and_exit_codes():
    exe = Path(sys.executable).parent / "llpack"
    cmd = [str(exe)] if exe.exists() else [sys.executable, "-m", "toolkit.cli"]
    assert subprocess.run(cmd + ["--help"], capture_output=True).returncode == 0
    for sub in ("enhance", "info", "demo"):
        out = subprocess.run(cmd + [sub, "--help"], capture_output=True, text=True)
        assert out.returncode == 0 and "--json" in out.stdout
    assert subprocess.run(cmd, capture_output=True).returncode == 2
    assert subprocess.run(cmd + ["no-such-command"], capture_output=True).returncode == 2
