"""Run the light device runtime as real aarch64 code on an x86-64 Linux machine (qemu user mode).

`ensure_arm_environment()` builds, once, what a Raspberry Pi with 64-bit Raspberry Pi OS bookworm
has: Debian bookworm's arm64 Python 3.11 (the debs `dpkg -x`-ed into a root folder, the standard
library byte-compiled by that Python) and a folder of aarch64 wheels for one TFLite runtime
(ai-edge-litert or tflite-runtime 2.14) and OpenVINO's CPU runtime, with numpy, psutil, rawpy and
tifffile, never torch. It is then run by Debian's `qemu-aarch64-static` as a Cortex-A72 (Pi 4) or
Cortex-A76 (Pi 5), whose FP16 arithmetic qemu emulates too (XNNPACK and OpenVINO use it there):

    arm = ensure_arm_environment("ai-edge-litert")
    subprocess.run(arm.command("cortex-a72") + ["-m", "toolkit.cli", "enhance", ...], env=arm.env("cortex-a72"))

or `llpack emulate --cpu cortex-a72 -- profile runs/bundle`. Emulated timings say nothing about a
board: reports carry `emulated` (from LLPACK_EMULATED). Everything is cached under
$XDG_CACHE_HOME/llpacknet-edge/arm (default ~/.cache), each part built in a hidden temporary
folder and renamed into place, under a lock, so an interrupted build never looks complete.

The arm64 debs come from Debian bookworm through apt-get with a private configuration (its own
sources, lists and cache, signatures checked against Debian's archive keyring): bookworm whatever
the host runs, and the host's own apt set-up (architectures, sources) is left as it was.
"""
from __future__ import annotations

import argparse
import contextlib
import datetime
import hashlib
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

from toolkit.errors import UserError, closest_hint

REPO_ROOT = Path(__file__).resolve().parents[2]
PYTHON = "usr/bin/python3.11"  # Debian bookworm's (3.11.2), as on Raspberry Pi OS bookworm
SUITE = "bookworm"
DEBIAN_MIRROR = os.environ.get("LLPACK_DEBIAN_MIRROR", "http://deb.debian.org/debian")
SECURITY_MIRROR = os.environ.get("LLPACK_DEBIAN_SECURITY_MIRROR", "http://deb.debian.org/debian-security")
KEYRINGS = ("/usr/share/keyrings/debian-archive-keyring.gpg", "/usr/share/keyrings/debian-archive-keyring.pgp")
# Python 3.11 and the libraries its standard library and the wheels load (58 MB unpacked).
DEBS = ("python3.11-minimal", "libpython3.11-minimal", "libpython3.11-stdlib", "libc6", "libgcc-s1", "libstdc++6",
        "gcc-12-base", "zlib1g", "libexpat1", "libssl3", "libffi8", "libbz2-1.0", "liblzma5", "libcrypt1", "libuuid1",
        "libsqlite3-0", "libncursesw6", "libtinfo6", "libreadline8")
# glibc 2.36 takes any manylinux tag up to 2.36.
PLATFORMS = ("manylinux2014_aarch64", *(f"manylinux_2_{minor}_aarch64" for minor in range(17, 37)))
DEVICE_PACKAGES = ("numpy>=1.23", "psutil>=5.9", "tifffile>=2023.1.1", "pillow>=10", "pypng>=0.20220715")  # the light runtime (pyproject), rawpy apart
OPTIONAL_PACKAGES = ("rawpy>=0.18",)  # RAW decoding; the toolkit imports it lazily, so the rest works without it
# OpenVINO's CPU plugin on Arm (pyproject's `openvino` extra): installed beside either TFLite runtime.
OPENVINO_PACKAGES = ("openvino>=2026.4.1,<2027",)
# ai-edge-litert 2.x has no cp311 aarch64 wheel; 1.4.0 is the newest that has one.
RUNTIMES = {
    "ai-edge-litert": ("ai-edge-litert==1.4.0",),
    "tflite-runtime": ("tflite-runtime==2.14.0", "numpy<2"),  # built against numpy 1.x; manylinux_2_34 only
}
DEFAULT_RUNTIME = "ai-edge-litert"


