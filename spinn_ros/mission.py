"""``spinn fly``: one closed-loop flight of a course, with a summary, a plot and a recording.

Brings up the ``flight`` system of ``launch_spec`` (simulator, drone node, cloud node and,
when the package has one, the monitor) as child processes in one fresh ROS domain, waits
for discovery, flies one episode and then stops every node cleanly (also on Ctrl-C).
While it flies it prints one progress line about once a second; at the end it prints a
summary and writes, under ``--out``:

  summary.json     outcome, frames, where they were answered, control latency, command
                   gaps, plan changes, link events, node exit codes
  timeline.json    per frame and per command: arrival times (wall, from take-off), stamps
  flight.png       top-down trajectory over the obstacles, coloured by where each frame
                   was answered; collisions, plan changes and link changes marked
  recording/       the flight's topics as a rosbag2 with MCAP storage (camera at 5 Hz)
  nodes.log        every node's output

Link traces (``--trace outage|degrade|flapping|FILE.yaml``) need root: the cloud node then
runs in its own network namespace behind an emulated veth link (spinn_ros.linkemu) and
everything else (simulator, drone, monitor and this process's ROS node) in the drone's
namespace, so only drone<->cloud traffic (Zenoh) crosses the emulated link while DDS
stays on the drone side's loopback. ``--trace none`` runs everything on this host's
loopback and works without root.

Control latency: for each camera frame, the wall time from the image's arrival in this
process to the arrival of the first command stamped with it (both over DDS to the same
process, so transport to the drone and back is included once each way).
"""
from __future__ import annotations

import argparse
import ctypes
import functools
import json
import math
import os
import signal
import struct
import subprocess
import sys
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from .core.on_time import command_ages_ms
from .sim.world import COURSE_KINDS

CAMERA_RECORD_EVERY = 3          # 15 Hz camera -> 5 Hz in the recording
CLOCK_RECORD_EVERY = 12          # 120 Hz /clock -> 10 Hz in the recording
GOOD_LINK = {"rate_mbit": 50.0, "rtt_ms": 10.0, "loss": 0.0, "jitter_ms": 0.0}
SOURCES = {0: "device", 1: "cloud", 2: "fallback"}
STARTUP_ALLOWANCE_S = 120.0      # simulated seconds the simulator may hover while the other nodes start

#: built-in link traces, timed from take-off (the first command); the link starts as GOOD_LINK
TRACES = {
    "outage": {"name": "outage", "segments": [
        {"kind": "step", "duration_s": 1.5, **GOOD_LINK},
        {"kind": "outage", "duration_s": 3.0},
        {"kind": "step", "duration_s": 1.0, **GOOD_LINK}]},
    "degrade": {"name": "degrade", "segments": [
        {"kind": "step", "duration_s": 1.0, **GOOD_LINK},
        {"kind": "ramp", "duration_s": 2.0, "rate_mbit": [50.0, 0.3], "rtt_ms": [10.0, 300.0], "loss": [0.0, 0.05],
         "step_s": 0.5},
        {"kind": "step", "duration_s": 1.5, "rate_mbit": 0.3, "rtt_ms": 300.0, "loss": 0.05},
        {"kind": "step", "duration_s": 1.0, **GOOD_LINK}]},
    "flapping": {"name": "flapping", "segments": [
        {"kind": "step", "duration_s": 2.0, **GOOD_LINK},
        {"kind": "flapping", "duration_s": 6.0, "up_s": 1.0, "down_s": 0.5},
        {"kind": "step", "duration_s": 1.0, **GOOD_LINK}]},
}

CONTROL_LATENCY_DEFINITION = (
    "wall time from a camera image's arrival in the mission process to the arrival of the first "
    "command stamped with that image's stamp (DDS to the drone and back included)")


# ------------------------------------------------------------------------------------ options

#: the main job's drone computer, emulated: this many times slower than the machine the
#: device profile was measured on (a small flight computer next to one desktop core), so
#: that SPINN has a reason to offload; with 1 the shipped model's early exits meet the SLA
#: on the drone alone and the planner keeps everything there
DEFAULT_SLOWDOWN = 20.0

