"""The flight's recording: its topics as received, in a rosbag2 directory with MCAP storage."""
from __future__ import annotations

import threading
from collections import Counter
from pathlib import Path

import yaml

#: recorded share of the busiest topics
CAMERA_RECORD_EVERY = 3          # 15 Hz camera -> 5 Hz in the recording
CLOCK_RECORD_EVERY = 12          # 120 Hz /clock -> 10 Hz in the recording


def msg_dirs() -> list[Path]:
    dirs = []
    try:
        from ament_index_python.packages import get_package_share_directory

        dirs.append(Path(get_package_share_directory("spinn_ros")) / "msg")
    except Exception:  # noqa: BLE001 - not a ROS shell / package not indexed: use the checkout
        pass
    dirs.append(Path(__file__).resolve().parents[3] / "msg")
    return [d for d in dirs if d.is_dir()]


def flight_typestore():
    """rosbags type store: ROS 2 Kilted's standard types plus spinn_ros's messages from their .msg text."""
    from rosbags.typesys import Stores, get_types_from_msg, get_typestore

    store = get_typestore(Stores.ROS2_KILTED)
    types = {}
    for name in ("InferenceResult", "SplitPlan", "LinkState"):
        for d in msg_dirs():
            if (d / f"{name}.msg").is_file():
                types.update(get_types_from_msg((d / f"{name}.msg").read_text(), f"spinn_ros/msg/{name}"))
                break
    store.register(types)
    return store


class Recorder:
    """The flight's topics, raw CDR as received, into a rosbag2 directory with MCAP storage."""

    def __init__(self, path: Path):
        from rosbags.rosbag2 import StoragePlugin, Writer

        self.path = path
        self.store = flight_typestore()
        self.writer = Writer(path, version=9, storage_plugin=StoragePlugin.MCAP)
        self.writer.open()
        self.conns: dict[str, object] = {}
        self.counts: Counter = Counter()
        self._lock = threading.Lock()
        self._closed = False

    def connection(self, topic: str, msgtype: str):
        conn = self.conns.get(topic)
        if conn is None:
            conn = self.writer.add_connection(topic, msgtype, typestore=self.store)
            self.conns[topic] = conn
        return conn

    def write(self, topic: str, msgtype: str, raw: bytes, t_ns: int) -> None:
        with self._lock:
            if self._closed:
                return
            self.writer.write(self.connection(topic, msgtype), t_ns, bytes(raw))
            self.counts[topic] += 1

    def close(self) -> None:
        with self._lock:
            if not self._closed:
                self._closed = True
                self.writer.close()


def verify_recording(path: Path) -> dict:
    """Read the recording back (rosbags) and deserialize one message of every topic."""
    from rosbags.highlevel import AnyReader

    counts: Counter = Counter()
    decoded = {}
    with AnyReader([path], default_typestore=flight_typestore()) as reader:
        for conn, _t, raw in reader.messages():
            counts[conn.topic] += 1
            if conn.topic not in decoded:
                msg = reader.deserialize(raw, conn.msgtype)
                decoded[conn.topic] = type(msg).__name__
    meta = yaml.safe_load((path / "metadata.yaml").read_text())["rosbag2_bagfile_information"]
    return {"readable": True, "storage": meta["storage_identifier"], "files": [f["path"] for f in meta["files"]],
            "messages": dict(sorted(counts.items())), "types": decoded}