@dataclass(frozen=True)
class Cpu:
    board: str
    part: str  # MIDR part number, read by cpuinfo (XNNPACK's kernel choice) and toolkit.bench.machine
    variant: str
    revision: int
    features: str  # the Features line the board's kernel prints

    @property
    def fp16_arithmetic(self) -> bool:
        """Armv8.2-A half-precision arithmetic (what XNNPACK and OpenVINO compute FP16 with)."""
        return "asimdhp" in self.features.split()

    @property
    def midr(self) -> str:
        """MIDR_EL1 as the kernel shows it in sysfs (read by OpenVINO's Arm code generator)."""
        value = (0x41 << 24) | (int(self.variant, 16) << 20) | (0xF << 16) | (int(self.part, 16) << 4) | self.revision
        return f"0x{value:016x}"


CPUS = {
    "cortex-a72": Cpu("Raspberry Pi 4", "0xd08", "0x0", 3, "fp asimd evtstrm crc32 cpuid"),
    "cortex-a76": Cpu("Raspberry Pi 5", "0xd0b", "0x4", 1,
                      "fp asimd evtstrm aes pmull sha1 sha2 crc32 atomics fphp asimdhp cpuid asimdrdm lrcpc dcpop asimddp"),
}
DEFAULT_CPU = "cortex-a76"


# ---------------------------------------------------------------- the environment
@dataclass(frozen=True)
class ArmEnvironment:
    """A built environment: arm64 root folder, wheel folder for one runtime, and the qemu to run them."""

    runtime: str
    rootfs: Path  # Debian's arm64 files (usr/, lib/, etc/)
    site: Path  # the runtime's aarch64 wheels, installed with pip --target
    python: Path  # host path of ROOTFS/usr/bin/python3.11
    qemu: str
    packages: dict  # name -> version, in the site folder
    missing: tuple[str, ...] = ()  # optional packages without an aarch64 cp311 wheel

    def _view(self, cpu: str) -> Path:
        """The -L prefix for one CPU: the root folder plus that CPU's /proc/cpuinfo and /sys CPU files.

        qemu 7.2 passes the host's x86 /proc/cpuinfo through; XNNPACK's CPU detection (cpuinfo) and
        toolkit.bench.machine need the board's. Any file missing under the prefix is the host's, so only these
        are given, for as many cores as this process may use (the guest runs on those).
        """
        spec = _cpu(cpu)
        count = len(os.sched_getaffinity(0))
        view = self.rootfs.parent / "views" / f"{cpu}-{count}cpu-v{VIEW_VERSION}"
        if view.is_dir():
            return view
        view.parent.mkdir(exist_ok=True)
        stage = Path(tempfile.mkdtemp(prefix=f".{view.name}.", dir=view.parent))
        try:
            for entry in self.rootfs.iterdir():
                os.symlink(Path("..", "..", self.rootfs.name, entry.name), stage / entry.name)
            _write(stage / "proc" / "cpuinfo", cpuinfo_text(cpu, count))
            system = stage / "sys" / "devices" / "system" / "cpu"
            every = f"0-{count - 1}" if count > 1 else "0"
            for name, text in (("possible", every), ("present", every), ("online", every), ("offline", ""),
                               ("kernel_max", str(count - 1))):
                _write(system / name, text + "\n")
            for i in range(count):
                topology = system / f"cpu{i}" / "topology"
                for name, text in (("core_id", i), ("physical_package_id", 0), ("cluster_id", 0), ("core_cpus_list", i),
                                   ("thread_siblings_list", i), ("core_siblings_list", every), ("package_cpus_list", every),
                                   ("cluster_cpus_list", every)):
                    _write(topology / name, f"{text}\n")
                _write(system / f"cpu{i}" / "regs" / "identification" / "midr_el1", spec.midr + "\n")
            os.chmod(stage, 0o755)
            try:
                os.rename(stage, view)
            except OSError:  # another process made it first
                if not view.is_dir():
                    raise
        finally:
            shutil.rmtree(stage, ignore_errors=True)
        return view

    def command(self, cpu: str = DEFAULT_CPU) -> list[str]:
        """The host command that runs the arm python as `cpu`; append python's arguments."""
        return [self.qemu, "-L", str(self._view(cpu)), "-cpu", cpu, str(self.python)]

    def env(self, cpu: str = DEFAULT_CPU, base: dict | None = None) -> dict:
        """The whole environment for `command(cpu)`: `base` (default os.environ) without the host's
        Python and loader variables, plus the site folder and this repository on PYTHONPATH."""
        env = {k: v for k, v in (os.environ if base is None else base).items()
               if not k.startswith("PYTHON") and k not in ("LD_PRELOAD", "LD_LIBRARY_PATH", "VIRTUAL_ENV")}
        env.update({
            "PYTHONPATH": os.pathsep.join([str(self.site), str(REPO_ROOT)]),
            "PYTHONNOUSERSITE": "1",
            "PYTHONUTF8": "1",  # the root folder has no locales; glibc 2.36 has C.UTF-8 built in
            "LC_ALL": "C.UTF-8",
            "LLPACK_EMULATED": f"qemu-aarch64 {cpu}",
            # No binfmt_misc: the profiler's worker processes must be started through qemu as well.
            "LLPACK_WORKER_PYTHON": json.dumps(self.command(cpu)),
        })
        return env

    def run(self, cpu: str, argv: list[str], **kwargs) -> subprocess.CompletedProcess:
        """subprocess.run of the arm python with `argv` (e.g. ['-c', code]) as `cpu`."""
        env = self.env(cpu, kwargs.pop("env", None))
        return subprocess.run(self.command(cpu) + list(argv), env=env, **kwargs)