def parse_args(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(prog="spinn fly", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seed", type=int, default=1, help="course seed (default 1)")
    ap.add_argument("--kind", default="forest",
                    help="course kind (scene family): " + ", ".join(COURSE_KINDS) + ", or random (one of the first "
                         "four, drawn from the seed); composite and gates are never in the model's training data")
    ap.add_argument("--trace", default="none",
                    help="link trace: none (loopback, no emulation), outage, degrade, flapping, or a trace YAML "
                         "file (docs/link-emulation.md); anything but none needs root")
    ap.add_argument("--outage-mode", choices=("down", "drop"), default="down",
                    help="how the trace's outages cut the link: down (interfaces down: connections fail at once, "
                         "the default) or drop (a blackout: every packet vanishes, noticed only by timeouts)")
    ap.add_argument("--sla", default="", help="SLA file for the monitor's planner (when the package has a monitor)")
    ap.add_argument("--checkpoint", default="default",
                    help="model for drone and cloud: default (the shipped one), a path, or random:<size>:<seed>")
    ap.add_argument("--mode", choices=("spinn", "device-only", "cloud-only"), default="spinn",
                    help="spinn (default), or a baseline: device-only (whole model on the drone, no cloud) or "
                         "cloud-only (the raw frame to the cloud)")
    ap.add_argument("--split", type=int, default=-2, help="split point (default: the mode's / the monitor's)")
    ap.add_argument("--slowdown", type=float, default=DEFAULT_SLOWDOWN,
                    help="emulate a drone computer this many times slower than the profiled machine (the drone's "
                         "emulate.slowdown and the monitor's device_slowdown; default %(default)g: a small flight "
                         "computer, for which offloading pays; 1: this machine's full speed)")
    ap.add_argument("--no-monitor", action="store_true",
                    help="fly without the monitor (no re-planning: the mode's fixed split and threshold)")
    ap.add_argument("--max-time", type=float, default=60.0, help="episode limit, simulated seconds (default 60)")
    ap.add_argument("--out", default="", help="output directory (default runs/flight-<timestamp>)")
    ap.add_argument("--quiet", action="store_true", help="no live progress line and no node output")
    ap.add_argument("--verbose", action="store_true", help="echo every node's output")
    ap.add_argument("--set", action="append", default=[], metavar="NODE.PARAM=VALUE",
                    help="parameter override for a node (sim, drone, cloud, monitor), e.g. sim.goal_radius=10 or "
                         "drone.controller.max_forward_speed=1.5; repeatable")
    ap.add_argument("--security", choices=("mtls", "plain"), default="mtls",
                    help="mtls (default): the drone<->cloud link with mutual TLS and the cloud's access control, "
                         "certificates made into OUT/certs; plain: unauthenticated TCP (a warning)")
    ap.add_argument("--stress-cpus", type=int, default=0, metavar="N",
                    help="stress test: N busy-loop processes run from start-up to the end of the flight")
    ap.add_argument("--stall-drone", default="", metavar="MS@S",
                    help="stress test: freeze the drone node (SIGSTOP) for MS ms every S s of the flight, e.g. 300@2")
    ap.add_argument("--sim-exec", default="", help=argparse.SUPPRESS)   # tests: a script run as the simulator node
    opts = ap.parse_args(argv)
    try:
        opts.overrides = parse_overrides(opts.set)
    except ValueError as exc:
        ap.error(str(exc))
    if opts.kind not in (*COURSE_KINDS, "random") and not opts.sim_exec:   # a test's own simulator names its own
        ap.error(f"--kind: {opts.kind!r} is not a course kind; choose one of {', '.join(COURSE_KINDS)} or random")
    if opts.max_time <= 0:
        ap.error("--max-time must be > 0")
    if opts.slowdown < 1.0:
        ap.error("--slowdown must be >= 1")
    return opts


def parse_stall(text: str) -> tuple[float, float] | None:
    """``--stall-drone MS@S`` as (stall seconds, period seconds); '' -> None."""
    if not text:
        return None
    ms, sep, period = text.partition("@")
    try:
        stall, every = float(ms) / 1e3, float(period)
    except ValueError:
        stall, every = -1.0, -1.0
    if not sep or not 0 < stall < every:
        raise ValueError(f"--stall-drone takes MS@S with 0 < MS/1000 < S, e.g. 300@2; got {text!r}")
    return stall, every


class CpuHogs:
    """``n`` busy-loop processes (a loaded flight computer), ended by pid."""

    def __init__(self, n: int):
        self.procs = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(n)]

    def close(self) -> None:
        for p in self.procs:
            p.kill()
            p.wait()
        self.procs = []


class DroneStaller:
    """Freezes a process group (SIGSTOP) for ``stall_s`` every ``period_s``: a drone computer that
    stops answering at intervals, so the controller acts on stale answers when it resumes."""

    def __init__(self, pgid: int, stall_s: float, period_s: float):
        self.pgid, self.stall_s, self.period_s = pgid, stall_s, period_s
        self.stalls = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="drone-staller", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(self.period_s - self.stall_s):
            try:
                os.killpg(self.pgid, signal.SIGSTOP)
                self.stalls += 1
                self._stop.wait(self.stall_s)
            finally:
                os.killpg(self.pgid, signal.SIGCONT)     # never leave it frozen (the teardown needs it)

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5.0)


def parse_overrides(items: list[str]) -> dict[str, dict]:
    out: dict[str, dict] = {}
    for item in items:
        key, sep, value = item.partition("=")
        node, dot, param = key.partition(".")
        if not sep or not dot or node not in ("sim", "drone", "cloud", "monitor") or not param:
            raise ValueError(f"--set takes NODE.PARAM=VALUE with NODE one of sim, drone, cloud, monitor; got {item!r}")
        out.setdefault(node, {})[param] = yaml.safe_load(value) if value != "" else ""
    return out


def load_trace(name: str):
    """None for 'none', else a linkemu Trace (built-in name or YAML file)."""
    if name == "none":
        return None
    from .linkemu import Trace

    if name in TRACES:
        return Trace.from_obj(TRACES[name])
    path = Path(name)
    if not path.is_file():
        raise ValueError(f"--trace {name!r}: not one of none, {', '.join(TRACES)} and not a file")
    return Trace.load(path)


def from_takeoff(trace, late_s: float):
    """The trace as if started at take-off, ``late_s`` ago: its first segment, when a step long enough,
    shortened by that much (this process notices the first command a moment after it arrived)."""
    import dataclasses

    first = trace.segments[0]
    if late_s <= 0 or first.kind != "step" or first.duration_s <= late_s + 0.1:
        return trace
    return dataclasses.replace(trace, segments=(dataclasses.replace(first, duration_s=first.duration_s - late_s),
                                                *trace.segments[1:]))


# ------------------------------------------------------------------------------------ netns
_CLONE_NEWNET = 0x40000000


def _setns(fd: int) -> None:
    libc = ctypes.CDLL("libc.so.6", use_errno=True)
    if libc.setns(fd, _CLONE_NEWNET) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"setns: {os.strerror(err)}")


class NetnsSwitch:
    """Move this (main) thread, and so every process and thread it starts from now on, into a
    named network namespace; ``leave()`` moves it back. Only the calling thread moves."""

    def __init__(self, name: str):
        self.name = name
        self._home = os.open("/proc/thread-self/ns/net", os.O_RDONLY)
        target = os.open(f"/var/run/netns/{name}", os.O_RDONLY)
        try:
            _setns(target)
        except BaseException:
            os.close(self._home)
            raise
        finally:
            os.close(target)

    def leave(self) -> None:
        if self._home >= 0:
            _setns(self._home)
            os.close(self._home)
            self._home = -1


# ------------------------------------------------------------------------------------ recording
def msg_dirs() -> list[Path]:
    dirs = []
    try:
        from ament_index_python.packages import get_package_share_directory

        dirs.append(Path(get_package_share_directory("spinn_ros")) / "msg")
    except Exception:  # noqa: BLE001 - not a ROS shell / package not indexed: use the checkout
        pass
    dirs.append(Path(__file__).resolve().parent.parent / "msg")
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


# ------------------------------------------------------------------------------------ the flight log
def cdr_stamp_ns(raw: bytes) -> int:
    """header.stamp of a CDR-serialized message that starts with a std_msgs/Header (or a Clock)."""
    sec, nsec = struct.unpack_from("<iI" if raw[1] == 1 else ">iI", raw, 4)
    return sec * 1_000_000_000 + nsec


