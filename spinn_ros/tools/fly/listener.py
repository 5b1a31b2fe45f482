"""The flight tool's own ROS node: raw subscriptions to every flight topic, logged with their
DDS arrival times and recorded."""
from __future__ import annotations

import functools
import json
import math
import struct
import threading
import time
from collections import Counter
from dataclasses import dataclass, field

from .recording import CAMERA_RECORD_EVERY, CLOCK_RECORD_EVERY, Recorder


def cdr_stamp_ns(raw: bytes) -> int:
    """header.stamp of a CDR-serialized message that starts with a std_msgs/Header (or a Clock)."""
    sec, nsec = struct.unpack_from("<iI" if raw[1] == 1 else ">iI", raw, 4)
    return sec * 1_000_000_000 + nsec


@dataclass
class FlightLog:
    """Everything the flight tool's process sees, with time.monotonic() arrival times."""

    image_arrival: dict = field(default_factory=dict)         # stamp_ns -> t
    image_published: dict = field(default_factory=dict)       # stamp_ns -> t the simulator wrote it (DDS source time)
    commands: list = field(default_factory=list)              # (t, stamp_ns, vx, wz, watchdog)
    first_command: dict = field(default_factory=dict)         # stamp_ns -> t
    results: list = field(default_factory=list)               # dicts
    finals: dict = field(default_factory=dict)                # stamp_ns -> dict
    odom: list = field(default_factory=list)                  # (sim_t, x, y, z, yaw, v_forward)
    events: list = field(default_factory=list)                # (t, dict)
    progress: dict = field(default_factory=dict)
    course: dict | None = None
    plans: list = field(default_factory=list)                 # (t, dict)
    links: list = field(default_factory=list)                 # (t, dict) from the monitor
    diagnostics: dict = field(default_factory=dict)           # status name -> {key: value}
    sim_time: float = 0.0
    episode_end: dict | None = None
    lock: threading.Lock = field(default_factory=threading.Lock)