def cpuinfo_text(cpu: str, count: int) -> str:
    """/proc/cpuinfo as 64-bit Raspberry Pi OS prints it for `count` cores of `cpu`."""
    spec = _cpu(cpu)
    blocks = [f"processor\t: {i}\nBogoMIPS\t: 108.00\nFeatures\t: {spec.features}\nCPU implementer\t: 0x41\n"
              f"CPU architecture: 8\nCPU variant\t: {spec.variant}\nCPU part\t: {spec.part}\nCPU revision\t: {spec.revision}\n"
              for i in range(count)]
    return "\n".join(blocks) + "\n"


def _cpu(name: str) -> Cpu:
    if name not in CPUS:
        raise UserError(f"unknown emulated CPU '{name}'", closest_hint(name, CPUS))
    return CPUS[name]


def _write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


# ---------------------------------------------------------------- building
def cache_root() -> Path:
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "llpacknet-edge" / "arm"


def _key(*parts) -> str:
    """Short hash of a recipe: edit a package list and the cache is rebuilt under a new name."""
    return hashlib.sha256(json.dumps(parts).encode()).hexdigest()[:10]


RECIPE = 2  # bump when the build steps change: every cache is rebuilt under a new name
VIEW_VERSION = 2  # bump when the per-CPU files change (2: MIDR_EL1 in sysfs)
ROOTFS_KEY = f"rootfs-{SUITE}-{_key(RECIPE, SUITE, DEBS, PYTHON)}"


def _site_key(runtime: str) -> str:
    return f"site-{runtime}-{_key(RECIPE, RUNTIMES[runtime], DEVICE_PACKAGES, OPENVINO_PACKAGES, OPTIONAL_PACKAGES, PLATFORMS)}"


class _Steps:
    def __init__(self, enabled: bool):
        self.enabled, self.started = enabled, time.monotonic()

    def __call__(self, message: str) -> None:
        if self.enabled:
            print(f"[arm64 {time.monotonic() - self.started:5.0f} s] {message}", file=sys.stderr, flush=True)


def _last_line(proc: subprocess.CompletedProcess) -> str:
    lines = [line.strip() for line in ((proc.stderr or "") + "\n" + (proc.stdout or "")).splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith(("E:", "ERROR", "error"))]
    return (errors or lines or ["no output"])[-1]