@dataclass
class FlightLog:
    """Everything the mission process sees, with time.monotonic() arrival times."""

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
    """The mission's own ROS node: raw subscriptions to the flight's topics, logged and recorded."""

    def __init__(self, node, log: FlightLog, recorder: Recorder | None):
        from diagnostic_msgs.msg import DiagnosticArray
        from geometry_msgs.msg import TwistStamped
        from nav_msgs.msg import Odometry
        from rosgraph_msgs.msg import Clock
        from sensor_msgs.msg import Image
        from std_msgs.msg import String

        from spinn_ros.msg import InferenceResult, LinkState, SplitPlan

        from .ros import qos

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


# ------------------------------------------------------------------------------------ the run
class MissionError(RuntimeError):
    pass


class Flight:
    """One episode: link (optional), nodes, listener, progress; ``run()`` returns the log."""

    def __init__(self, opts, out: Path, say=print):
        self.opts, self.out, self.say = opts, out, say
        self.trace = load_trace(opts.trace)
        self.link = None
        self.netns: NetnsSwitch | None = None
        self.procs: list = []
        self.log = FlightLog()
        self.recorder: Recorder | None = None
        self.exit_codes: dict[str, int] = {}
        self.link_events: list = []
        self.t_takeoff: float | None = None
        self.t_end: float | None = None
        self.t_nodes_up: float | None = None
        self.t_start = time.monotonic()
        self.sim_takeoff: float | None = None
        self.time_limit = False
        self.startup: dict = {}
        self.notes: list[str] = []
        self._node_log = None
        self._context = None
        self._spinner = None
        self.listener = None
        self.domain: int | None = None
        self.hogs: CpuHogs | None = None
        self.certs_dir = (out / "certs").resolve()
        self.staller: DroneStaller | None = None

    # -- helpers
    def _sink(self, line: str) -> None:
        if self._node_log:
            self._node_log.write(line + "\n")
            self._node_log.flush()
        if self.opts.verbose:
            print(line, flush=True)

    def _start(self, spec, side: str) -> None:
        from .launcher import ChildProcess

        argv = spec.command()
        if self.opts.sim_exec and spec.executable == "sim_node":
            argv = [sys.executable, self.opts.sim_exec, *spec.ros_args()]
        env = self.env
        if self.link is not None and side == "cloud":
            argv = self.link.command("cloud", argv)
            env = cloud_host_environment(self.env)
        self.procs.append(ChildProcess(spec.name, argv, env=env, sink=self._sink))

    def _check_nodes(self) -> None:
        for p in self.procs:
            code = p.poll()
            if code is not None:
                tail = "\n".join(p.lines[-15:])
                raise MissionError(f"node {p.name} exited with status {code} during the flight:\n{tail}")

    def _wait(self, predicate, timeout: float, what: str) -> None:
        deadline = time.monotonic() + timeout
        while not predicate():
            self._check_nodes()
            if time.monotonic() > deadline:
                raise MissionError(f"timed out after {timeout:.0f} s waiting for {what}")
            time.sleep(0.05)

    def specs(self, endpoint: str):
        from . import launch_spec

        o = self.opts
        overrides = {k: dict(v) for k, v in o.overrides.items()}
        if o.slowdown != 1.0:
            overrides.setdefault("drone", {}).setdefault("emulate.slowdown", float(o.slowdown))
            overrides.setdefault("monitor", {}).setdefault("device_slowdown", float(o.slowdown))
        # the simulator runs (hovering) while the other nodes start: its own limit leaves room for that,
        # the mission ends the flight max_time after take-off
        overrides.setdefault("sim", {}).setdefault("max_duration_s", float(o.max_time) + STARTUP_ALLOWANCE_S)
        for node in ("drone", "cloud", "monitor"):
            overrides.setdefault(node, {}).update(self.security_params(node, overrides.get(node, {})))
        checkpoint = o.checkpoint if o.checkpoint == "default" or o.checkpoint.startswith("random:") \
            else str(Path(o.checkpoint).resolve())
        specs = launch_spec.flight(course_seed=o.seed, course_kind=o.kind, real_time_factor=1.0,
                                   checkpoint=checkpoint, mode=o.mode, split_point=o.split, cloud_endpoint=endpoint,
                                   sla=str(Path(o.sla).resolve()) if o.sla else "", with_monitor=not o.no_monitor,
                                   overrides=overrides)
        return specs

    def security_params(self, node: str, given: dict) -> dict:
        """The link's security for ``node``: plain (said loudly), or mtls with this run's certificates."""
        if self.opts.security == "plain":
            return {"zenoh.security": "plain"}
        return {"zenoh.certs": given.get("zenoh.certs", str(self.certs_dir))}

    def make_certs(self, cloud_host: str) -> str:
        """The run's CA and certificates (cloud, the drone 'default' and its monitor) in OUT/certs, unless
        --set gives the nodes a directory of their own; returns the endpoint's scheme."""
        from .certs import ensure_certs

        if self.opts.security == "plain":
            self.say("WARNING: --security plain: the drone<->cloud link has no authentication and no access control")
            return "tcp"
        if "zenoh.certs" not in self.opts.overrides.get("cloud", {}):
            ensure_certs(self.certs_dir, ["default"], [cloud_host])
        return "tls"

    # -- the episode
    def run(self) -> FlightLog:
        from . import launch_spec
        from .ros.harness import domain_id_for_run

        o = self.opts
        self._node_log = open(self.out / "nodes.log", "w")
        domain = domain_id_for_run()
        self.domain = domain
        self.env = {"ROS_DOMAIN_ID": str(domain), "ROS_AUTOMATIC_DISCOVERY_RANGE": "LOCALHOST",
                    "PYTHONUNBUFFERED": "1", "RCUTILS_LOGGING_BUFFERED_STREAM": "0",
                    **launch_spec.transport_environment()}
        os.environ.update(self.env)
        try:
            if o.stress_cpus:
                self.hogs = CpuHogs(o.stress_cpus)
            if self.trace is not None:
                from .linkemu import EmulatedLink, pid_prefix, remove_stale

                remove_stale("spinnfly")
                self.link = EmulatedLink(prefix=pid_prefix("spinnfly"), **{k: v for k, v in GOOD_LINK.items()},
                                         outage_mode=o.outage_mode)
                self.link.open()
                endpoint = f"{self.make_certs(self.link.cloud_ip)}/{self.link.cloud_ip}:7447"
                self.netns = NetnsSwitch(self.link.ns("drone"))
                self.say(f"link emulation: cloud in netns {self.link.ns('cloud')} ({self.link.cloud_ip}), drone side "
                         f"in {self.link.ns('drone')} ({self.link.drone_ip}); trace {self.trace.name!r} "
                         f"({self.trace.duration_s:.0f} s from take-off)")
            else:
                endpoint = f"{self.make_certs('127.0.0.1')}/127.0.0.1:{free_port()}"
            specs = self.specs(endpoint)
            self._fly(specs, domain)
        finally:
            if self.t_end is None:        # interrupted or failed: the flight ends here, not at teardown
                self.t_end = time.monotonic()
            self._teardown()
        return self.log

    def _fly(self, specs, domain: int) -> None:
        import rclpy
        from rclpy.context import Context
        from rclpy.executors import SingleThreadedExecutor
        from rclpy.node import Node
        from rclpy.signals import SignalHandlerOptions

        from spinn_ros.ros.harness import note_dds_start

        o = self.opts
        self._context = Context()
        note_dds_start()
        # no rclpy signal handlers: Ctrl-C / SIGTERM raise here and the teardown stops every node cleanly
        rclpy.init(context=self._context, domain_id=domain, signal_handler_options=SignalHandlerOptions.NO)
        node = Node("spinn_fly", context=self._context)
        self._node = node
        executor = SingleThreadedExecutor(context=self._context)
        executor.add_node(node)
        self._executor = executor
        self.recorder = Recorder(self.out / "recording")
        self.listener = FlightListener(node, self.log, self.recorder)
        self._spinner = threading.Thread(target=self._spin, daemon=True)
        self._spinner.start()

        sim_spec = next(s for s in specs if s.executable == "sim_node")
        others = [s for s in specs if s is not sim_spec]
        names = ", ".join(s.name for s in specs)
        self.say(f"ROS domain {domain}; nodes: {names}; mode {o.mode}; course {o.kind}:{o.seed}; "
                 f"checkpoint {o.checkpoint}")
        t0 = time.monotonic()
        # all at once, the simulator (the slowest to start) first: it hovers until the first command. The
        # drone creates its result and command publishers before its camera subscription, so this process
        # matches them before the drone can see a frame, and the recording has every command.
        for spec in [sim_spec, *others]:
            self._start(spec, "cloud" if spec.executable == "cloud_node" else "drone")

        def drone_publishers_matched() -> bool:
            return all(node.count_publishers(t) >= 1 for t in ("/spinn/result", "/X3/gazebo/command/twist"))

        self._wait(drone_publishers_matched, 120, "the drone node's result and command publishers")
        t_drone = time.monotonic()

        def drone_listening() -> bool:
            return any(i.node_name == "spinn_drone" for i in node.get_subscriptions_info_by_topic("/camera"))

        self._wait(drone_listening, 120, "the drone node to subscribe to /camera")
        if o.mode != "device-only":
            drone_proc = next(p for p in self.procs if p.name == "spinn_drone")

            def cloud_seen() -> bool:   # (its diagnostics run on sim time: silent until the simulator runs)
                return any("cloud servers alive: ['" in line for line in list(drone_proc.lines))

            self._wait(cloud_seen, 120, "the drone to see the cloud (Zenoh liveliness)")
        self._wait(lambda: self.log.course is not None and self.log.image_arrival, 120,
                   "the simulator's course and first camera frame")
        self.t_nodes_up = time.monotonic()
        self._wait(lambda: any(not c[4] for c in self.log.commands), 60, "the drone's first command")
        self.startup = {"drone_publishers_s": round(t_drone - t0, 2), "first_frame_s": round(self.t_nodes_up - t0, 2),
                        "first_command_s": round(time.monotonic() - t0, 2)}
        self.say(f"all nodes up and the drone commanding after {time.monotonic() - t0:.1f} s "
                 f"(drone {t_drone - t0:.1f} s, first frame {self.t_nodes_up - t0:.1f} s); flying")
        with self.log.lock:
            self.t_takeoff = min(c[0] for c in self.log.commands if not c[4])     # its arrival here
        late = time.monotonic() - self.t_takeoff
        self.startup["noticed_takeoff_after_s"] = round(late, 3)
        player = self.link.play(from_takeoff(self.trace, late)) if self.link is not None else None
        stall = parse_stall(o.stall_drone)
        if stall is not None:
            drone_pid = next(p for p in self.procs if p.name == "spinn_drone").proc.pid   # its own process group
            self.staller = DroneStaller(drone_pid, *stall)
        self.sim_takeoff = self.log.sim_time
        deadline = self.t_takeoff + o.max_time * 1.5 + 30.0
        next_line = self.t_takeoff
        while self.log.episode_end is None:
            if self.log.sim_time - self.sim_takeoff >= o.max_time:
                self.time_limit = True
                break
            self._check_nodes()
            if player is not None and player.error is not None:
                raise MissionError(f"link trace failed: {player.error}")
            now = time.monotonic()
            if now > deadline:
                self.notes.append(f"no episode end within {deadline - self.t_takeoff:.0f} s wall: stopped")
                break
            if now >= next_line:
                self._progress_line()
                next_line += 1.0
            time.sleep(0.05)
        self.t_end = time.monotonic()
        time.sleep(0.5)     # trailing finals (a refined answer in flight) and diagnostics
        self._progress_line(final=True)
        if self.link is not None:
            self.link.stop_trace()
            self.link_events = [(e.t, e.state, e.source) for e in self.link.events]

    def _spin(self) -> None:
        try:
            self._executor.spin()
        except Exception:  # noqa: BLE001 - the context is shut down at teardown
            pass

    def _progress_line(self, final: bool = False) -> None:
        if self.opts.quiet:
            return
        log = self.log
        with log.lock:
            odom = log.odom[-1] if log.odom else None
            finals = list(log.finals.values())
            frames = len(log.image_arrival)
        prog = log.progress
        n = max(len(finals), 1)
        share = Counter(SOURCES[f["source"]] for f in finals)
        plan = finals[-1]["plan_id"] if finals else 0
        x = f"{odom[1]:5.1f}" if odom else "  -  "
        v = f"{odom[5]:4.2f}" if odom else " -  "
        line = (f"t={log.sim_time:5.1f}s x={x}m to-goal={prog.get('distance_to_goal', float('nan')):5.1f}m "
                f"v={v}m/s frames={frames:4d} device={share['device'] / n:4.0%} cloud={share['cloud'] / n:4.0%} "
                f"fallback={share['fallback'] / n:4.0%} plan={plan}")
        if sys.stdout.isatty() and not self.opts.verbose:
            print("\r" + line, end="\n" if final else "", flush=True)
        else:
            print(line, flush=True)

    def _teardown(self) -> None:
        errors = []
        if self.staller is not None:
            self.staller.close()
        if self.hogs is not None:
            self.hogs.close()
        if self.link is not None:
            try:
                self.link.stop_trace()
            except Exception as exc:  # noqa: BLE001
                errors.append(f"trace: {exc}")
        # every node gets SIGINT at once (then SIGTERM, SIGKILL): a clean ROS shutdown for each
        with ThreadPoolExecutor(max_workers=max(1, len(self.procs))) as pool:
            codes = list(pool.map(lambda p: p.stop(grace_s=15.0), self.procs))
        self.exit_codes = {p.name: c for p, c in zip(self.procs, codes)}
        if self.recorder is not None:
            self.recorder.close()
        if self._context is not None:
            import rclpy

            self._executor.shutdown()
            self._node.destroy_node()
            rclpy.try_shutdown(context=self._context)
            if self._spinner is not None:
                self._spinner.join(timeout=5.0)
        if self.netns is not None:
            self.netns.leave()
        if self.link is not None:
            if not self.link_events:
                self.link_events = [(e.t, e.state, e.source) for e in self.link.events]
            try:
                self.link.close()
            except Exception as exc:  # noqa: BLE001
                errors.append(f"link teardown: {exc}")
        if self._node_log:
            self._node_log.close()
        self.notes += errors


