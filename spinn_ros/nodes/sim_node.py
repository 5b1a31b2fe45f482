"""The simulator node: a PyFlyt quadrotor flying a seeded obstacle course, over ROS 2.

Topic names and types mirror a gz-sim X3 quadrotor seen through ros_gz_bridge
(docs/simulation.md, config/gz_bridge.yaml), so nodes written against it run
unchanged against Gazebo. Names are relative (a namespace places them) except
/clock and /diagnostics; ``<model>`` is the ``model_name`` parameter (X3).

  out  camera                        sensor_msgs/Image rgb8 (sensor-data QoS), stamp = sim time of the render
  out  camera_info                   sensor_msgs/CameraInfo (sensor-data QoS), same header as the image
  out  model/<model>/odometry        nav_msgs/Odometry: pose in <model>/odom, twist in the body frame
  out  /clock                        rosgraph_msgs/Clock, every control step (120 Hz sim time)
  in   <model>/gazebo/command/twist  geometry_msgs/TwistStamped: body-frame linear x/y/z, angular z (+ = left)
  out  sim/events                    std_msgs/String JSON per event: collision, goal_reached, out_of_bounds,
                                     timeout, episode_end
  out  sim/progress                  std_msgs/String JSON: distance travelled / to goal, progress, episode state
  out  sim/course                    std_msgs/String JSON of the course geometry (latched, sent once)
  out  /diagnostics                  diagnostic_msgs/DiagnosticArray

Physics runs in its own thread, paced by ``real_time_factor`` against the wall clock
(0: as fast as the CPU allows). Rendering has to stay on that thread (pybullet is not
thread-safe) but publishing does not: frames go through a one-slot mailbox to a
camera thread, so a slow subscriber or DDS hiccup drops a frame (counted) instead of
stalling physics.
"""
from __future__ import annotations

import collections
import json
import math
import threading
import time

from geometry_msgs.msg import TwistStamped
from nav_msgs.msg import Odometry
from rclpy.node import Node
from rclpy.time import Time
from rosgraph_msgs.msg import Clock
from sensor_msgs.msg import CameraInfo, Image
from std_msgs.msg import String

from ..core.frame_slot import LatestSlot
from ..ros import diagnostics as diag
from ..ros import qos
from ..ros.images import fill_image
from ..ros.node_main import run_node
from ..ros.params import Param, ParameterError, declare, in_range, non_empty, on_change, one_of
from ..sim.quadrotor import FlightConfig, FlightSim, camera_rates
from ..sim.world import COURSE_KINDS

PARAMS = [
    Param("model_name", "X3", "vehicle name in topic and frame names, as gz-sim names the X3 quadrotor",
          non_empty, read_only=True),
    Param("course.seed", 0, "course seed: the same seed gives the same course and flight",
          in_range(0, 2**31 - 1), read_only=True),
    Param("course.kind", "mixed", f"course kind: {', '.join(COURSE_KINDS)}, or random (drawn from the seed)",
          one_of(*COURSE_KINDS, "random"), read_only=True),
    Param("camera.rate_hz", 15, "camera frames per simulated second; 0 = no camera; must divide 240 (physics)",
          one_of(0, *camera_rates()), read_only=True),
    Param("camera.width", 128, "image width, pixels", in_range(16, 1024), read_only=True),
    Param("camera.height", 128, "image height, pixels", in_range(16, 1024), read_only=True),
    Param("camera.latency_s", 0.0, "deliver each frame this many simulated seconds after its capture stamp "
          "(a laggy camera pipeline: the drone then acts on old frames); 0 = at once", in_range(0.0, 5.0),
          read_only=True),
    Param("camera.frame_id", "X3/camera", "frame_id of image and camera_info", non_empty, read_only=True),
    Param("real_time_factor", 1.0, "simulated seconds per wall second: 1.0 = wall-clock pace, 0 = as fast as possible",
          in_range(0.0, 1000.0)),
    Param("command_timeout_s", 0.5, "hover when no command arrived for this long, simulated seconds",
          in_range(0.01, 60.0)),
    Param("end_on_collision", True, "a collision ends the episode (the simulation freezes) like a crash",
          read_only=True),
    Param("goal_radius", 1.0, "horizontal distance to the goal that counts as reached, m",
          in_range(0.05, 20.0), read_only=True),
    Param("max_duration_s", 120.0, "episode time limit, simulated seconds; 0 = none",
          in_range(0.0, 1e6), read_only=True),
    Param("bounds_margin", 2.0, "flying this far beyond the course (start..goal, field width) is out of bounds, m",
          in_range(0.0, 100.0), read_only=True),
    Param("odometry_rate_hz", 50.0, "odometry messages per simulated second (gz OdometryPublisher's default)",
          in_range(1.0, 120.0), read_only=True),
    Param("progress_rate_hz", 5.0, "sim/progress messages per simulated second", in_range(0.1, 120.0),
          read_only=True),
    Param("diagnostics_period_s", 1.0, "period of /diagnostics messages, wall seconds", in_range(0.05, 60.0),
          read_only=True),
]