def _run(cmd: list[str], what: str, timeout: float, **kwargs) -> subprocess.CompletedProcess:
    """Run a build step; any failure becomes a one-line UserError naming the step."""
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, **kwargs)
    except FileNotFoundError as exc:
        raise UserError(f"cannot {what}: {exc.filename or cmd[0]} is not installed") from exc
    except subprocess.TimeoutExpired as exc:
        raise UserError(f"cannot {what}: timed out after {timeout:g} s", "check the network connection") from exc
    if proc.returncode != 0:
        raise UserError(f"cannot {what}: {_last_line(proc)}")
    return proc


def _check_host() -> None:
    if sys.platform != "linux" or platform.machine().lower() not in ("x86_64", "amd64"):
        raise UserError(f"aarch64 emulation is set up for x86-64 Linux, not {platform.system()} {platform.machine()}",
                        "on an ARM board run the toolkit directly")


def _find_qemu() -> str | None:
    for name in ("qemu-aarch64-static", "qemu-aarch64"):
        found = shutil.which(name) or (f"/usr/bin/{name}" if os.access(f"/usr/bin/{name}", os.X_OK) else None)
        if found:
            return found
    return None


def ensure_qemu(steps=lambda message: None) -> str:
    """Path of qemu-aarch64(-static); installs Debian's qemu-user-static with apt-get when missing (root)."""
    qemu = _find_qemu()
    if qemu is None:
        if os.geteuid() != 0 or shutil.which("apt-get") is None:
            raise UserError("qemu-aarch64-static is not installed", "install it: sudo apt-get install qemu-user-static")
        steps("installing qemu-user-static with apt-get")
        install = ["apt-get", "install", "-y", "-q", "--no-install-recommends", "qemu-user-static"]
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        try:
            _run(install, "install qemu-user-static with apt-get", 600, env=env)
        except UserError:
            steps("apt-get install failed; running apt-get update first")
            _run(["apt-get", "update", "-q"], "update the package lists (apt-get update)", 600, env=env)
            _run(install, "install qemu-user-static with apt-get", 600, env=env)
        qemu = _find_qemu()
        if qemu is None:
            raise UserError("qemu-user-static installed but qemu-aarch64-static is not on PATH")
    return qemu


def _check_qemu_cpus(qemu: str) -> None:
    try:  # `-cpu help` lists the models and exits with status 1
        listing = subprocess.run([qemu, "-cpu", "help"], capture_output=True, text=True, timeout=60).stdout.split()
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise UserError(f"cannot run {qemu}: {exc}") from exc
    missing = [cpu for cpu in CPUS if cpu not in listing]
    if missing:
        raise UserError(f"{qemu} does not emulate {', '.join(missing)}", "install qemu-user-static 7.0 or newer")