def cloud_host_environment(env: dict) -> dict:
    """The environment of the cloud behind the emulated link: DDS over UDP only.

    The cloud's network namespace stands for another machine, but /dev/shm is this one's, so
    FastDDS's shared-memory transport joined it to the drone side's participants around the
    emulated link; at teardown that left port files of exited participants in /dev/shm (two
    CI runs, degrade flights). Over UDP it stays behind the link, like a real cloud."""
    from .core.resources import config_file
    from .launch_spec import DDS_PROFILE_VARIABLES

    return {**env, **dict.fromkeys(DDS_PROFILE_VARIABLES, str(config_file("fastdds_udp.xml")))}


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# ------------------------------------------------------------------------------------ analysis
def percentile(values, q: float) -> float | None:
    if not values:
        return None
    import numpy as np

    return float(np.percentile(np.asarray(values, dtype=float), q))


def analyse(flight: Flight) -> tuple[dict, dict]:
    """(summary, timeline) from a finished flight."""
    o, log = flight.opts, flight.log
    t0 = flight.t_takeoff or (min(log.image_arrival.values()) if log.image_arrival else flight.t_start)
    t_end = flight.t_end or time.monotonic()
    rel = lambda t: round(t - t0, 4)  # noqa: E731
    # frames: every image this process saw, from take-off to the episode end
    frames = sorted(s for s, t in log.image_arrival.items() if t0 <= t <= t_end)
    finals = log.finals
    offloaded_stamps = {r["stamp"] for r in log.results if r["offload_bytes"] > 0 or r["provisional"]}

    def needs_cloud(s: int) -> bool:
        """Offloaded, or answered by the device alone below the threshold at its deepest exit (no cloud then)."""
        f = finals.get(s)
        if s in offloaded_stamps:
            return True
        return f is not None and f["source"] == 0 and f["split"] < f["num_exits"] and f["exit"] == f["split"] - 1 \
            and f["confidence"] < f["threshold"]

    answered = [s for s in frames if s in finals]
    by_source = Counter(SOURCES[finals[s]["source"]] for s in answered)
    offloaded = sum(1 for s in answered if s in offloaded_stamps)
    n = max(len(answered), 1)
    # (a command can arrive a little before this process got the image itself: the simulator's writer
    # serves its readers one by one; those frames count with their negative latency, as measured)
    latencies = [(log.first_command[s] - log.image_arrival[s]) * 1e3 for s in frames if s in log.first_command]
    from_source = [(log.first_command[s] - log.image_published[s]) * 1e3 for s in frames
                   if s in log.first_command and s in log.image_published]
    first_result: dict[int, dict] = {}
    for r in log.results:
        first_result.setdefault(r["stamp"], r)
    drone_lat = [first_result[s]["latency_ms"] for s in frames if s in first_result]
    ages = command_ages_ms([(s, log.image_arrival[s]) for s in frames], [(r["stamp"], r["t"]) for r in log.results])
    final_lat = [finals[s]["latency_ms"] for s in answered]
    cmds = sorted(c for c in log.commands if t0 <= c[0] <= t_end)
    gaps_wall = [b[0] - a[0] for a, b in zip(cmds, cmds[1:])]
    stamps = sorted(c[1] for c in cmds)
    gaps_stamp = [(b - a) / 1e9 for a, b in zip(stamps, stamps[1:])]
    watchdog = [c for c in cmds if c[4]]
    plan_ids = [finals[s]["plan_id"] for s in answered]
    # a change = the drone going from one monitor plan to another (plan 0, its own parameters, does not count)
    plan_switches = [(s, a, b) for s, a, b in zip(answered[1:], plan_ids, plan_ids[1:]) if a != b]
    plan_changes = [(s, a, b) for s, a, b in plan_switches if a != 0]
    collisions = [e for _, e in log.events if e.get("event") == "collision"]
    end = log.episode_end or {}
    prog = log.progress
    reached = any(e.get("event") == "goal_reached" for _, e in log.events)
    # link: when offloading resumed after the last time the link came back
    link_events = [{"t": rel(t), "up": s.up, "rate_mbit": s.rate_mbit, "rtt_ms": s.rtt_ms, "loss": s.loss,
                    "source": src} for t, s, src in flight.link_events]
    recovered_at = None
    for i, e in enumerate(link_events):
        prev = link_events[i - 1] if i else None
        bad_before = prev is not None and (not prev["up"] or prev["rate_mbit"] < GOOD_LINK["rate_mbit"] / 2
                                           or prev["rtt_ms"] > 4 * GOOD_LINK["rtt_ms"] or prev["loss"] > 0)
        good_now = e["up"] and e["rate_mbit"] >= GOOD_LINK["rate_mbit"] / 2 and e["rtt_ms"] <= 4 * GOOD_LINK["rtt_ms"] \
            and e["loss"] == 0
        if bad_before and good_now:
            recovered_at = e["t"]
    cloud_times = sorted(rel(finals[s]["t"]) for s in answered if finals[s]["source"] == 1)
    resumed_after = None
    if recovered_at is not None:
        later = [t for t in cloud_times if t >= recovered_at]
        resumed_after = round(later[0] - recovered_at, 3) if later else None
    takeoff_sim = flight.sim_takeoff if flight.sim_takeoff is not None else (log.odom[0][0] if log.odom else 0.0)
    duration = (end.get("time") or log.sim_time) - takeoff_sim
    cfg_timeout = 0.5
    try:
        from . import launch_spec

        with open(launch_spec.find_params_file("drone")) as f:
            cfg_timeout = yaml.safe_load(f)["/**"]["ros__parameters"]["controller"]["timeout_s"]
    except Exception:  # noqa: BLE001
        pass
    cfg_timeout = o.overrides.get("drone", {}).get("controller.timeout_s", cfg_timeout)
    lags = [v * 1e3 for v in (flight.listener.callback_lag if flight.listener else [])]
    drone_diag = next((v for k, v in log.diagnostics.items() if k.startswith("/spinn_drone")), {})
    summary = {
        "course": {"seed": o.seed, "kind": (log.course or {}).get("kind", o.kind)},
        "mode": o.mode, "slowdown": o.slowdown, "trace": o.trace, "outage_mode": o.outage_mode if o.trace != "none" else None,
        "checkpoint": o.checkpoint,
        "model_id": drone_diag.get("model_id"),
        "outcome": {
            "end_reason": end.get("reason") or ("time_limit" if flight.time_limit else None)
            or prog.get("end_reason") or "stopped",
            "reached_goal": reached,
            "collisions": len(collisions),
            "collision_positions": [c.get("position") for c in collisions],
            "distance_flown_m": round(end.get("distance_travelled", prog.get("distance_travelled", 0.0)), 3),
            "distance_to_goal_m": round(end.get("distance_to_goal", prog.get("distance_to_goal", float("nan"))), 3),
            "final_position": list(log.odom[-1][1:4]) if log.odom else None,
            "final_speed_mps": log.odom[-1][5] if log.odom else None,
            "sim_time_s": round(duration, 3),
            "wall_time_s": round(t_end - t0, 3),
        },
        "frames": {
            "camera": len(frames), "answered": len(answered),
            "device": by_source["device"], "offloaded": offloaded, "refined": by_source["cloud"],
            "fallback": by_source["fallback"],
            "share": {"device": by_source["device"] / n, "offloaded": offloaded / n, "refined": by_source["cloud"] / n,
                      "fallback": by_source["fallback"] / n},
            "exit_histogram": dict(sorted(Counter(finals[s]["exit"] for s in answered).items())),
        },
        "control_latency_ms": {"p50": percentile(latencies, 50), "p95": percentile(latencies, 95),
                               "max": max(latencies, default=None), "n": len(latencies),
                               "definition": CONTROL_LATENCY_DEFINITION,
                               "from_publish_p50": percentile(from_source, 50),
                               "from_publish_p95": percentile(from_source, 95),
                               "from_publish_definition": "the same, from the simulator's write of the image "
                                                          "(DDS source timestamp) instead of its arrival here"},
        "drone_latency_ms": {"first_result_p50": percentile(drone_lat, 50),
                             "first_result_p95": percentile(drone_lat, 95),
                             "final_p50": percentile(final_lat, 50), "final_p95": percentile(final_lat, 95),
                             "definition": "InferenceResult.latency_ms: image stamp -> result published, on the "
                                           "drone's sim clock (/clock at 120 Hz: ~8 ms resolution)"},
        "command_staleness_ms": {"p50": percentile(ages, 50), "p95": percentile(ages, 95),
                                 "definition": "at each camera frame's arrival here: how long ago the frame behind "
                                               "the latest result (provisional or final) received here arrived"},
        "mission_callback_lag_ms": {"p50": percentile(lags, 50), "p95": percentile(lags, 95),
                                    "definition": "camera frames: DDS reception -> this process's callback"},
        "commands": {"count": len(cmds), "watchdog_hovers": len(watchdog),
                     "max_gap_wall_s": round(max(gaps_wall, default=0.0), 4),
                     "max_gap_stamp_s": round(max(gaps_stamp, default=0.0), 4),
                     "controller_timeout_s": cfg_timeout},
        "plan_changes": len(plan_changes),
        "plans_applied": sorted(set(plan_ids) - {0}),
        "plans": [p for _, p in log.plans],
        "link": {"trace": o.trace, "events": link_events, "recovered_at_s": recovered_at,
                 "offload_resumed_after_s": resumed_after},
        "monitor": bool(log.links) or bool(log.plans),
        "drone_diagnostics": drone_diag,
        "ros_domain": flight.domain,
        "startup": flight.startup,
        "nodes": {"exit_codes": flight.exit_codes, "clean": all(c == 0 for c in flight.exit_codes.values())},
        "notes": flight.notes,
        "stress": {"cpu_hogs": flight.opts.stress_cpus, "drone_stalls": flight.staller.stalls if flight.staller else 0,
                   "stall": flight.opts.stall_drone},
    }
    odom_t = [p[0] for p in log.odom]

    def where(stamp_ns: int):
        if not log.odom:
            return None
        import bisect

        i = min(bisect.bisect_left(odom_t, stamp_ns / 1e9), len(log.odom) - 1)
        return [round(log.odom[i][1], 3), round(log.odom[i][2], 3)]

    timeline = {
        "takeoff_monotonic": t0,
        "end_s": rel(t_end),
        # in the drone's publication order (DDS sequence numbers): a reader matched mid-stream gets the writer's
        # recent history repaired after the first live sample, so arrival order is not always publication order
        "commands": [[rel(t), s / 1e9, round(vx, 4), round(wz, 4), wd, seq]
                     for t, s, vx, wz, wd, seq in sorted(cmds, key=lambda c: c[5])],
        "frames": [{"stamp": s / 1e9, "t_image": rel(log.image_arrival[s]),
                    "t_command": rel(log.first_command[s]) if s in log.first_command else None,
                    "t_final": rel(finals[s]["t"]) if s in finals else None,
                    "source": SOURCES[finals[s]["source"]] if s in finals else None,
                    "offloaded": s in offloaded_stamps, "needs_cloud": needs_cloud(s),
                    "exit": finals[s]["exit"] if s in finals else None,
                    "p": round(finals[s]["p"], 4) if s in finals else None,
                    "plan_id": finals[s]["plan_id"] if s in finals else None, "xy": where(s)} for s in frames],
        "results": [[rel(r["t"]), r["stamp"] / 1e9, r["provisional"], SOURCES[r["source"]], r["p"], r["steering"],
                     r["exit"], r["seq"], r["latency_ms"]]
                    for r in sorted(log.results, key=lambda r: r["seq"]) if r["t"] <= t_end + 1.0],
        "plan_changes": [{"stamp": s / 1e9, "from": a, "to": b, "xy": where(s)} for s, a, b in plan_switches],
        "link_events": link_events,
        "odometry": [[round(v, 4) for v in p] for p in log.odom[::5]],
        "events": [e for _, e in log.events],
    }
    return summary, timeline


