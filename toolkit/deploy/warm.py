"""A warm server: one background process that keeps models loaded between `llpack enhance` calls.

OpenVINO's file cache saves compiling, but a fresh process still pays Python's start-up, the
runtime's import and building the CPU kernels for the model's full-size shapes (about 0.4 s for a
2848x4256 artifact, however the blob is cached). A process that stays alive pays them once.

How it works (the pattern of Mercurial's command server `chg`): `llpack enhance` parses its own
arguments, then connects to the server's Unix socket and sends its arguments, working folder,
environment and umask together with its own stdin, stdout and stderr (SCM_RIGHTS). The server
runs the same command on those file descriptors, so output, progress and exit code are exactly
the command's own, and sends the exit code back. Requests run one at a time. The socket lives in
a folder only its user can enter, and the server answers only processes of its own user.

One server per installation (Python and the toolkit's source files, with their modification
times): an upgraded or edited toolkit never talks to an old server. It leaves after
`idle_timeout` seconds without a request. Linux only (SO_PEERCRED and descriptor passing).
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable

from toolkit.errors import UserError
from toolkit.fileio import user_cache_dir

log = logging.getLogger(__name__)

DEFAULT_IDLE_TIMEOUT = 600.0  # seconds a server waits for its next request before it leaves
START_TIMEOUT = 20.0  # seconds a starting server has to begin listening
MAX_REQUEST = 1 << 20  # bytes: arguments and environment; anything larger is not a request of ours
_HEADER = struct.Struct("!I")
_SOCKET_PATH_MAX = 100  # sun_path holds 108 bytes on Linux


def available() -> bool:
    """Whether this platform can pass file descriptors and check the peer's user (Linux)."""
    return hasattr(socket, "AF_UNIX") and hasattr(socket, "send_fds") and hasattr(socket, "SO_PEERCRED")


def _installation_key() -> str:
    """What a server's code depends on: the interpreter and the toolkit's source files (where they
    are, and when the newest was written: an upgrade or an edit gives a new key)."""
    roots = [Path(__file__).resolve().parents[1], Path(__file__).resolve().parents[2] / "targets"]
    newest = max((p.stat().st_mtime_ns for root in roots if root.is_dir() for p in root.rglob("*.py")), default=0)
    facts = json.dumps([sys.executable, [str(r) for r in roots], newest])
    return hashlib.sha256(facts.encode()).hexdigest()[:16]


def socket_path() -> Path:
    """This installation's server socket, in the user's cache (a private temporary folder if that
    path is too long for a Unix socket)."""
    key = _installation_key()
    path = user_cache_dir("serve") / f"{key}.sock"
    if len(os.fsencode(str(path))) > _SOCKET_PATH_MAX:
        cache = hashlib.sha256(str(user_cache_dir()).encode()).hexdigest()[:8]
        path = Path(tempfile.gettempdir()) / f"llpack-{os.getuid()}" / f"{cache}-{key}.sock"
    return path


def _private_folder(folder: Path) -> None:
    """Create `folder` for the socket; refuse one that other users can enter or that is not ours."""
    folder.mkdir(parents=True, exist_ok=True, mode=0o700)
    info = folder.stat()
    if info.st_uid != os.getuid():
        raise UserError(f"{folder} belongs to another user", "set LLPACK_CACHE to a folder of your own")
    if info.st_mode & 0o077:
        os.chmod(folder, 0o700)


# ---------------------------------------------------------------- messages
def _send(conn: socket.socket, message: dict, fds: list[int] | None = None) -> None:
    data = json.dumps(message).encode()
    frame = _HEADER.pack(len(data)) + data
    if fds:
        sent = socket.send_fds(conn, [frame], fds)
        frame = frame[sent:]
    if frame:  # nothing more to send must not touch the socket: a fast server may have answered and closed it
        conn.sendall(frame)


def _receive(conn: socket.socket, with_fds: bool = False) -> tuple[dict, list[int]]:
    """One message and the descriptors that came with it; ValueError for anything malformed."""
    fds: list[int] = []
    if with_fds:
        data, fds, _, _ = socket.recv_fds(conn, 65536, 3)
    else:
        data = conn.recv(65536)
    try:
        while len(data) < _HEADER.size:
            more = conn.recv(65536)
            if not more:
                raise ValueError("connection closed before a message")
            data += more
        (size,) = _HEADER.unpack_from(data)
        if size > MAX_REQUEST:
            raise ValueError(f"a message of {size} bytes")
        while len(data) < _HEADER.size + size:
            more = conn.recv(65536)
            if not more:
                raise ValueError("connection closed inside a message")
            data += more
        message = json.loads(data[_HEADER.size:_HEADER.size + size])
        if not isinstance(message, dict):
            raise ValueError("a message that is not an object")
    except Exception:
        for fd in fds:
            os.close(fd)
        raise
    return message, fds