@contextlib.contextmanager
def _locked(root: Path) -> Iterator[None]:
    """One build at a time per cache folder; a racing build waits, then finds the result in place."""
    import fcntl  # POSIX only; the rest of the module imports anywhere (the CLI lists this command everywhere)

    root.mkdir(parents=True, exist_ok=True)
    with open(root / ".lock", "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _stage(root: Path, name: str) -> Path:
    return Path(tempfile.mkdtemp(prefix=f".build-{name}.", dir=root))


def _publish(stage: Path, final: Path, info: dict) -> None:
    """Write info.json last, then rename the whole folder into place (atomic on one file system)."""
    (stage / "info.json").write_text(json.dumps(info, indent=2) + "\n")
    os.chmod(stage, 0o755)  # mkdtemp made it private
    os.rename(stage, final)


def _complete(folder: Path) -> dict | None:
    try:
        return json.loads((folder / "info.json").read_text())
    except (OSError, ValueError):
        return None


def _apt_options(apt: Path, keyring: str) -> list[str]:
    """apt-get options for a private arm64 bookworm set-up: its own sources, lists, cache and status."""
    for sub in ("lists/partial", "cache/archives/partial", "sources.list.d", "preferences.d"):
        (apt / sub).mkdir(parents=True, exist_ok=True)
    (apt / "status").touch()
    signed = f"[arch=arm64 signed-by={keyring}]"
    (apt / "sources.list").write_text(
        f"deb {signed} {DEBIAN_MIRROR} {SUITE} main\n"
        f"deb {signed} {DEBIAN_MIRROR} {SUITE}-updates main\n"
        f"deb {signed} {SECURITY_MIRROR} {SUITE}-security main\n")
    settings = {
        "APT::Architecture": "arm64", "APT::Architectures": "arm64",
        "Dir::Etc::SourceList": apt / "sources.list", "Dir::Etc::SourceParts": apt / "sources.list.d",
        "Dir::Etc::Preferences": apt / "preferences", "Dir::Etc::PreferencesParts": apt / "preferences.d",
        "Dir::State::Lists": apt / "lists", "Dir::State::status": apt / "status", "Dir::Cache": apt / "cache",
        "Acquire::Languages": "none",
        "APT::Sandbox::User": "root" if os.geteuid() == 0 else "",  # downloads into our folders, not _apt's
    }
    return [arg for key, value in settings.items() if value != "" for arg in ("-o", f"{key}={value}")]


def _compile(qemu: str, rootfs: Path, folder: Path, what: str, steps) -> None:
    """Byte-compile a folder with the arm python itself, once, so later starts read .pyc files."""
    steps(f"byte-compiling {what} with the arm64 python (under qemu)")
    cmd = [qemu, "-L", str(rootfs), "-cpu", "cortex-a72", str(rootfs / PYTHON), "-m", "compileall", "-q", "-j0", str(folder)]
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTHON")}
    env.update({"PYTHONNOUSERSITE": "1", "PYTHONUTF8": "1", "LC_ALL": "C.UTF-8"})
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=900, env=env)
    if proc.returncode != 0:  # a file that does not compile only loses its .pyc; a python that cannot run is fatal
        probe = subprocess.run(cmd[:6] + ["-c", "pass"], capture_output=True, text=True, timeout=120, env=env)
        if probe.returncode != 0:
            raise UserError(f"the arm64 python does not run under {qemu}: {_last_line(probe)}")
        steps(f"some files in {what} did not byte-compile: {_last_line(proc)}")