# ------------------------------------------------------------------------------------ report
def summary_table(s: dict) -> str:
    def ms(v):
        return "-" if v is None else f"{v:.1f} ms"

    out, fr, lat, cmd = s["outcome"], s["frames"], s["control_latency_ms"], s["commands"]
    sh = fr["share"]
    rows = [
        ("course", f"{s['course']['kind']} seed {s['course']['seed']}; mode {s['mode']}; trace {s['trace']}; "
                   f"drone {s['slowdown']:g}x slower than the profiled machine"),
        ("outcome", f"{out['end_reason']}; goal {'reached' if out['reached_goal'] else 'NOT reached'}"),
        ("distance flown", f"{out['distance_flown_m']:.2f} m ({out['distance_to_goal_m']:.2f} m to the goal)"),
        ("collisions", str(out["collisions"])),
        ("flight time", f"{out['sim_time_s']:.1f} s sim, {out['wall_time_s']:.1f} s wall"),
        ("frames", f"{fr['camera']} seen, {fr['answered']} answered"),
        ("answered", f"on device {sh['device']:.0%}  offloaded {sh['offloaded']:.0%}  refined by cloud "
                     f"{sh['refined']:.0%}  fallen back {sh['fallback']:.0%}"),
        ("control latency", f"p50 {ms(lat['p50'])}  p95 {ms(lat['p95'])}  (image arrival -> command, n={lat['n']})"),
        ("drone latency", f"p50 {ms(s['drone_latency_ms']['first_result_p50'])}  p95 "
                          f"{ms(s['drone_latency_ms']['first_result_p95'])}  (result latency_ms, sim clock)"),
        ("command staleness", f"p50 {ms(s['command_staleness_ms']['p50'])}  p95 {ms(s['command_staleness_ms']['p95'])}"
                              "  (age of the frame behind the latest result, at each camera frame)"),
        ("commands", f"{cmd['count']}; longest gap {cmd['max_gap_wall_s'] * 1e3:.0f} ms wall (timeout "
                     f"{cmd['controller_timeout_s'] * 1e3:.0f} ms); watchdog hovers {cmd['watchdog_hovers']}"),
        ("plan changes", f"{s['plan_changes']}" + (f" (monitor plans applied: {s['plans_applied'] or 'none'})"
                                                    if s["monitor"] else " (no monitor: fixed split and threshold)")),
    ]
    if s["link"]["events"]:
        r = s["link"]["offload_resumed_after_s"]
        rows.append(("link", f"{len(s['link']['events'])} changes; offloading resumed "
                             + ("-" if r is None else f"{r:.2f} s after the link recovered")))
    rows.append(("nodes", "all exited cleanly" if s["nodes"]["clean"] else f"UNCLEAN: {s['nodes']['exit_codes']}"))
    width = max(len(k) for k, _ in rows)
    return "\n".join(f"  {k:<{width}}  {v}" for k, v in rows)


