"""ROS 2 bags in and out (rosbags, in sqlite3 and MCAP storage): every Bayer image of a topic becomes
an rgb8 image on TOPIC/enhanced with its header; other topics are copied byte for byte; a damaged
message is skipped and counted (exit 3); nothing is left behind when nothing could be done."""
from __future__ import annotations

import json

import numpy as np
import pytest

from conftest import needs_torch
from toolkit.cli import main

rosbags = pytest.importorskip("rosbags", reason="the robot extra (rosbags) is not installed")
pytestmark = needs_torch

from rosbags.rosbag2 import Reader, Writer  # noqa: E402
from rosbags.rosbag2.enums import StoragePlugin  # noqa: E402
from rosbags.typesys import Stores, get_typestore  # noqa: E402

TYPES = get_typestore(Stores.ROS2_HUMBLE)
Image, Imu = TYPES.types["sensor_msgs/msg/Image"], TYPES.types["sensor_msgs/msg/Imu"]
Header, Time = TYPES.types["std_msgs/msg/Header"], TYPES.types["builtin_interfaces/msg/Time"]
Quaternion, Vector3 = TYPES.types["geometry_msgs/msg/Quaternion"], TYPES.types["geometry_msgs/msg/Vector3"]


def bayer_message(k: int, height: int = 32, width: int = 48) -> Image:
    """Frame k: alternately 8-bit, 16-bit little-endian and 16-bit big-endian, with step padding."""
    rng = np.random.default_rng(k)
    encoding, bigendian = [("bayer_rggb8", 0), ("bayer_bggr16", 0), ("bayer_grbg16", 1)][k % 3]
    size = 1 if encoding.endswith("8") else 2
    values = rng.integers(0, 40 if size == 1 else 4000, (height, width)).astype(np.uint16)
    row = values.astype(np.uint8) if size == 1 else values.astype(">u2" if bigendian else "<u2").view(np.uint8)
    step = width * size + 6
    data = np.zeros((height, step), np.uint8)
    data[:, : width * size] = row.reshape(height, -1)
    header = Header(stamp=Time(sec=100 + k, nanosec=7 * k), frame_id=f"camera_{k % 2}")
    return Image(header=header, height=height, width=width, encoding=encoding, is_bigendian=bigendian, step=step,
                 data=data.reshape(-1))


def imu_message(k: int) -> Imu:
    zero = np.zeros(9, np.float64)
    return Imu(header=Header(stamp=Time(sec=100 + k, nanosec=1), frame_id="imu"),
               orientation=Quaternion(x=0.0, y=0.0, z=0.0, w=1.0), orientation_covariance=zero,
               angular_velocity=Vector3(x=0.1 * k, y=0.0, z=0.0), angular_velocity_covariance=zero,
               linear_acceleration=Vector3(x=0.0, y=0.0, z=9.81), linear_acceleration_covariance=zero)


def write_bag(path, storage, frames: int = 30, damaged: int | None = None) -> None:
    with Writer(path, version=9, storage_plugin=storage) as writer:
        camera = writer.add_connection("/camera/image_raw", Image.__msgtype__, typestore=TYPES)
        imu = writer.add_connection("/imu", Imu.__msgtype__, typestore=TYPES)
        for k in range(frames):
            t = (100 + k) * 10**9
            raw = TYPES.serialize_cdr(bayer_message(k), Image.__msgtype__)
            writer.write(camera, t, raw[: len(raw) // 2] if k == damaged else raw)
            writer.write(imu, t + 1, TYPES.serialize_cdr(imu_message(k), Imu.__msgtype__))


def read_bag(path) -> dict[str, list]:
    found: dict[str, list] = {}
    with Reader(path) as reader:
        for connection, t, raw in reader.messages():
            found.setdefault(connection.topic, []).append((t, bytes(raw), connection.msgtype))
    return found


@pytest.mark.parametrize("storage", [StoragePlugin.SQLITE3, StoragePlugin.MCAP])
def test_a_bag_of_30_bayer_frames_comes_back_with_30_rgb8_frames_and_the_imu_unchanged(tmp_path, capsys, storage):
    write_bag(tmp_path / "in", storage)
    code = main(["enhance", str(tmp_path / "in"), "-o", str(tmp_path / "out"), "--topic", "/camera/image_raw",
                 "--ratio", "100", "--json", "-q"])
    assert code == 0, capsys.readouterr().err
    result = json.loads(capsys.readouterr().out)
    assert (result["images"], result["enhanced"], result["skipped"], result["copied"]) == (30, 30, 0, 30)
    before, after = read_bag(tmp_path / "in"), read_bag(tmp_path / "out")
    assert set(after) == {"/imu", "/camera/image_raw/enhanced"}
    assert after["/imu"] == before["/imu"]  # timestamps and bytes
    suffix = ".mcap" if storage == StoragePlugin.MCAP else ".db3"
    assert any(p.suffix == suffix for p in (tmp_path / "out").iterdir())
    enhanced = after["/camera/image_raw/enhanced"]
    assert [t for t, _, _ in enhanced] == [t for t, _, _ in before["/camera/image_raw"]]
    for k, (_, raw, msgtype) in enumerate(enhanced):
        message = TYPES.deserialize_cdr(raw, msgtype)
        assert (message.encoding, message.height, message.width, message.step) == ("rgb8", 32, 48, 144)
        assert (message.header.stamp.sec, message.header.stamp.nanosec, message.header.frame_id) == (100 + k, 7 * k, f"camera_{k % 2}")
        assert message.data.size == 32 * 48 * 3 and message.data.max() > 0
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".out")]


