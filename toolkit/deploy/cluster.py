"""Archives past one machine: a folder of RAW files, or of ROS 2 bags, spread over a Ray cluster
(the `cluster` extra).

Each worker is a Ray actor that loads the model (or artifact) once and enhances whole files,
writing each output atomically, so an output that exists is complete: a re-run skips it. A worker
that dies loses only the file it was on; Ray starts the actor again and the file is retried. The
outputs are those of `llpack enhance FOLDER` on one machine, byte for byte.
"""
from __future__ import annotations

import logging
import os
import time
from pathlib import Path

from toolkit.errors import InputError, MissingDependencyError, UserError
from toolkit.fileio import IMAGE_FORMATS, check_image_options

from .enhance import Enhancer, _one_line, _output_folder, file_entry, folder_inputs, output_names

log = logging.getLogger(__name__)
RETRIES = 3  # times a file is tried again on a new worker after its worker died


def _ray():
    try:
        import ray
    except ImportError as exc:
        raise MissingDependencyError("ray", "cluster", "spreading work over a Ray cluster") from exc
    return ray


class _Worker:
    """One Ray actor: an `Enhancer` built once from plain settings, then one file per call."""

    def __init__(self, settings: dict, threads_environment: dict):
        # Ray sets OMP_NUM_THREADS to the actor's CPUs; PyTorch's results depend on its thread count
        # in the last bits, so a worker takes the driver's setting, as a plain run on its machine would.
        for name, value in threads_environment.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
        logging.getLogger("toolkit").setLevel(logging.WARNING)
        self.enhancer = Enhancer(**settings)
        self.enhancer.backend  # load now: every file after this one pays only for itself

    def pid(self) -> int:
        return os.getpid()

    def run(self, source: str, target: str, bits: int, quality: int, levels: dict, topic: str | None = None) -> dict:
        if topic is not None:
            return self.run_bag(source, target, topic, levels)
        try:
            npy = Path(source).suffix.lower() == ".npy"
            outcome = self.enhancer.enhance_file(source, target, bits, quality=quality, **(levels if npy else {}))
        except Exception as exc:  # the file's failure is its entry; the worker goes on
            outcome = exc
        return {**file_entry(source, target, outcome), "worker": os.getpid()}

    def run_bag(self, source: str, target: str, topic: str, levels: dict) -> dict:
        from .bags import enhance_bag

        try:
            result = enhance_bag(self.enhancer, source, target, topic, levels["black_level"], levels["white_level"])
        except Exception as exc:
            return file_entry(source, target, exc)
        return {"input": source, "output": target, "images": result["images"], "enhanced": result["enhanced"],
                "skipped_messages": result["skipped"], "worker": os.getpid()}


def bag_inputs(src: Path) -> list[Path]:
    """The ROS 2 bags directly in `src` (rosbag2 folders and .mcap files), sorted by name."""
    from .bags import is_bag

    if not src.is_dir():
        raise InputError(f"{src} is not a folder", "give a folder of ROS 2 bags")
    return sorted(p for p in src.iterdir() if not p.name.startswith(".") and is_bag(p))


def _check_reachable(address: str, timeout: float = 5.0) -> None:
    """Fail in seconds, not minutes, when nothing answers at a cluster's HOST:PORT (Ray itself
    retries for minutes)."""
    import socket

    text = address.split("://", 1)[-1]
    host, _, port = text.rpartition(":")
    if not host or not port.isdigit():
        raise UserError(f"--ray address '{address}' is not HOST:PORT", "for example --ray 10.0.0.5:6379, or --ray alone")
    try:
        with socket.create_connection((host.strip("[]"), int(port)), timeout=timeout):
            pass
    except OSError as exc:
        raise UserError(f"nothing answers at {host}:{port} ({exc.strerror or type(exc).__name__})",
                        "start the cluster with 'ray start --head', or check the address") from exc


def connect(address: str | None = "auto", num_cpus: int | None = None):
    """Join the Ray cluster at `address` ("auto": the one this machine belongs to, else a local
    instance started here, as `ray.init` does); returns the `ray` module."""
    ray = _ray()
    if address not in (None, "auto", "local"):
        _check_reachable(address)
    if not ray.is_initialized():
        quiet = {"include_dashboard": False, "log_to_driver": False, "configure_logging": False}
        try:
            if address == "auto":  # a cluster this machine belongs to (ray start, RAY_ADDRESS), else a local one
                try:
                    ray.init(address="auto", **quiet)
                except ConnectionError:
                    ray.init(num_cpus=num_cpus, **quiet)
            elif address in (None, "local"):
                ray.init(num_cpus=num_cpus, **quiet)
            else:
                ray.init(address=address, **quiet)
        except (ConnectionError, RuntimeError, ValueError) as exc:
            raise UserError(f"cannot join the Ray cluster at {address} ({_one_line(exc)})",
                            "start it with 'ray start --head', or give --ray with its address") from exc
    return ray