def plot(summary: dict, timeline: dict, course: dict | None, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import Circle, Polygon, Rectangle

    fig, ax = plt.subplots(figsize=(11, 5.5))
    if course:
        fb = course.get("flight_bounds") or {}
        xr, yr = fb.get("x"), fb.get("y")
        if xr and yr:
            ax.add_patch(Rectangle((xr[0], yr[0]), xr[1] - xr[0], yr[1] - yr[0], fill=False, ls=":", color="0.6",
                                   label="flight bounds"))
        for ob in course["obstacles"]:
            (cx, cy), size, yaw = ob["center"], ob["size"], ob.get("yaw", 0.0)
            color = ob.get("color", [0.5, 0.5, 0.5, 1.0])[:3]
            if ob["kind"] == "pillar":
                ax.add_patch(Circle((cx, cy), size[0], color=color, alpha=0.8))
            else:
                hx, hy = size[0] / 2, size[1] / 2
                c, s = math.cos(yaw), math.sin(yaw)
                pts = [(cx + c * x - s * y, cy + s * x + c * y) for x, y in ((-hx, -hy), (hx, -hy), (hx, hy), (-hx, hy))]
                ax.add_patch(Polygon(pts, closed=True, color=color, alpha=0.8))
        sx, sy = course["start"][:2]
        gx, gy = course["goal"][:2]
        ax.plot(sx, sy, "k^", ms=9, label="start")
        ax.add_patch(Circle((gx, gy), course.get("goal_radius", 1.0), fill=False, color="green", lw=1.5))
        ax.plot(gx, gy, "g*", ms=14, label="goal")
    odo = timeline["odometry"]
    if odo:
        ax.plot([p[1] for p in odo], [p[2] for p in odo], "-", color="0.35", lw=1, zorder=3)
    colors = {"device": "tab:blue", "cloud": "tab:green", "fallback": "tab:orange", None: "tab:red"}
    labels = {"device": "answered on device", "cloud": "refined by the cloud", "fallback": "device fallback",
              None: "no answer"}
    for src in ("device", "cloud", "fallback", None):
        pts = [f["xy"] for f in timeline["frames"] if f["source"] == src and f["xy"]]
        if pts:
            ax.scatter([p[0] for p in pts], [p[1] for p in pts], s=14, color=colors[src], zorder=4,
                       label=f"{labels[src]} ({len(pts)})")
    hits = summary["outcome"]["collision_positions"]
    if hits:
        ax.scatter([p[0] for p in hits], [p[1] for p in hits], marker="X", s=160, color="red", zorder=6,
                   label="collision")
    for i, pc in enumerate(timeline["plan_changes"]):
        if pc["xy"]:
            ax.scatter(*pc["xy"], marker="D", s=60, facecolor="none", edgecolor="black", zorder=6,
                       label="plan change" if i == 0 else None)
            ax.annotate(f"plan {pc['to']}", pc["xy"], textcoords="offset points", xytext=(4, 6), fontsize=7)
    # link changes: where the drone was when the link went down / came back
    frames = [f for f in timeline["frames"] if f["xy"]]
    for e in timeline["link_events"]:
        if e["source"] == "setup" or not frames:
            continue
        f = min(frames, key=lambda f: abs(f["t_image"] - e["t"]))
        if abs(f["t_image"] - e["t"]) > 0.5:
            continue
        marker = "v" if not e["up"] else "|"
        ax.scatter(*f["xy"], marker=marker, s=50, color="purple", zorder=5)
    if timeline["link_events"]:
        ax.scatter([], [], marker="v", color="purple", label="link down")
        ax.scatter([], [], marker="|", color="purple", label="link change / back up")
    o, lat = summary["outcome"], summary["control_latency_ms"]
    sh = summary["frames"]["share"]
    p50 = "-" if lat["p50"] is None else f"{lat['p50']:.0f} ms"
    ax.set_title(f"{summary['course']['kind']} seed {summary['course']['seed']}, {summary['mode']}, "
                 f"trace {summary['trace']}: {o['end_reason']}, {o['collisions']} collision(s), "
                 f"{o['distance_flown_m']:.1f} m\n"
                 f"device {sh['device']:.0%} / refined {sh['refined']:.0%} / fallback {sh['fallback']:.0%}; "
                 f"control latency p50 {p50}; plan changes {summary['plan_changes']}", fontsize=10)
    ax.set_xlabel("x (m, toward the goal)")
    ax.set_ylabel("y (m, left)")
    ax.set_aspect("equal")
    ax.grid(alpha=0.3)
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=130)
    plt.close(fig)