def test_the_bag_path_and_the_file_path_give_the_same_pixels(tmp_path, capsys):
    from toolkit.camera.ros import mosaic_from_image
    from toolkit.deploy.enhance import Enhancer

    write_bag(tmp_path / "in", StoragePlugin.MCAP, frames=3)
    assert main(["enhance", str(tmp_path / "in"), "-o", str(tmp_path / "out"), "--topic", "/camera/image_raw",
                 "--ratio", "100", "-q"]) == 0
    enhancer = Enhancer(ratio=100)
    for k, (_, raw, msgtype) in enumerate(read_bag(tmp_path / "out")["/camera/image_raw/enhanced"]):
        expected = enhancer.enhance(mosaic_from_image(bayer_message(k)), bits=8).image
        assert np.array_equal(TYPES.deserialize_cdr(raw, msgtype).data.reshape(32, 48, 3), expected)


def test_a_damaged_message_is_skipped_and_counted(tmp_path, capsys):
    write_bag(tmp_path / "in", StoragePlugin.SQLITE3, damaged=4)
    code = main(["enhance", str(tmp_path / "in"), "-o", str(tmp_path / "out"), "--topic", "/camera/image_raw",
                 "--ratio", "100", "--json", "-q"])
    captured = capsys.readouterr()
    assert code == 3
    result = json.loads(captured.out)
    assert (result["enhanced"], result["skipped"], result["copied"]) == (29, 1, 30)
    assert "cannot be decoded" in result["reasons"][0] and "Traceback" not in captured.err
    after = read_bag(tmp_path / "out")
    assert len(after["/camera/image_raw/enhanced"]) == 29 and len(after["/imu"]) == 30


def test_a_bare_mcap_file_is_read_too(tmp_path, capsys):
    write_bag(tmp_path / "in", StoragePlugin.MCAP, frames=2)
    (mcap,) = (tmp_path / "in").glob("*.mcap")
    assert main(["enhance", str(mcap), "-o", str(tmp_path / "out"), "--topic", "/camera/image_raw", "--ratio", "100", "-q"]) == 0
    assert len(read_bag(tmp_path / "out")["/camera/image_raw/enhanced"]) == 2


@pytest.mark.parametrize("case, words", [
    ("no topic flag", "give the image topic"),
    ("missing topic", "has no topic /nope"),
    ("not an image topic", "carries sensor_msgs/msg/Imu"),
    ("output exists", "already exists"),
    ("non-bayer encoding", "encoding 'mono8' is not a Bayer mosaic"),
])
def test_bad_bags_and_topics_exit_2_and_leave_nothing(tmp_path, capsys, case, words):
    write_bag(tmp_path / "in", StoragePlugin.SQLITE3, frames=2)
    topic = {"missing topic": "/nope", "not an image topic": "/imu"}.get(case, "/camera/image_raw")
    if case == "output exists":
        (tmp_path / "out").mkdir()
    if case == "non-bayer encoding":
        with Writer(tmp_path / "mono", version=9) as writer:
            camera = writer.add_connection(topic, Image.__msgtype__, typestore=TYPES)
            message = Image(header=Header(stamp=Time(sec=1, nanosec=0), frame_id="c"), height=32, width=32,
                            encoding="mono8", is_bigendian=0, step=32, data=np.zeros(1024, np.uint8))
            writer.write(camera, 1, TYPES.serialize_cdr(message, Image.__msgtype__))
    source = tmp_path / ("mono" if case == "non-bayer encoding" else "in")
    flags = [] if case == "no topic flag" else ["--topic", topic]
    code = main(["enhance", str(source), "-o", str(tmp_path / "out"), "--ratio", "100", *flags])
    err = capsys.readouterr().err
    assert code == 2 and words in err and "Traceback" not in err, err
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".out")] == []
    if case != "output exists":
        assert not (tmp_path / "out").exists()