def _peer(conn: socket.socket) -> tuple[int, int]:
    """(pid, uid) of the process at the other end."""
    pid, uid, _ = struct.unpack("3i", conn.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i")))
    return pid, uid


def _connect(path: Path, timeout: float | None = 2.0) -> socket.socket | None:
    """A connection to the server at `path`, or None when none listens there (a stale socket file,
    left by a server that was killed, is removed)."""
    if not path.exists():
        return None
    conn = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    conn.settimeout(timeout)
    try:
        conn.connect(str(path))
    except ConnectionRefusedError:
        conn.close()
        with contextlib.suppress(OSError):
            path.unlink()
        return None
    except OSError:
        conn.close()
        return None
    conn.settimeout(None)
    return conn


# ---------------------------------------------------------------- the server
class _Handover:
    """For one request: the client's stdio, working folder, environment and umask in place of the
    server's; everything put back afterwards."""

    def __init__(self, fds: list[int], request: dict):
        self.fds, self.request = fds, request

    def __enter__(self) -> None:
        for stream in (sys.stdout, sys.stderr):
            stream.flush()
        self.saved_fds = [os.dup(fd) for fd in (0, 1, 2)]
        self.saved_streams = sys.stdin, sys.stdout, sys.stderr  # the server's own may point elsewhere
        sys.stdin, sys.stdout, sys.stderr = sys.__stdin__, sys.__stdout__, sys.__stderr__
        for target, fd in zip((0, 1, 2), self.fds):
            os.dup2(fd, target)
        self.saved_cwd = os.getcwd()
        self.saved_env = dict(os.environ)
        os.chdir(self.request["cwd"])
        os.environ.clear()
        os.environ.update(self.request["env"])
        self.saved_umask = os.umask(int(self.request["umask"]))

    def __exit__(self, *exc) -> None:
        for stream in (sys.stdout, sys.stderr):
            with contextlib.suppress(Exception):
                stream.flush()
        sys.stdin, sys.stdout, sys.stderr = self.saved_streams
        os.umask(self.saved_umask)
        os.environ.clear()
        os.environ.update(self.saved_env)
        os.chdir(self.saved_cwd)
        for target, fd in zip((0, 1, 2), self.saved_fds):
            os.dup2(fd, target)
            os.close(fd)
        for fd in self.fds:
            os.close(fd)


def _valid_request(request: dict, fds: list[int]) -> bool:
    return (len(fds) == 3 and isinstance(request.get("argv"), list) and all(isinstance(a, str) for a in request["argv"])
            and isinstance(request.get("cwd"), str) and isinstance(request.get("umask"), int)
            and isinstance(request.get("env"), dict)
            and all(isinstance(k, str) and isinstance(v, str) for k, v in request["env"].items()))


def serve(run: Callable[[list[str]], int], idle_timeout: float = DEFAULT_IDLE_TIMEOUT, path: Path | None = None,
          describe: Callable[[], dict] | None = None) -> dict:
    """Answer requests at `path` (default `socket_path()`) until `idle_timeout` seconds pass without
    one, a `stop` request, SIGTERM or Ctrl-C. `run(argv)` carries out one command and returns its exit
    code; `describe()` adds to what a `status` request answers. Returns a summary of the server's life."""
    if not available():
        raise UserError("the warm server needs Linux (Unix sockets with descriptor passing)", "run llpack enhance without it")
    if not (idle_timeout > 0):
        raise UserError(f"the idle timeout must be a positive number of seconds, not {idle_timeout}")
    path = path or socket_path()
    _private_folder(path.parent)
    existing = _connect(path)
    if existing is not None:
        existing.close()
        raise UserError(f"a warm server already answers at {path}", "stop it with 'llpack serve --stop', or use it")
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    staged = path.with_name(f".{path.name}.{os.getpid()}")
    with contextlib.suppress(OSError):
        staged.unlink()
    listener.bind(str(staged))
    os.chmod(staged, 0o600)
    listener.listen(8)
    os.replace(staged, path)  # appears ready to accept: a client never meets a half-made socket
    inode = path.stat().st_ino
    started, requests, reason = time.monotonic(), 0, "idle"
    saved_term = signal.signal(signal.SIGTERM, _terminate)
    saved_int = signal.signal(signal.SIGINT, signal.default_int_handler)  # even if started with it ignored
    log.info("warm server %d listening at %s (leaves after %g s idle)", os.getpid(), path, idle_timeout)
    try:
        listener.settimeout(idle_timeout)
        while True:
            try:
                conn, _ = listener.accept()
            except socket.timeout:
                break
            with conn:
                conn.settimeout(10.0)  # a client has ten seconds to send its request
                _, uid = _peer(conn)
                if uid != os.getuid():
                    continue
                try:
                    request, fds = _receive(conn, with_fds=True)
                except (ValueError, OSError) as exc:
                    log.warning("warm server: ignored a bad request (%s)", exc)
                    continue
                conn.settimeout(None)
                op = request.get("op")
                if op == "stop":
                    _close_all(fds)
                    _send(conn, {"stopped": os.getpid()})
                    reason = "stopped"
                    break
                if op == "status":
                    _close_all(fds)
                    _send(conn, {"pid": os.getpid(), "socket": str(path), "requests": requests,
                                 "idle_timeout": idle_timeout, "uptime_seconds": round(time.monotonic() - started, 1),
                                 **(describe() if describe else {})})
                    continue
                if not _valid_request(request, fds):
                    _close_all(fds)
                    continue
                requests += 1
                code = _run_request(run, request, fds)
                with contextlib.suppress(OSError):
                    _send(conn, {"exit": code})
    except KeyboardInterrupt:
        reason = "interrupted"
    except _Terminated:  # mid-request too: its client runs the command itself
        reason = "terminated"
    finally:
        signal.signal(signal.SIGTERM, saved_term)
        signal.signal(signal.SIGINT, saved_int)
        listener.close()
        with contextlib.suppress(OSError):
            if path.stat().st_ino == inode:  # still ours, not a newer server's
                path.unlink()
    return {"socket": str(path), "pid": os.getpid(), "requests": requests, "ended": reason,
            "seconds": round(time.monotonic() - started, 1)}


class _Terminated(BaseException):
    """SIGTERM: the server leaves, even in the middle of a request (which only Ctrl-C stops)."""


def _terminate(signum, frame):
    raise _Terminated


def _close_all(fds: list[int]) -> None:
    for fd in fds:
        with contextlib.suppress(OSError):
            os.close(fd)


def _run_request(run: Callable[[list[str]], int], request: dict, fds: list[int]) -> int:
    """One command on the client's descriptors; SystemExit (argparse) becomes its code."""
    try:
        with _Handover(fds, request):
            try:
                return int(run(request["argv"]))
            except SystemExit as exc:
                return exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
            except KeyboardInterrupt:
                print("interrupted", file=sys.stderr)
                return 130
    except OSError as exc:  # the client's folder is gone, a descriptor is bad
        log.warning("warm server: could not take over the request (%s)", exc)
        return 1


# ---------------------------------------------------------------- the client
def start_server(idle_timeout: float = DEFAULT_IDLE_TIMEOUT, path: Path | None = None) -> socket.socket | None:
    """Start a detached server (`llpack serve`) and return a connection to it, or None if it did not
    begin listening within START_TIMEOUT (its log, beside the socket, says why)."""
    path = path or socket_path()
    _private_folder(path.parent)
    logfile = path.with_suffix(".log")
    with open(logfile, "wb") as log_fh:  # the latest server's log only
        process = subprocess.Popen(
            [sys.executable, "-m", "toolkit.cli", "-v", "serve", "--idle-timeout", str(idle_timeout), "--socket", str(path)],
            stdin=subprocess.DEVNULL, stdout=log_fh, stderr=log_fh, start_new_session=True, close_fds=True,
            cwd=Path(__file__).resolve().parents[2], env={**os.environ, "PYTHONPATH": _python_path()},
        )
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        conn = _connect(path)
        if conn is not None:
            return conn
        if process.poll() is not None:  # it left: most likely another server won the socket
            return _connect(path)
        time.sleep(0.02)
    return None


def _python_path() -> str:
    """The toolkit's own root first, so the server imports this very installation."""
    root = str(Path(__file__).resolve().parents[2])
    rest = os.environ.get("PYTHONPATH", "")
    return root + (os.pathsep + rest if rest else "")


def run_on_server(argv: list[str], start: bool, idle_timeout: float = DEFAULT_IDLE_TIMEOUT,
                  path: Path | None = None) -> int | None:
    """Run `llpack argv` on the warm server with this process's stdio; its exit code, or None when
    there is no server (and `start` is False, or it could not start): then run the command here."""
    if not available():
        return None
    path = path or socket_path()
    conn = _connect(path)
    if conn is None and start:
        conn = start_server(idle_timeout, path)
    if conn is None:
        return None
    request = {"argv": argv, "cwd": os.getcwd(), "env": dict(os.environ), "umask": _current_umask()}
    with conn:
        server_pid, _ = _peer(conn)
        for stream in (sys.stdout, sys.stderr):
            stream.flush()
        try:
            _send(conn, request, [0, 1, 2])
        except OSError:
            return None  # it left before the whole request arrived, so it ran nothing: run here
        with _forward_interrupts(server_pid):
            try:
                reply, _ = _receive(conn)
            except (ValueError, OSError):
                reply = {}
    if not isinstance(reply.get("exit"), int):
        log.warning("the warm server (pid %d) stopped during the request; running it in this process", server_pid)
        return None
    return reply["exit"]


def _current_umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


@contextlib.contextmanager
def _forward_interrupts(pid: int):
    """Ctrl-C while the server works goes to the server, which stops the command as this process would."""
    def forward(signum, frame):
        with contextlib.suppress(OSError):
            os.kill(pid, signal.SIGINT)

    saved = signal.signal(signal.SIGINT, forward)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, saved)


def request(op: str, path: Path | None = None) -> dict | None:
    """`status` or `stop` to the running server; None when there is none."""
    conn = _connect(path or socket_path())
    if conn is None:
        return None
    with conn:
        _send(conn, {"op": op})
        try:
            reply, _ = _receive(conn)
        except (ValueError, OSError):
            return None
    return reply


__all__ = ["DEFAULT_IDLE_TIMEOUT", "available", "request", "run_on_server", "serve", "socket_path", "start_server"]