# ------------------------------------------------------------------------------------ main
def loud(lines: list[str]) -> str:
    width = max(map(len, lines)) + 4
    bar = "!" * width
    return "\n".join([bar, *(f"! {line:<{width - 4}} !" for line in lines), bar])


def main(argv: list[str] | None = None) -> int:
    opts = parse_args(argv)
    try:
        trace = load_trace(opts.trace)
    except (ValueError, OSError) as exc:
        print(f"spinn fly: {exc}", file=sys.stderr)
        return 2
    if trace is not None:
        from .linkemu import link_emulation_problem

        problem = link_emulation_problem()
        if problem:
            print(loud(["LINK TRACES NEED ROOT: this flight did NOT run.",
                        f"--trace {opts.trace} emulates the drone<->cloud link with network namespaces,",
                        f"and here: {problem}.",
                        "Run as root (sudo), or fly without a trace: --trace none."]), file=sys.stderr)
            return 2
    try:
        parse_stall(opts.stall_drone)
    except ValueError as exc:
        print(f"spinn fly: {exc}", file=sys.stderr)
        return 2
    if opts.checkpoint == "default":
        from .core.checkpoint import default_checkpoint_path

        if not default_checkpoint_path().is_file():
            print(f"spinn fly: the trained checkpoint {default_checkpoint_path()} is not there yet; "
                  f"pass --checkpoint PATH, or --checkpoint random:small:0 to try the plumbing", file=sys.stderr)
            return 2
    out = Path(opts.out or f"runs/flight-{time.strftime('%Y%m%d-%H%M%S')}")
    if (out / "recording").exists():
        print(f"spinn fly: {out} already holds a flight; choose another --out", file=sys.stderr)
        return 2
    out.mkdir(parents=True, exist_ok=True)
    say = (lambda *a, **k: None) if opts.quiet else (lambda *a, **k: print(*a, **k, flush=True))

    def on_signal(*_):
        raise KeyboardInterrupt

    # explicitly: a shell starting this in the background would otherwise leave SIGINT ignored
    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    flight = Flight(opts, out, say)
    status, error = 0, None
    try:
        flight.run()
    except KeyboardInterrupt:
        status, error = 130, "interrupted"
        print("\ninterrupted: all nodes stopped", flush=True)
    except MissionError as exc:
        status, error = 1, str(exc)
        print(f"spinn fly: {exc}", file=sys.stderr, flush=True)
    summary, timeline = analyse(flight)
    if error:
        summary["error"] = error
    summary["outputs"] = {"summary": str(out / "summary.json"), "timeline": str(out / "timeline.json"),
                          "plot": str(out / "flight.png"), "recording": str(out / "recording"),
                          "node_log": str(out / "nodes.log")}
    try:
        summary["recording"] = {"format": "rosbag2, MCAP storage (rosbags)", **verify_recording(out / "recording")}
    except Exception as exc:  # noqa: BLE001 - reported, not fatal
        summary["recording"] = {"readable": False, "error": f"{type(exc).__name__}: {exc}"}
    try:
        plot(summary, timeline, flight.log.course, out / "flight.png")
    except Exception as exc:  # noqa: BLE001
        summary["notes"].append(f"plot failed: {type(exc).__name__}: {exc}")
    (out / "summary.json").write_text(json.dumps(summary, indent=2, default=str))
    (out / "timeline.json").write_text(json.dumps(timeline, default=str))
    print(f"\nflight summary ({out}):\n{summary_table(summary)}", flush=True)
    print(f"  control latency = {CONTROL_LATENCY_DEFINITION}")
    print(f"  outputs: summary.json, timeline.json, flight.png, recording/ (rosbag2 + MCAP, "
          f"{sum(summary['recording'].get('messages', {}).values())} messages), nodes.log", flush=True)
    if status == 0 and not summary["nodes"]["clean"]:
        status = 1
    return status


if __name__ == "__main__":
    sys.exit(main())