class FlightListener:
    """The flight tool's own ROS node: raw subscriptions to the flight's topics, logged and recorded."""

    def __init__(self, node, log: FlightLog, recorder: Recorder | None):
        from diagnostic_msgs.msg import DiagnosticArray
        from geometry_msgs.msg import TwistStamped
        from nav_msgs.msg import Odometry
        from rosgraph_msgs.msg import Clock
        from sensor_msgs.msg import Image
        from std_msgs.msg import String

        from spinn_ros.msg import InferenceResult, LinkState, SplitPlan

        from ...ros import qos

        self.log, self.recorder = log, recorder
        self._n = Counter()
        self.subs = []
        spec = [
            ("/camera", Image, "sensor_msgs/msg/Image", qos.SENSOR, self._on_image),
            ("/X3/gazebo/command/twist", TwistStamped, "geometry_msgs/msg/TwistStamped", qos.RESULTS, self._on_cmd),
            ("/spinn/result", InferenceResult, "spinn_ros/msg/InferenceResult", qos.RESULTS, self._on_result),
            ("/model/X3/odometry", Odometry, "nav_msgs/msg/Odometry", qos.RESULTS, self._on_odom),
            ("/sim/events", String, "std_msgs/msg/String", qos.RESULTS, self._on_event),
            ("/sim/progress", String, "std_msgs/msg/String", qos.RESULTS, self._on_progress),
            ("/sim/course", String, "std_msgs/msg/String", qos.LATCHED, self._on_course),
            ("/spinn/plan", SplitPlan, "spinn_ros/msg/SplitPlan", qos.LATCHED, self._on_plan),
            ("/spinn/link", LinkState, "spinn_ros/msg/LinkState", qos.RESULTS, self._on_link),
            ("/diagnostics", DiagnosticArray, "diagnostic_msgs/msg/DiagnosticArray", qos.RESULTS, self._on_diag),
            ("/clock", Clock, "rosgraph_msgs/msg/Clock", qos.RESULTS, self._on_clock),
        ]
        self.types = {topic: (cls, name) for topic, cls, name, _, _ in spec}
        # arrival = the DDS reception time of the sample (MessageInfo.received_timestamp, wall clock) moved
        # onto time.monotonic(): the executor's own scheduling of this process's callbacks does not count
        self._wall_minus_mono_ns = time.time_ns() - time.monotonic_ns()
        self.callback_lag: list[float] = []
        for topic, cls, _name, profile, cb in spec:
            self.subs.append(node.create_subscription(cls, topic, functools.partial(self._raw, topic, cb), profile,
                                                      raw=True))

    def _raw(self, topic: str, cb, raw: bytes, info) -> None:
        now = time.monotonic()
        received = info.get("received_timestamp") or 0
        t = (received - self._wall_minus_mono_ns) / 1e9 if received > 0 else now
        if not now - 5.0 < t <= now + 0.001:      # a clock step or no timestamp: fall back on the callback time
            t = now
        self._seq = info.get("publication_sequence_number") or 0     # the publisher's own order
        if topic == "/camera":
            self.callback_lag.append(now - t)
            source = info.get("source_timestamp") or 0
            if source > 0:
                self.log.image_published.setdefault(cdr_stamp_ns(raw), (source - self._wall_minus_mono_ns) / 1e9)
        self._n[topic] += 1
        every = CAMERA_RECORD_EVERY if topic == "/camera" else CLOCK_RECORD_EVERY if topic == "/clock" else 1
        if self.recorder is not None and (self._n[topic] - 1) % every == 0:
            self.recorder.write(topic, self.types[topic][1], raw, time.time_ns())
        cb(raw, t)

    def _msg(self, topic: str, raw: bytes):
        from rclpy.serialization import deserialize_message

        return deserialize_message(raw, self.types[topic][0])

    def _on_image(self, raw, t):
        self.log.image_arrival.setdefault(cdr_stamp_ns(raw), t)

    def _on_cmd(self, raw, t):
        m = self._msg("/X3/gazebo/command/twist", raw)
        stamp = m.header.stamp.sec * 1_000_000_000 + m.header.stamp.nanosec
        watchdog = m.header.frame_id == ""     # the drone's hover-on-timeout command carries no camera frame
        with self.log.lock:
            self.log.commands.append((t, stamp, m.twist.linear.x, m.twist.angular.z, watchdog, self._seq))
            if not watchdog:
                self.log.first_command.setdefault(stamp, t)

    def _on_result(self, raw, t):
        m = self._msg("/spinn/result", raw)
        r = {"t": t, "stamp": m.header.stamp.sec * 1_000_000_000 + m.header.stamp.nanosec,
             "provisional": m.provisional, "source": int(m.source), "exit": int(m.exit_index),
             "p": float(m.collision_probability), "steering": float(m.steering), "confidence": float(m.confidence),
             "latency_ms": float(m.latency_ms), "offload_bytes": int(m.offload_bytes), "plan_id": int(m.plan_id),
             "split": int(m.split_point), "threshold": float(m.exit_threshold), "num_exits": int(m.num_exits),
             "network_ms": float(m.network_ms), "device_ms": float(m.device_compute_ms), "seq": self._seq}
        with self.log.lock:
            self.log.results.append(r)
            if not m.provisional:
                self.log.finals.setdefault(r["stamp"], r)

    def _on_odom(self, raw, t):
        m = self._msg("/model/X3/odometry", raw)
        p, q = m.pose.pose.position, m.pose.pose.orientation
        yaw = math.atan2(2 * (q.w * q.z + q.x * q.y), 1 - 2 * (q.y * q.y + q.z * q.z))
        sim_t = m.header.stamp.sec + m.header.stamp.nanosec * 1e-9
        with self.log.lock:
            self.log.odom.append((sim_t, p.x, p.y, p.z, yaw, m.twist.twist.linear.x))
            self.log.sim_time = max(self.log.sim_time, sim_t)

    def _on_event(self, raw, t):
        e = json.loads(self._msg("/sim/events", raw).data)
        with self.log.lock:
            self.log.events.append((t, e))
            if e.get("event") == "episode_end":
                self.log.episode_end = e

    def _on_progress(self, raw, t):
        self.log.progress = json.loads(self._msg("/sim/progress", raw).data)

    def _on_course(self, raw, t):
        self.log.course = json.loads(self._msg("/sim/course", raw).data)

    def _on_plan(self, raw, t):
        m = self._msg("/spinn/plan", raw)
        with self.log.lock:
            self.log.plans.append((t, {"plan_id": int(m.plan_id), "split": int(m.split_point),
                                       "threshold": float(m.exit_threshold), "offload": bool(m.offload),
                                       "feasible": bool(m.feasible), "reason": m.reason}))

    def _on_link(self, raw, t):
        m = self._msg("/spinn/link", raw)
        with self.log.lock:
            self.log.links.append((t, {"bandwidth_mbps": float(m.bandwidth_mbps), "rtt_ms": float(m.rtt_ms),
                                       "loss_rate": float(m.loss_rate), "cloud_alive": bool(m.cloud_alive)}))

    def _on_diag(self, raw, t):
        m = self._msg("/diagnostics", raw)
        for st in m.status:
            self.log.diagnostics[st.name] = {kv.key: kv.value for kv in st.values}

    def _on_clock(self, raw, t):
        pass


