"""A robot's recording in, the same recording with enhanced images out: ROS 2 bags (rosbag2 folders
in sqlite3 or MCAP storage, or a bare .mcap file) read and written with `rosbags`, pure Python,
no ROS install (the `robot` extra).

Every other topic is copied unchanged, message for message; each Bayer `sensor_msgs/msg/Image`
of the chosen topic becomes one `rgb8` image on `TOPIC/enhanced` with the same header and
timestamp. The output bag is staged beside its final name and renamed into place at the end.
"""
from __future__ import annotations

import contextlib
import logging
import os
import shutil
import time
from pathlib import Path

from toolkit.camera.ros import mosaic_from_image, rgb8_fields
from toolkit.errors import InputError, MissingDependencyError, OutputError, UserError

from .enhance import Enhancer

log = logging.getLogger(__name__)
IMAGE = "sensor_msgs/msg/Image"


def is_bag(path: str | os.PathLike) -> bool:
    """A rosbag2 folder (it holds metadata.yaml) or a bare .mcap file."""
    path = Path(path)
    return (path.is_dir() and (path / "metadata.yaml").is_file()) or (path.is_file() and path.suffix.lower() == ".mcap")


def _rosbags():
    try:
        from rosbags.rosbag2 import Reader, Writer
        from rosbags.rosbag2.enums import StoragePlugin
        from rosbags.typesys import Stores, get_typestore
    except ImportError as exc:
        raise MissingDependencyError("rosbags", "robot", "reading and writing ROS 2 bags") from exc
    return Reader, Writer, StoragePlugin, get_typestore(Stores.ROS2_HUMBLE)


def _storage(src: Path, plugins) -> object:
    mcap = src.suffix.lower() == ".mcap" or (src.is_dir() and any(src.glob("*.mcap")))
    return plugins.MCAP if mcap else plugins.SQLITE3


def _same_definition(connection, typestore) -> dict:
    """What a copied topic keeps: its message definition, type hash, serialization and QoS. A
    definition without its hash (a bare .mcap) is registered, so rosbags can compute the hash."""
    kept = {"serialization_format": connection.ext.serialization_format,
            "offered_qos_profiles": connection.ext.offered_qos_profiles}
    definition = connection.msgdef.data if connection.msgdef is not None else ""
    if definition and str(connection.digest or "").startswith("RIHS01_"):
        return {**kept, "msgdef": definition, "rihs01": connection.digest}
    if connection.msgtype not in typestore.types and definition:
        from rosbags.typesys import get_types_from_msg

        typestore.register(get_types_from_msg(definition, connection.msgtype))
    return {**kept, "typestore": typestore}


def enhance_bag(
    enhancer: Enhancer,
    src: str | os.PathLike,
    out: str | os.PathLike,
    topic: str,
    black_level: float | None = None,
    white_level: float | None = None,
    show_progress: bool = False,
) -> dict:
    """Enhance every Bayer image of `topic` in the bag `src` into a new bag `out` (see the module).

    A message that cannot be decoded or enhanced is skipped and counted; the others go on.
    Raises a `UserError` before writing anything if the bag cannot be read, lacks the topic or the
    model cannot be loaded, and when no image at all could be enhanced (nothing is left behind)."""
    from toolkit.progress import Progress

    Reader, Writer, plugins, typestore = _rosbags()
    src, out = Path(src), Path(out)
    if not is_bag(src):
        raise InputError(f"{src} is not a ROS 2 bag", "give a rosbag2 folder (with metadata.yaml) or a .mcap file")
    if out.exists():
        raise OutputError(f"{out} already exists", "choose a new name for the output bag")
    if not out.parent.is_dir() or not os.access(out.parent, os.W_OK | os.X_OK):
        raise OutputError(f"cannot write in {out.parent}", "choose a folder you can write to")
    stage = out.parent / f".{out.name}.partial-{os.getpid()}"
    Image = typestore.types[IMAGE]
    start = time.perf_counter()
    try:
        reader = Reader(src)
        reader.open()
    except Exception as exc:  # rosbags' own error types for unreadable or unknown storage
        raise InputError(f"{src}: cannot read this bag ({type(exc).__name__}: {exc})", "check that it is a complete ROS 2 bag") from exc
    with contextlib.closing(reader):
        wanted = [c for c in reader.connections if c.topic == topic]
        if not wanted:
            images = sorted({c.topic for c in reader.connections if c.msgtype == IMAGE})
            raise InputError(f"{src} has no topic {topic}", f"its image topics: {', '.join(images) or 'none'}")
        if any(c.msgtype != IMAGE for c in wanted):
            raise InputError(f"{topic} carries {wanted[0].msgtype}, not {IMAGE}", "give the topic of the camera's raw images")
        enhancer.backend  # load before writing anything: a model that cannot load leaves no bag behind
        total = sum(c.msgcount for c in wanted)
        progress = Progress(total, "enhance", enabled=show_progress)
        counts = {"enhanced": 0, "skipped": 0, "copied": 0}
        reasons: list[str] = []
        shutil.rmtree(stage, ignore_errors=True)
        try:
            with Writer(stage, version=9, storage_plugin=_storage(src, plugins)) as writer:
                copies = {}
                for c in reader.connections:
                    if c.topic != topic:
                        copies[c.id] = writer.add_connection(c.topic, c.msgtype, **_same_definition(c, typestore))
                enhanced_topic = writer.add_connection(topic.rstrip("/") + "/enhanced", IMAGE, typestore=typestore)
                for index, (connection, timestamp, raw) in enumerate(reader.messages()):
                    if connection.topic != topic:
                        writer.write(copies[connection.id], timestamp, raw)
                        counts["copied"] += 1
                        continue
                    name = f"{topic} message at {timestamp}"
                    try:
                        message = typestore.deserialize_cdr(raw, IMAGE)
                        mosaic = mosaic_from_image(message, black_level, white_level, source=name)
                        image = enhancer.enhance(mosaic, bits=8).image
                        data = typestore.serialize_cdr(Image(header=message.header, **rgb8_fields(image)), IMAGE)
                    except UserError as exc:
                        reason = str(exc)
                    except Exception as exc:  # a damaged message: CDR decoding raises many types
                        reason = f"{name}: cannot be decoded ({type(exc).__name__}: {exc})"
                    else:
                        writer.write(enhanced_topic, timestamp, data)
                        counts["enhanced"] += 1
                        progress.update(counts["enhanced"] + counts["skipped"], "")
                        continue
                    counts["skipped"] += 1
                    reasons.append(reason)
                    log.error("skipped %s", reason)
                    progress.update(counts["enhanced"] + counts["skipped"], "")
            if counts["enhanced"] == 0:
                raise InputError(f"none of the {total} images of {topic} could be enhanced (reasons above)",
                                 "check the topic's encoding and the bag's integrity")
            os.rename(stage, out)
        except BaseException:
            shutil.rmtree(stage, ignore_errors=True)
            raise
    return {"input": str(src), "output": str(out), "topic": topic, "enhanced_topic": topic.rstrip("/") + "/enhanced",
            "images": total, **counts, "failed": counts["skipped"], "reasons": reasons,
            "seconds": round(time.perf_counter() - start, 3)}