def _build_rootfs(root: Path, qemu: str, steps) -> Path:
    final = root / ROOTFS_KEY
    if _complete(final):
        return final
    keyring = next((k for k in KEYRINGS if os.path.exists(k)), None)
    if keyring is None:
        raise UserError("Debian's archive keyring is missing (needed to check the arm64 packages)",
                        "install it: apt-get install debian-archive-keyring")
    for tool in ("apt-get", "dpkg-deb"):
        if shutil.which(tool) is None:
            raise UserError(f"building the arm64 root folder needs {tool} (Debian's package tools), which is not installed")
    stage = _stage(root, "rootfs")
    try:
        options = _apt_options(stage / "apt", keyring)
        steps(f"downloading Debian {SUITE} arm64 package lists")
        what = f"download Debian {SUITE} arm64 package lists (apt-get update; no network to {DEBIAN_MIRROR}?)"
        update = _run(["apt-get", "-q", *options, "update"], what, 600)
        lines = (update.stdout + "\n" + update.stderr).splitlines()
        failed = [line for line in lines if line.startswith("E:") or "Failed to fetch" in line] or \
            [line for line in lines if line.startswith("Err:")]
        if failed:  # apt-get update exits 0 when only some sources failed: a partial list is no use here
            raise UserError(f"cannot {what}: {failed[0].strip()}")
        debs = stage / "debs"
        debs.mkdir()
        steps(f"downloading {len(DEBS)} arm64 packages (Python 3.11, glibc)")
        _run(["apt-get", "-q", *options, "download", *DEBS], "download the arm64 packages (apt-get download)", 600, cwd=debs)
        rootfs = stage / "rootfs"
        rootfs.mkdir()
        versions = {}
        for deb in sorted(debs.glob("*.deb")):
            fields = _run(["dpkg-deb", "-f", str(deb), "Package", "Version"], f"read {deb.name}", 60).stdout
            info = dict(line.split(": ", 1) for line in fields.splitlines() if ": " in line)
            versions[info.get("Package", deb.name)] = info.get("Version", "?")
            _run(["dpkg-deb", "-x", str(deb), str(rootfs)], f"unpack {deb.name}", 120)
        missing = sorted(set(DEBS) - set(versions))
        if missing or not (rootfs / PYTHON).exists():
            raise UserError(f"the arm64 packages are incomplete (missing: {', '.join(missing) or PYTHON})")
        shutil.rmtree(stage / "apt")
        shutil.rmtree(debs)
        (rootfs / "etc" / "ld.so.cache").touch()  # empty: the arm loader must not read the host's x86 cache
        _compile(qemu, rootfs, rootfs / "usr" / "lib" / "python3.11", "the standard library", steps)
        _publish(stage, final, {"suite": SUITE, "packages": versions, "mirror": DEBIAN_MIRROR,
                                "built": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")})
        return final
    finally:
        shutil.rmtree(stage, ignore_errors=True)


def _pip(site: Path, requirements: list[str]) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "pip", "install", "--disable-pip-version-check", "--no-input", "--no-warn-conflicts",
           "--no-warn-script-location", "--no-compile", "--quiet", "--timeout", "30", "--retries", "2", "--target", str(site),
           "--only-binary=:all:", "--python-version", "3.11", "--implementation", "cp", "--abi", "cp311",
           *(arg for tag in PLATFORMS for arg in ("--platform", tag)), *requirements]
    try:
        return subprocess.run(cmd, capture_output=True, text=True, timeout=900)
    except subprocess.TimeoutExpired as exc:
        raise UserError("pip install of the aarch64 wheels timed out after 900 s", "check the network connection to PyPI") from exc


def _name(requirement: str) -> str:
    return requirement.split(">")[0].split("<")[0].split("=")[0].strip().lower()


def _installed(site: Path) -> dict:
    found = {}
    for meta in site.glob("*.dist-info"):
        name, _, version = meta.name[: -len(".dist-info")].partition("-")
        found[name.lower().replace("_", "-")] = version
    return dict(sorted(found.items()))


def _build_site(root: Path, runtime: str, qemu: str, rootfs: Path, steps) -> Path:
    final = root / _site_key(runtime)
    if _complete(final):
        return final
    stage = _stage(root, runtime)
    try:
        site = stage / "site"
        required, optional = [*RUNTIMES[runtime], *OPENVINO_PACKAGES, *DEVICE_PACKAGES], list(OPTIONAL_PACKAGES)
        steps(f"pip-installing aarch64 cp311 wheels: {' '.join(required + optional)}")
        proc = _pip(site, required + optional)
        blamed = [req for req in optional if _name(req) in _last_line(proc).lower()]
        if proc.returncode != 0 and blamed:  # e.g. no aarch64 cp311 wheel of rawpy: the rest still works
            steps(f"pip failed on {', '.join(map(_name, blamed))} ({_last_line(proc)}); retrying without it")
            shutil.rmtree(site, ignore_errors=True)
            optional = [req for req in optional if req not in blamed]
            proc = _pip(site, required + optional)
        if proc.returncode != 0:
            raise UserError(f"cannot pip install the aarch64 wheels for {runtime} "
                            f"(no network to PyPI, or no cp311 aarch64 wheel?): {_last_line(proc)}")
        missing = [_name(req) for req in OPTIONAL_PACKAGES if req not in optional]
        if missing:
            steps(f"installed without {', '.join(missing)}: emulated runs cannot read camera RAW files")
        _compile(qemu, rootfs, site, f"the {runtime} wheels", steps)
        packages = _installed(site)
        _publish(stage, final, {"runtime": runtime, "packages": packages, "missing": missing, "platforms": list(PLATFORMS),
                                "built": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")})
        return final
    finally:
        shutil.rmtree(stage, ignore_errors=True)


def ensure_arm_environment(runtime: str = DEFAULT_RUNTIME, show_progress: bool = True,
                           cache: str | os.PathLike | None = None) -> ArmEnvironment:
    """The emulated Raspberry Pi environment for `runtime`, built on first use (a few minutes), cached after.

    Raises UserError, with the reason on one line, where emulation cannot run here: not x86-64
    Linux, no qemu and no way to install it, no network for the first build.
    """
    if runtime not in RUNTIMES:
        raise UserError(f"unknown TFLite runtime '{runtime}'", closest_hint(runtime, RUNTIMES))
    _check_host()
    steps = _Steps(show_progress)
    root = Path(cache) if cache else cache_root()
    base, site = root / ROOTFS_KEY, root / _site_key(runtime)
    try:
        qemu = _find_qemu()
        if qemu is None:
            with _locked(root):  # one apt-get at a time
                qemu = ensure_qemu(steps)
        if not (_complete(base) and _complete(site)):
            _check_qemu_cpus(qemu)
            with _locked(root):
                for stale in root.glob(".build-*"):  # left by a build that was killed (we hold the lock)
                    shutil.rmtree(stale, ignore_errors=True)
                base = _build_rootfs(root, qemu, steps)
                site = _build_site(root, runtime, qemu, base / "rootfs", steps)
            steps(f"arm64 environment ready in {root}")
    except OSError as exc:
        raise UserError(f"cannot build the arm64 environment in {root}: {exc}", "set XDG_CACHE_HOME to a writable folder") from exc
    info = _complete(site) or {}
    return ArmEnvironment(runtime, base / "rootfs", site / "site", base / "rootfs" / PYTHON, qemu,
                          info.get("packages", {}), tuple(info.get("missing", ())))


# ---------------------------------------------------------------- `llpack emulate`
class EmulatedCommandFailed(UserError):
    """The emulated llpack command failed; its own message is already on stderr, its exit code is ours."""

    def __init__(self, result: dict):
        super().__init__(f"the emulated command exited with code {result['returncode']} ({result['emulated']})")
        self.result = result
        self.exit_code = result["returncode"] if 0 < result["returncode"] < 128 else 1


def add_emulate_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--cpu", choices=sorted(CPUS), default=DEFAULT_CPU,
                   help="emulated core: cortex-a72 (Raspberry Pi 4) or cortex-a76 (Raspberry Pi 5; default)")
    p.add_argument("--runtime", choices=sorted(RUNTIMES), default=DEFAULT_RUNTIME,
                   help="TFLite runtime inside: ai-edge-litert (default) or tflite-runtime 2.14 (older Pi images)")
    p.add_argument("args", nargs=argparse.REMAINDER, metavar="-- LLPACK_ARGS",
                   help="the llpack command to run as aarch64 code, after '--', e.g. -- profile runs/bundle")


def run_emulate(args: argparse.Namespace) -> dict:
    """Run `llpack ARGS` as aarch64 code (Debian bookworm arm64 Python 3.11, no torch) under qemu."""
    argv = list(args.args)
    if argv[:1] == ["--"]:
        argv = argv[1:]
    if not argv:
        raise UserError("no llpack command to emulate", "put it after '--', e.g. llpack emulate -- profile runs/bundle")
    arm = ensure_arm_environment(args.runtime, show_progress=not getattr(args, "quiet", False))
    start = time.monotonic()
    proc = subprocess.Popen(arm.command(args.cpu) + ["-m", "toolkit.cli", *argv], env=arm.env(args.cpu))
    try:
        code = proc.wait()
    except BaseException:  # Ctrl-C reaches the child too (same process group): let it finish, then stop
        proc.wait()
        raise
    result = {"cpu": args.cpu, "runtime": args.runtime, "returncode": code, "seconds": round(time.monotonic() - start, 2),
              "command": ["llpack", *argv], "emulated": f"qemu-aarch64 {args.cpu}", "packages": arm.packages}
    if code != 0:
        raise EmulatedCommandFailed(result)
    return result


def render_emulate(result: dict) -> str:
    runtime = f"{result['runtime']} {result.get('packages', {}).get(result['runtime'], '')}".strip()
    return (f"{' '.join(result.get('command', ['llpack']))} ran as aarch64 code ({result['cpu']}, {runtime}) "
            f"in {result['seconds']:.1f} s, exit code {result['returncode']}; emulated: timings say nothing about a board")
