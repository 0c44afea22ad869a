"""Run one unit of work (an export, a model's measurement) in a fresh process with a time limit.

A segfault, an exception or a hang then ends only that process: the caller turns the outcome
into a row with its reason and goes on with the next one. `inject_fault` lets the tests prove it:
off unless LLPACK_INJECT_FAULT names a place, e.g. "openvino-int8=crash,export:tflite-fp32=hang".
"""
from __future__ import annotations

import os
import signal
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path


@dataclass
class Outcome:
    returncode: int | None  # None: killed at the time limit
    seconds: float

    def reason(self, timeout: float, log_path: Path | None = None) -> str:
        """Why the process produced no result, in one line."""
        if self.returncode is None:
            return f"timed out after {timeout:g} s (killed)"
        if self.returncode < 0:
            try:
                name = signal.Signals(-self.returncode).name
            except ValueError:
                name = f"signal {-self.returncode}"
            return f"crashed ({name})"
        return f"exited with code {self.returncode}" + (f" (see {log_path})" if log_path else "")


def child_env(extra_path: str | None = None) -> dict:
    """This environment, with the toolkit's own source first on the path (an uninstalled checkout works too)."""
    env = dict(os.environ)
    root = Path(__file__).resolve().parents[1]  # the checkout holding toolkit/
    source = str(root) if (root / "pyproject.toml").exists() else None  # an installed wheel is found anyway
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [source, extra_path, env.get("PYTHONPATH")]))
    return env


def run_isolated(command: list[str], log_path: Path, timeout: float, env: dict | None = None,
                 stdout_path: Path | None = None) -> Outcome:
    """Run `command` (an argument list, never a shell string) in its own session; kill the whole
    group at `timeout`. stderr (and stdout unless `stdout_path`) go to `log_path`."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    start = time.monotonic()
    with open(log_path, "wb") as log_file, open(stdout_path or os.devnull, "wb") as out_file:
        try:
            proc = subprocess.Popen(command, stdout=out_file if stdout_path else log_file, stderr=log_file,
                                    env=env or child_env(), start_new_session=True, stdin=subprocess.DEVNULL)
        except OSError as exc:  # the interpreter itself could not be started (a wrong LLPACK_WORKER_PYTHON, say)
            log_file.write(f"cannot start {command[0]}: {exc}\n".encode())
            return Outcome(127, time.monotonic() - start)
        try:
            code = proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            code = None
        except BaseException:  # Ctrl-C: take the child down with us
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            raise
        if code is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    return Outcome(code, time.monotonic() - start)


FAULT_ENV = "LLPACK_INJECT_FAULT"


def inject_fault(place: str) -> None:
    """Crash, hang or raise here if LLPACK_INJECT_FAULT asks for `place` (tests only)."""
    for item in filter(None, os.environ.get(FAULT_ENV, "").split(",")):
        name, _, kind = item.partition("=")
        if name.strip() != place:
            continue
        if kind == "crash":
            os.kill(os.getpid(), signal.SIGSEGV)
        elif kind == "hang":
            while True:
                time.sleep(1)
        elif kind == "raise":
            raise RuntimeError(f"fault injected into {place}")
