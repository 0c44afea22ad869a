"""The warm server (`llpack serve`, `llpack enhance --warm`): real processes over a real Unix socket.

A served command must be the command itself: same bytes written, same exit codes and messages,
paths relative to the caller's folder; a changed artifact is loaded afresh, never served stale."""
from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from toolkit.deploy import warm

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.skipif(not warm.available(), reason="the warm server needs Linux")


def llpack(*args: str, env: dict, cwd: Path = ROOT) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "toolkit.cli", *args], capture_output=True, text=True, cwd=cwd,
                          env={**os.environ, "PYTHONPATH": str(ROOT), **env}, timeout=300)


@pytest.fixture
def served(small_artifacts, tmp_path):
    """(artifact folder, env with a cache of its own); any server started is stopped afterwards."""
    key = next((k for k in (("openvino", "fp32"), ("onnxruntime", "fp32"), ("tflite", "fp32")) if k in small_artifacts), None)
    if key is None:
        pytest.skip("needs an artifact runtime")
    folder = tmp_path / "artifact"
    shutil.copytree(small_artifacts[key]["path"], folder)
    env = {"LLPACK_CACHE": str(tmp_path / "cache")}
    yield folder, env
    llpack("serve", "--stop", "-q", env=env)


def _socket(env: dict) -> Path:
    saved = os.environ.get("LLPACK_CACHE")
    os.environ["LLPACK_CACHE"] = env["LLPACK_CACHE"]
    try:
        return warm.socket_path()
    finally:
        os.environ["LLPACK_CACHE"] = saved


def test_served_commands_write_the_same_bytes_and_reuse_the_loaded_model(served, dark_dng, tmp_path):
    folder, env = served
    source = dark_dng(height=64, width=96)
    cold = llpack("enhance", str(source), "-o", str(tmp_path / "cold.png"), "--model", str(folder), "--ratio", "100",
                  "--cold", "--json", env=env)
    assert cold.returncode == 0, cold.stderr
    assert "warm_server" not in json.loads(cold.stdout) and not _socket(env).exists()
    results = []
    for k in range(3):
        run = llpack("enhance", str(source), "-o", str(tmp_path / f"warm{k}.png"), "--model", str(folder), "--ratio", "100",
                     "--warm", "60", "--json", env=env)
        assert run.returncode == 0, run.stderr
        results.append(json.loads(run.stdout))
    assert [r["warm_server"]["model"] for r in results] == ["loaded", "reused", "reused"]
    assert len({r["warm_server"]["pid"] for r in results}) == 1
    assert results[1]["runtime_import_seconds"] == 0.0
    for k in range(3):
        assert (tmp_path / f"warm{k}.png").read_bytes() == (tmp_path / "cold.png").read_bytes()
    # without --warm a running server is used as well; --cold never uses it
    plain = json.loads(llpack("enhance", str(source), "-o", str(tmp_path / "plain.png"), "--model", str(folder),
                              "--ratio", "100", "--json", env=env).stdout)
    assert plain["warm_server"]["model"] == "reused"
    status = llpack("serve", "--status", "--json", env=env)
    assert status.returncode == 0 and json.loads(status.stdout)["requests"] == 4
    assert json.loads(status.stdout)["models"][0]["path"] == str(folder.resolve())
    assert llpack("serve", "--stop", env=env).returncode == 0
    gone = llpack("serve", "--status", env=env)
    assert gone.returncode == 3 and "no warm server" in gone.stdout + gone.stderr


def test_relative_paths_errors_and_exit_codes_are_the_callers(served, dark_dng, tmp_path):
    folder, env = served
    work = tmp_path / "work"
    work.mkdir()
    shutil.copy(dark_dng(height=64, width=96), work / "dark.dng")
    first = llpack("enhance", "dark.dng", "-o", "out.jpg", "--model", str(folder), "--ratio", "100", "--warm", "60",
                   env=env, cwd=work)
    assert first.returncode == 0, first.stderr
    assert (work / "out.jpg").exists() and first.stdout.startswith("wrote out.jpg")
    missing = llpack("enhance", "nothing.dng", "-o", "x.png", "--model", str(folder), env=env, cwd=work)
    assert missing.returncode == 2 and "Traceback" not in missing.stderr
    assert missing.stderr.strip().count("\n") == 0 and "nothing.dng" in missing.stderr
    assert not (work / "x.png").exists()
    bad_quality = llpack("enhance", "dark.dng", "-o", "y.jpg", "--quality", "0", "--model", str(folder), env=env, cwd=work)
    assert bad_quality.returncode == 2 and not (work / "y.jpg").exists()
    status = json.loads(llpack("serve", "--status", "--json", env=env).stdout)
    assert status["requests"] == 3  # the failures ran on the server too, which is still up


