"""A folder spread over a Ray cluster (a local instance started here): the same bytes as one machine,
complete outputs skipped on a re-run, and a worker killed mid-run loses nothing."""
from __future__ import annotations

import shutil
import signal
import threading
import time

import numpy as np
import pytest

from conftest import needs_torch

ray = pytest.importorskip("ray", reason="the cluster extra (ray) is not installed")
pytestmark = needs_torch


@pytest.fixture(scope="module")
def local_ray():
    from toolkit.deploy.cluster import connect
    from toolkit.errors import UserError

    try:
        connect("local", num_cpus=2)
    except UserError as exc:  # e.g. a container without room for Ray's shared-memory object store
        pytest.skip(f"a local Ray instance cannot start here: {exc}")
    yield ray
    ray.shutdown()


@pytest.fixture
def photos(tmp_path):
    from toolkit.camera.dng import write_dng

    folder = tmp_path / "in"
    folder.mkdir()
    for k in range(6):
        mosaic = (np.random.default_rng(k).random((192, 256)) * 300 + 512).astype(np.uint16)
        write_dng(folder / f"p{k}.dng", mosaic)
    return folder


SETTINGS = {"ratio": 100}


def one_machine(photos, out):
    from toolkit.deploy.enhance import Enhancer, enhance_folder

    enhance_folder(Enhancer(**SETTINGS), photos, out, fmt="png")
    return {p.name: p.read_bytes() for p in sorted(out.iterdir())}


def test_the_cluster_writes_the_bytes_one_machine_writes(local_ray, photos, tmp_path):
    from toolkit.deploy.cluster import enhance_on_ray

    result = enhance_on_ray(SETTINGS, photos, tmp_path / "ray", address="local", workers=2)
    assert (result["ok"], result["failed"], result["skipped_complete"]) == (6, 0, 0)
    assert result["workers"] == 2
    written = {p.name: p.read_bytes() for p in sorted((tmp_path / "ray").iterdir())}
    assert written == one_machine(photos, tmp_path / "plain")


def test_a_rerun_skips_complete_outputs(local_ray, photos, tmp_path):
    from toolkit.deploy.cluster import enhance_on_ray

    enhance_on_ray(SETTINGS, photos, tmp_path / "ray", address="local", workers=2)
    (tmp_path / "ray" / "p3.png").unlink()  # as if the first run had stopped before it
    stamps = {p.name: p.stat().st_mtime_ns for p in (tmp_path / "ray").iterdir()}
    again = enhance_on_ray(SETTINGS, photos, tmp_path / "ray", address="local", workers=2)
    assert (again["skipped_complete"], len(again["results"])) == (5, 1)
    assert {p.name: p.stat().st_mtime_ns for p in (tmp_path / "ray").iterdir() if p.name != "p3.png"} == stamps


def test_killing_a_worker_mid_run_loses_nothing(local_ray, photos, tmp_path):
    import psutil

    from toolkit.deploy.cluster import enhance_on_ray

    for k in range(6, 16):  # more files, so the kill lands while work remains
        shutil.copy(photos / f"p{k % 6}.dng", photos / f"q{k}.dng")
    out, outcome = tmp_path / "ray", {}
    run = threading.Thread(target=lambda: outcome.update(enhance_on_ray(SETTINGS, photos, out, address="local", workers=2)))
    run.start()
    deadline = time.monotonic() + 120
    while not (out.exists() and any(out.glob("*.png"))) and time.monotonic() < deadline:
        time.sleep(0.05)
    victims = [p for p in psutil.process_iter(["cmdline"]) if any("_Worker" in part for part in (p.info["cmdline"] or []))]
    assert victims, "no Ray worker process found"
    victims[0].send_signal(signal.SIGKILL)
    run.join(timeout=300)
    assert not run.is_alive()
    assert (outcome["ok"], outcome["failed"]) == (16, 0)
    written = {p.name: p.read_bytes() for p in sorted(out.iterdir())}
    assert written == one_machine(photos, tmp_path / "plain")  # complete, no leftovers, the same bytes


def test_a_folder_of_bags_is_spread_too(local_ray, tmp_path):
    pytest.importorskip("rosbags")
    from rosbags.rosbag2.enums import StoragePlugin
    from test_bags import read_bag, write_bag

    from toolkit.deploy.bags import enhance_bag
    from toolkit.deploy.cluster import enhance_on_ray
    from toolkit.deploy.enhance import Enhancer

    (tmp_path / "bags").mkdir()
    write_bag(tmp_path / "bags" / "drive1", StoragePlugin.SQLITE3, frames=3)
    write_bag(tmp_path / "bags" / "drive2", StoragePlugin.MCAP, frames=2)
    result = enhance_on_ray(SETTINGS, tmp_path / "bags", tmp_path / "out", address="local", topic="/camera/image_raw")
    assert (result["ok"], result["failed"]) == (2, 0)
    for name in ("drive1", "drive2"):
        enhance_bag(Enhancer(**SETTINGS), tmp_path / "bags" / name, tmp_path / f"plain-{name}", "/camera/image_raw")
        assert read_bag(tmp_path / "out" / name) == read_bag(tmp_path / f"plain-{name}")
    again = enhance_on_ray(SETTINGS, tmp_path / "bags", tmp_path / "out", address="local", topic="/camera/image_raw")
    assert again["skipped_complete"] == 2


@pytest.mark.parametrize("address, words", [("127.0.0.1:1", "nothing answers at 127.0.0.1:1"), ("nonsense", "is not HOST:PORT")])
def test_a_cluster_that_does_not_answer_exits_2_at_once(photos, tmp_path, capsys, address, words):
    from toolkit.cli import main

    start = time.monotonic()
    code = main(["enhance", str(photos), "-o", str(tmp_path / "out"), "--ratio", "100", "--ray", address])
    err = capsys.readouterr().err
    assert code == 2 and words in err and "Traceback" not in err
    assert time.monotonic() - start < 30