def flight_config(p: dict) -> FlightConfig:
    return FlightConfig(
        seed=p["course.seed"], kind=None if p["course.kind"] == "random" else p["course.kind"],
        camera_hz=p["camera.rate_hz"], camera_size=(p["camera.height"], p["camera.width"]),
        end_on_collision=p["end_on_collision"], goal_radius=p["goal_radius"],
        max_duration_s=p["max_duration_s"], bounds_margin=p["bounds_margin"])


def stamp(ns: int):
    return Time(nanoseconds=ns).to_msg()


def camera_info(sim: FlightSim, frame_id: str) -> CameraInfo:
    """Pinhole model of the render: pybullet's FOV is vertical; pixels are square."""
    spec = sim.camera_spec
    h, w = spec.resolution
    f = (h / 2) / math.tan(math.radians(spec.fov_deg) / 2)
    info = CameraInfo(height=h, width=w, distortion_model="plumb_bob")
    info.header.frame_id = frame_id
    info.d = [0.0] * 5
    info.k = [f, 0.0, w / 2, 0.0, f, h / 2, 0.0, 0.0, 1.0]
    info.r = [1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0]
    info.p = [f, 0.0, w / 2, 0.0, 0.0, f, h / 2, 0.0, 0.0, 0.0, 1.0, 0.0]
    return info


class Every:
    """Due once per ``period`` of simulated time (never in bursts after a stall)."""

    def __init__(self, period: float):
        self.period, self.next = period, 0.0

    def due(self, t: float) -> bool:
        if t + 1e-9 < self.next:
            return False
        self.next = max(self.next + self.period, t)
        return True


class Pacer:
    """Keeps simulated time at ``rtf`` times wall time; never sprints to catch up after falling behind."""

    MAX_LAG_S = 0.25

    def __init__(self):
        self._anchor: tuple[float, float, float] | None = None   # (wall, sim, rtf)

    def wait(self, sim_time: float, rtf: float, stop: threading.Event) -> None:
        if rtf <= 0:
            return
        now = time.monotonic()
        if self._anchor is None or self._anchor[2] != rtf:
            self._anchor = (now, sim_time, rtf)
        wall0, sim0, _ = self._anchor
        delay = wall0 + (sim_time - sim0) / rtf - now
        if delay > 0:
            stop.wait(delay)
        elif delay < -self.MAX_LAG_S:
            self._anchor = (now, sim_time, rtf)