def test_a_changed_artifact_is_loaded_afresh_not_served_stale(served, dark_dng, tmp_path):
    import torch

    from conftest import SMALL_SIZE, random_official_state
    from toolkit.deploy.enhance import Enhancer
    from toolkit.deploy.export import export

    folder, env = served
    manifest = json.loads((folder / "manifest.json").read_text())
    source = dark_dng(height=64, width=96)
    args = ("--model", str(folder), "--ratio", "100", "--warm", "60", "--json")
    assert llpack("enhance", str(source), "-o", str(tmp_path / "before.png"), *args, env=env).returncode == 0
    checkpoint = tmp_path / "other.pt"
    torch.save({"model": random_official_state("llpacknet-bmvc2020", seed=3)}, checkpoint)
    other = export(manifest["target"], "fp32", SMALL_SIZE, tmp_path / "other", checkpoint=checkpoint)
    shutil.rmtree(folder)
    shutil.copytree(other["path"], folder)
    after = llpack("enhance", str(source), "-o", str(tmp_path / "after.png"), *args, env=env)
    assert json.loads(after.stdout)["warm_server"]["model"] == "loaded"
    Enhancer(model=folder, ratio=100).enhance_file(source, tmp_path / "fresh.png")
    assert (tmp_path / "after.png").read_bytes() == (tmp_path / "fresh.png").read_bytes()
    assert (tmp_path / "after.png").read_bytes() != (tmp_path / "before.png").read_bytes()
    # a damaged model file is refused by its checksum, as in a process of its own
    (folder / manifest_files(folder)[0]).write_bytes(b"damaged")
    damaged = llpack("enhance", str(source), "-o", str(tmp_path / "damaged.png"), *args, env=env)
    assert damaged.returncode == 2 and "Traceback" not in damaged.stderr and damaged.stderr.strip().count("\n") == 0


def manifest_files(folder: Path) -> list[str]:
    return sorted(json.loads((folder / "manifest.json").read_text())["files"])


def test_a_stale_socket_is_removed_and_the_command_runs_here(served, dark_dng, tmp_path):
    folder, env = served
    path = _socket(env)
    path.parent.mkdir(parents=True, exist_ok=True)
    dead = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    dead.bind(str(path))
    dead.close()  # a socket file nobody listens at: a server that was killed
    run = llpack("enhance", str(dark_dng(height=64, width=96)), "-o", str(tmp_path / "here.png"), "--model", str(folder),
                 "--ratio", "100", "--json", env=env)
    assert run.returncode == 0, run.stderr
    assert "warm_server" not in json.loads(run.stdout) and not path.exists()


def test_the_server_survives_bad_requests_and_leaves_when_idle(served, tmp_path):
    _, env = served
    path = _socket(env)
    server = subprocess.Popen([sys.executable, "-m", "toolkit.cli", "serve", "--idle-timeout", "3", "--json"],
                              cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT), **env}, stdout=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 30
        while not path.exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        for junk in (b"", b"\x00\x00\x00\x05hello", b"\xff\xff\xff\xff", b"\x00\x00\x00\x02[]"):
            with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as conn:
                conn.connect(str(path))
                conn.sendall(junk)
        assert llpack("serve", "--status", "-q", env=env).returncode == 0
        assert llpack("serve", env=env).returncode == 2  # one server per installation
        out, _ = server.communicate(timeout=30)
    finally:
        if server.poll() is None:
            server.kill()
    summary = json.loads(out)
    assert summary["ended"] == "idle" and summary["requests"] == 0 and not path.exists()


def test_backend_cache_keeps_the_most_recent(tmp_path):
    from toolkit.deploy.enhance import BackendCache

    cache, loads = BackendCache(keep=2), []

    def loader(name):
        return lambda: loads.append(name) or name

    assert cache.get(("a",), loader("a")) == "a" and cache.last_use()["model"] == "loaded"
    assert cache.get(("b",), loader("b")) == "b"
    assert cache.get(("a",), loader("a")) == "a" and cache.last_use()["model"] == "reused"
    assert cache.get(("c",), loader("c")) == "c"  # b, least recently used, goes
    assert cache.get(("b",), loader("b")) == "b"
    assert loads == ["a", "b", "c", "b"]
    assert cache.last_use()["model"] == "loaded" and cache.last_use() == {}


def test_sigterm_stops_the_server_and_removes_its_socket(served):
    import signal

    _, env = served
    path = _socket(env)
    server = subprocess.Popen([sys.executable, "-m", "toolkit.cli", "serve", "--json"], cwd=ROOT,
                              env={**os.environ, "PYTHONPATH": str(ROOT), **env}, stdout=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 30
        while not path.exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        server.send_signal(signal.SIGTERM)
        out, _ = server.communicate(timeout=30)
    finally:
        if server.poll() is None:
            server.kill()
    assert json.loads(out)["ended"] == "terminated" and server.returncode == 0 and not path.exists()