def enhance_on_ray(
    settings: dict,
    src_dir: str | os.PathLike,
    out_dir: str | os.PathLike,
    bits: int = 8,
    fmt: str = "png",
    quality: int = 95,
    black_level: float | None = None,
    white_level: float | None = None,
    pattern: str | None = None,
    address: str | None = "auto",
    workers: int | None = None,
    show_progress: bool = False,
    topic: str | None = None,
) -> dict:
    """Enhance every RAW/.npy file of `src_dir` into `out_dir` on a Ray cluster (see the module);
    with `topic`, every ROS 2 bag in `src_dir` instead, each into a bag of its name in `out_dir`.

    `settings` are `Enhancer`'s arguments (checkpoint, model, ratio, threads, tile, ...), built
    into one `Enhancer` per worker; `workers` defaults to one per machine of the cluster. The result
    has the shape of `enhance_folder`'s, plus "skipped_complete" (outputs already there)."""
    from toolkit.progress import Progress

    check_image_options(fmt, bits, quality)
    Enhancer(**settings)  # checks the settings (ratio, tile, white balance) before any cluster starts
    src, out = Path(src_dir), Path(out_dir)
    if topic is None:
        inputs, others = folder_inputs(src)
        if not inputs:
            raise InputError(f"{src} holds no RAW or .npy files", "give a folder of RAW or .npy files")
        names = output_names(inputs, IMAGE_FORMATS[fmt].suffixes[0])
    else:  # a folder of bags: each is one job, its output a bag of the same name
        inputs, others = bag_inputs(src), []
        if not inputs:
            raise InputError(f"{src} holds no ROS 2 bags", "give a folder of rosbag2 folders or .mcap files")
        names = [p.stem if p.is_file() else p.name for p in inputs]
    _output_folder(out)
    jobs = [(str(s), str(out / n)) for s, n in zip(inputs, names) if not (out / n).exists()]
    complete = len(inputs) - len(jobs)
    start = time.perf_counter()
    results: list[dict] = []
    if jobs:
        ray = connect(address)
        # one worker per machine unless told: each runs the network on all of its machine's cores
        count = workers or max(1, sum(1 for node in ray.nodes() if node.get("Alive")))
        actor = ray.remote(num_cpus=1, max_restarts=-1, max_task_retries=RETRIES, scheduling_strategy="SPREAD")(_Worker)
        threads = {name: os.environ.get(name) for name in ("OMP_NUM_THREADS", "MKL_NUM_THREADS")}
        pool = [actor.remote(settings, threads) for _ in range(min(count, len(jobs)))]
        levels = {"black_level": black_level, "white_level": white_level, "pattern": pattern}
        progress = Progress(len(jobs), "enhance", enabled=show_progress)
        pending = {}
        queue = list(jobs)
        for worker in pool:  # one file per worker at a time: a dead worker takes one file with it
            if queue:
                source, target = queue.pop(0)
                pending[worker.run.remote(source, target, bits, quality, levels, topic)] = (worker, source)
        while pending:
            done, _ = ray.wait(list(pending), num_returns=1)
            worker, source = pending.pop(done[0])
            try:
                entry = ray.get(done[0])
            except Exception as exc:  # retries spent: the file failed, the others go on
                entry = {"input": source, "error": f"worker lost ({type(exc).__name__}: {_one_line(exc)})"}
            if "error" in entry:
                log.error("%s: %s", Path(source).name, entry["error"])
            results.append(entry)
            progress.update(len(results), Path(source).name)
            if queue:
                source, target = queue.pop(0)
                pending[worker.run.remote(source, target, bits, quality, levels, topic)] = (worker, source)
        _remove_orphans(out)
    order = {str(s): k for k, s in enumerate(inputs)}
    results.sort(key=lambda r: order[r["input"]])
    failed = sum("error" in r for r in results)
    return {"input": str(src), "output": str(out), "files": len(inputs), "ok": len(inputs) - failed, "failed": failed,
            "skipped": [str(p) for p in others], "skipped_complete": complete, "results": results,
            "seconds": round(time.perf_counter() - start, 3), "workers": len({r.get("worker") for r in results} - {None})}


def _remove_orphans(out: Path) -> None:
    """Temporary files a killed worker left beside its output (`.NAME.*.part`)."""
    for orphan in out.glob(".*.part"):
        try:
            orphan.unlink()
        except OSError:
            pass