class SimNode(Node):
    def __init__(self, **kwargs):
        super().__init__("spinn_sim", **kwargs)
        p = declare(self, PARAMS)
        try:
            self.sim = FlightSim(flight_config(p))
        except ValueError as exc:
            raise ParameterError(str(exc)) from exc
        self.real_time_factor = p["real_time_factor"]
        self.command_timeout_s = p["command_timeout_s"]
        self.add_on_set_parameters_callback(on_change(PARAMS, self._apply_params))
        model = p["model_name"]
        self.odom_frame, self.base_frame = f"{model}/odom", f"{model}/base_footprint"   # gz defaults

        self.image_pub = self.create_publisher(Image, "camera", qos.SENSOR)
        self.info_pub = self.create_publisher(CameraInfo, "camera_info", qos.SENSOR)
        self.odom_pub = self.create_publisher(Odometry, f"model/{model}/odometry", qos.RESULTS)
        self.clock_pub = self.create_publisher(Clock, "/clock", qos.RESULTS)
        self.event_pub = self.create_publisher(String, "sim/events", qos.RESULTS)
        self.progress_pub = self.create_publisher(String, "sim/progress", qos.RESULTS)
        self.course_pub = self.create_publisher(String, "sim/course", qos.LATCHED)
        self.diag_pub = self.create_publisher(diag.DiagnosticArray, "/diagnostics", qos.RESULTS)
        self.create_subscription(TwistStamped, f"{model}/gazebo/command/twist", self._on_command, qos.RESULTS)
        self.course_pub.publish(String(data=json.dumps(self.sim.describe())))

        self.info = camera_info(self.sim, p["camera.frame_id"])
        self._cmd_lock = threading.Lock()
        self._cmd: TwistStamped | None = None
        self._cmd_time = -math.inf          # sim time the last command arrived
        self.commands_in = 0
        self.timeouts = 0
        self._hovering = True
        self.frames_out = diag.RateCounter(time.monotonic())
        self._rtf_probe = (time.monotonic(), 0.0)
        self._failure: BaseException | None = None

        self._stop = threading.Event()
        self.slot = LatestSlot()
        self._camera_latency_ns = int(p["camera.latency_s"] * 1e9)
        self._delayed: collections.deque = collections.deque()     # (pixels, stamp) captured, not yet delivered
        self._odom_due = Every(1.0 / p["odometry_rate_hz"])
        self._progress_due = Every(1.0 / p["progress_rate_hz"])
        self._pacer = Pacer()
        self.physics = threading.Thread(target=self._guarded, args=(self._physics_loop,), name="sim-physics",
                                        daemon=True)
        self.camera = threading.Thread(target=self._guarded, args=(self._camera_loop,), name="sim-camera",
                                       daemon=True)
        self.create_timer(p["diagnostics_period_s"], self._publish_diagnostics)
        self.create_timer(0.2, self._raise_worker_failure)
        self.camera.start()
        self.physics.start()
        c = self.sim.course
        self.get_logger().info(
            f"course seed {c.seed} ({c.kind}, {len(c.obstacles)} obstacles), start {c.start} goal {c.goal}; "
            f"camera {p['camera.width']}x{p['camera.height']} at {p['camera.rate_hz']} Hz; "
            f"real-time factor {self.real_time_factor or 'max'}")

    # -- parameters -----------------------------------------------------------------
    def _apply_params(self, changed: dict) -> str | None:
        self.real_time_factor = changed.get("real_time_factor", self.real_time_factor)
        self.command_timeout_s = changed.get("command_timeout_s", self.command_timeout_s)
        return None

    # -- commands (executor thread) ------------------------------------------------------
    def _on_command(self, msg: TwistStamped) -> None:
        with self._cmd_lock:
            self._cmd, self._cmd_time = msg, self.sim.time
            self.commands_in += 1

    def _apply_command(self) -> None:
        """Latest command to the vehicle; hover once it is older than the timeout (sim time)."""
        with self._cmd_lock:
            msg, age = self._cmd, self.sim.time - self._cmd_time
        if msg is None or age > self.command_timeout_s:
            if not self._hovering:
                self.timeouts += 1
                self.get_logger().info(f"no command for {age:.2f} s (sim): hovering", throttle_duration_sec=5.0)
            self._hovering = True
            self.sim.hover()
            return
        self._hovering = False
        t = msg.twist
        self.sim.set_command(t.linear.x, t.angular.z, vz=t.linear.z, lateral=t.linear.y)

    # -- physics thread -------------------------------------------------------------------
    def _guarded(self, loop) -> None:
        """Run a worker loop; an error while ROS is up is re-raised on the executor thread."""
        try:
            loop()
        except Exception as exc:  # noqa: BLE001 - anything: publishing after shutdown raises several types
            if not self._stop.is_set() and self.context.ok():
                self._failure = exc

    def _physics_loop(self) -> None:
        frame_seq = self.sim.frame_seq
        while not self._stop.is_set():
            if self.sim.done:
                # frozen after the episode, like a paused gz world: the clock stands still but is
                # still sent, so late joiners on sim time learn what time it is
                self.clock_pub.publish(Clock(clock=stamp(self.sim.time_ns)))
                self._stop.wait(0.1)
                continue
            self._apply_command()
            events = self.sim.step()
            if self.sim.frame_seq != frame_seq:
                frame_seq = self.sim.frame_seq
                self.slot.put((self.sim.camera_frame(), self.sim.frame_time_ns))
            self._publish_step(events)
            self._pacer.wait(self.sim.time, self.real_time_factor, self._stop)

    def _publish_step(self, events) -> None:
        t, t_ns = self.sim.time, self.sim.time_ns
        self.clock_pub.publish(Clock(clock=stamp(t_ns)))
        if self._odom_due.due(t):
            self.odom_pub.publish(self._odometry(t_ns))
        for event in events:
            self._publish_event(event)
        if self._progress_due.due(t) or self.sim.done:
            self.progress_pub.publish(String(data=json.dumps(self._progress())))

    def _odometry(self, t_ns: int) -> Odometry:
        s = self.sim.state()
        msg = Odometry()
        msg.header.stamp = stamp(t_ns)
        msg.header.frame_id, msg.child_frame_id = self.odom_frame, self.base_frame
        pose, twist = msg.pose.pose, msg.twist.twist
        pose.position.x, pose.position.y, pose.position.z = s.position
        o = pose.orientation
        o.x, o.y, o.z, o.w = s.quaternion
        twist.linear.x, twist.linear.y, twist.linear.z = s.velocity_body
        twist.angular.x, twist.angular.y, twist.angular.z = s.angular_velocity_body
        return msg

    def _publish_event(self, event) -> None:
        data = event.as_dict()
        self.event_pub.publish(String(data=json.dumps(data)))
        text = f"{event.kind} at t={event.time:.2f} s: {json.dumps(data)}"
        if event.kind in ("collision", "out_of_bounds"):   # rclpy: one severity per call site
            self.get_logger().warning(text)
        else:
            self.get_logger().info(text)

    def _progress(self) -> dict:
        p = self.sim.progress()
        return {"time": round(self.sim.time, 6), "distance_travelled": round(p.distance_travelled, 4),
                "distance_to_goal": round(p.distance_to_goal, 4), "progress": round(p.fraction, 4),
                "goal_reached": p.goal_reached, "collisions": self.sim.collisions,
                "episode": "ended" if self.sim.done else "running", "end_reason": self.sim.end_reason}

    # -- camera thread -----------------------------------------------------------------------
    def _camera_loop(self) -> None:
        while not self._stop.is_set():
            item = self.slot.take(timeout=0.01 if self._camera_latency_ns else 0.1)
            if not self._camera_latency_ns:
                if item is not None:
                    self._publish_frame(*item)
                continue
            # a laggy pipeline: every frame, in order, once the sim clock is its latency past its stamp
            if item is not None:
                self._delayed.append(item)
            while self._delayed and self.sim.time_ns - self._delayed[0][1] >= self._camera_latency_ns:
                self._publish_frame(*self._delayed.popleft())

    def _publish_frame(self, pixels, t_ns: int) -> None:
        msg = Image()
        msg.header.stamp = stamp(t_ns)
        msg.header.frame_id = self.info.header.frame_id
        fill_image(msg, pixels, "rgb8")
        self.info.header.stamp = msg.header.stamp
        self.image_pub.publish(msg)
        self.info_pub.publish(self.info)
        self.frames_out.tick()

    # -- health ----------------------------------------------------------------------------
    def _raise_worker_failure(self) -> None:
        if self._failure is not None:
            raise RuntimeError("simulator worker thread failed") from self._failure

    def _measured_rtf(self) -> float:
        now, t = time.monotonic(), self.sim.time
        wall0, sim0 = self._rtf_probe
        self._rtf_probe = (now, t)
        return (t - sim0) / max(now - wall0, 1e-9)

    def _publish_diagnostics(self) -> None:
        p = self.sim.progress()
        with self._cmd_lock:
            age = self.sim.time - self._cmd_time
        values = {
            "sim_time_s": self.sim.time,
            "real_time_factor": self._measured_rtf(),
            "real_time_factor_target": self.real_time_factor,
            "camera_rate_hz": self.frames_out.rate(time.monotonic()),
            "frames_published": self.frames_out.total,
            "frames_dropped": self.slot.dropped,
            "commands_received": self.commands_in,
            "command_age_s": age if math.isfinite(age) else -1.0,
            "hovering_on_timeout": self._hovering,
            "command_timeouts": self.timeouts,
            "collisions": self.sim.collisions,
            "distance_to_goal_m": p.distance_to_goal,
            "progress": p.fraction,
            "episode": self.sim.end_reason or "running",
            "course": f"{self.sim.course.kind}:{self.sim.course.seed}",
        }
        level, message = diag.OK, "running"
        if self.sim.done:
            level = diag.OK if self.sim.end_reason == "goal_reached" else diag.WARN
            message = f"episode ended: {self.sim.end_reason}"
        self.diag_pub.publish(diag.make_array(self.get_clock().now().to_msg(), f"{self.get_name()}: simulator",
                                              "pyflyt-quadx", level, message, values))

    def close(self) -> None:
        self._stop.set()
        self.slot.close()
        for thread in (self.physics, self.camera):
            thread.join(timeout=5.0)
        self.sim.close()


def main(args=None) -> int:
    return run_node(SimNode, args)


if __name__ == "__main__":
    raise SystemExit(main())
