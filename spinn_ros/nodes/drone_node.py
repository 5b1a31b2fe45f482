"""The drone node: camera -> head of the early-exit CNN -> result + command at once.

Topics (relative, so a namespace or remapping places them):
  in   image               sensor_msgs/Image (sensor-data QoS; rgb8, bgr8, mono8)
  in   spinn/plan          spinn_ros/SplitPlan (reliable, transient local) from the monitor
  in   odom                nav_msgs/Odometry, only with goal.enabled (steer toward the goal when clear)
  out  spinn/result        spinn_ros/InferenceResult (stamp = source image stamp)
  out  cmd_vel             geometry_msgs/TwistStamped (stamp = source image stamp)
  out  /diagnostics        diagnostic_msgs/DiagnosticArray

Frame flow (core/drone_engine.py, the node only adapts it to ROS): the head runs stages
[0, split) with its exits. A confident exit (or the final one) answers at once, final.
Otherwise the deepest device exit answers at once as *provisional* and the split
activation goes to the cloud over Zenoh; the cloud's answer, if it comes before the
frame's deadline, is published as final with the same stamp; if not (or on any
failure) the device answer is published again as final (source DEVICE_FALLBACK).
Control never waits on the network.

The camera callback only drops the frame into the engine's one-slot mailbox; a worker
thread runs the model, so a slow frame never blocks the camera and a frame arriving
while the worker is busy replaces any older waiting one (counted as dropped).
"""
from __future__ import annotations

import math
import threading
import time
from dataclasses import replace

import numpy as np
import torch
from geometry_msgs.msg import TwistStamped
from nav_msgs.msg import Odometry
from rclpy.node import Node
from rclpy.time import Time
from sensor_msgs.msg import Image

from spinn_ros.msg import InferenceResult, SplitPlan

from ..core.backend import BACKENDS, staged_model
from ..core.controller import ControllerConfig, DroNetController
from ..core.device_emulation import NO_SLOWDOWN, SlowerDevice
from ..core.drone_engine import Answer, DroneEngine, QueuedTransport, Settings, Source
from ..core.encodings import WIRE_ENCODINGS
from ..core.model_ref import load_model
from ..core.plan import PLAN_MODES, PROVISIONAL_FIRST, Plan
from ..core.preprocess import to_model_input
from ..core.step_times import StepTimes
from ..ros import diagnostics as diag
from ..ros import qos
from ..ros.images import image_pixels
from ..ros.node_main import run_node
from ..ros.params import Param, ParameterError, declare, in_range, non_empty, on_change, one_of, threshold_or_plain, zenoh_params

PARAMS = [
    Param("checkpoint", "default", "model: 'default' (shipped), a checkpoint path, or random:<size>:<seed>",
          non_empty, read_only=True),
    Param("split_point", -1, "stages [0, split) run on the drone; -1 = the whole model (no offload)",
          in_range(-1, 255)),
    Param("exit_threshold", 0.8, "an exit answers when its top-1 softmax confidence reaches this, (0, 1]; "
          ".inf: the plain network (no early exit, exit heads skipped)", threshold_or_plain),
    Param("plan_mode", "provisional-first", "order of device compute and offload (core/plan.py): "
          "provisional-first (device exits, then offload the unsure frames), offload-first (send, the cloud's exits "
          "answer) or race (send, then the drone's first exit answers provisionally)", one_of(*PLAN_MODES)),
    Param("torch_threads", 1, "intra-op threads for the head, torch or onnxruntime (1: leave the other cores to ROS)",
          in_range(1, 64), read_only=True),
    Param("backend", "torch", "inference engine of the head: torch (eager) or onnxruntime (TensorRT, CUDA, "
          "else CPU provider; ONNX files exported on first use)", one_of(*BACKENDS), read_only=True),
    Param("diagnostics_period_s", 1.0, "period of /diagnostics messages, seconds",
          in_range(0.05, 60.0), read_only=True),
    Param("emulate.slowdown", NO_SLOWDOWN, "emulate a drone computer this many times slower than this machine: each "
          "head is sleep-padded to k x its stages' idle cost, measured at start-up (1 = no emulation)",
          in_range(1.0, 100.0), read_only=True),
    Param("emulate.profile", "", "device profile whose stage costs the slowdown multiplies (default: the "
          "model's profile in profiles/, else costs measured at start-up)", read_only=True),
    Param("follow_plans", True, "apply SplitPlan messages from the monitor (split and threshold)"),
    Param("cloud.enabled", True, "offload frames no device exit is confident about to a cloud over Zenoh",
          read_only=True),
    Param("cloud.deadline_ms", Settings.deadline_ms,
          "latency budget per frame from its arrival; later cloud answers are discarded",
          in_range(1.0, 10000.0)),
    Param("cloud.late_grace_ms", Settings.late_grace_ms,
          "keep a query open this long past its deadline, to count late replies",
          in_range(0.0, 10000.0)),
    Param("cloud.max_in_flight", Settings.max_in_flight, "offloads outstanding at once; beyond it the device answers alone",
          in_range(1, 64), read_only=True),
    Param("cloud.encoding", Settings.encoding, "split tensor encoding on the wire: <f32|f16|u8>-<none|lz4|zstd>",
          one_of(*WIRE_ENCODINGS)),
    *zenoh_params(connect="tls/127.0.0.1:7447"),
    Param("controller.max_forward_speed", 1.0, "forward speed at collision probability 0, m/s",
          in_range(0.0, 20.0)),
    Param("controller.max_yaw_rate", 1.0, "yaw rate at |steering| = 1, rad/s", in_range(0.0, 10.0)),
    Param("controller.speed_alpha", 0.5, "low-pass weight of each new speed sample, (0, 1]",
          in_range(0.0, 1.0, lo_open=True)),
    Param("controller.yaw_alpha", 0.5, "low-pass weight of each new yaw-rate sample, (0, 1]",
          in_range(0.0, 1.0, lo_open=True)),
    Param("controller.critical_collision", 0.9, "collision probability at which the drone stops, (0, 1]",
          in_range(0.0, 1.0, lo_open=True)),
    Param("controller.timeout_s", 0.5, "hover when no result arrived for this long, seconds",
          in_range(0.01, 10.0)),
    Param("controller.goal_gain", 0.0,
          "yaw toward the goal, rad/s per rad of heading error (fading from p = 0 to p = 0.5); 0: off",
          in_range(0.0, 10.0)),
    Param("controller.goal_cone", 3.1416, "never yaw further from the goal once this far off it, rad; pi: no limit",
          in_range(0.01, 3.1416)),
    Param("controller.search_yaw_rate", 0.0, "stopped with no side preferred, turn at least this fast, rad/s; 0: off",
          in_range(0.0, 10.0)),
    Param("controller.slow_age_s", 0.25, "answers older than this (camera stamp to now) slow the drone, seconds",
          in_range(0.0, 10.0)),
    Param("controller.max_age_s", 0.6, "answers this old or older make the drone hover, seconds; "
          "must exceed controller.slow_age_s", in_range(0.01, 10.0, lo_open=True)),
    Param("controller.turn_slow_rad", 0.05, "turned more than this since an answer's frame (commanded yaw): "
          "slower, rad", in_range(0.0, 3.2)),
    Param("controller.turn_max_rad", 0.3, "turned this far since an answer's frame: hover, rad; must exceed "
          "controller.turn_slow_rad", in_range(0.0, 3.2, lo_open=True)),
    Param("controller.goal_clearance_m", 1.5, "the goal pulls only as far as the frames of the last this many "
          "metres flown all found the way clear, m", in_range(0.0, 100.0)),
    Param("goal.enabled", False, "steer toward goal.x, goal.y as well (needs odometry on 'odom')", read_only=True),
    Param("goal.x", 0.0, "goal x in the odometry frame, m", read_only=True),
    Param("goal.y", 0.0, "goal y in the odometry frame, m", read_only=True),
]


class DroneNode(Node):
    def __init__(self, **kwargs):
        super().__init__("spinn_drone", **kwargs)
        p = declare(self, PARAMS)
        self.p = p
        torch.set_num_threads(p["torch_threads"])
        try:
            self.model, self.model_id = load_model(p["checkpoint"])
        except (OSError, ValueError) as exc:
            raise ParameterError(f"parameter 'checkpoint'={p['checkpoint']!r}: {exc}") from exc
        try:
            self.model = staged_model(self.model, self.model_id, p["backend"], threads=p["torch_threads"],
                                      log=self.get_logger().info)
        except (OSError, ValueError) as exc:
            raise ParameterError(f"parameter 'backend'={p['backend']!r}: {exc}") from exc
        plan = Plan(self._resolve_split(p["split_point"]), p["exit_threshold"], p["plan_mode"])
        self.controller = DroNetController(self._controller_config(p))
        self.add_on_set_parameters_callback(on_change(PARAMS, self._apply_params))

        self.result_pub = self.create_publisher(InferenceResult, "spinn/result", qos.RESULTS)
        self.cmd_pub = self.create_publisher(TwistStamped, "cmd_vel", qos.RESULTS)
        self.diag_pub = self.create_publisher(diag.DiagnosticArray, "/diagnostics", qos.RESULTS)
        self._pose: tuple[float, float, float] | None = None      # x, y, yaw from odometry (goal.enabled)
        if p["goal.enabled"]:
            self.create_subscription(Odometry, "odom", self._on_odom, qos.RESULTS)

        now = time.monotonic()
        self.frames_in = diag.RateCounter(now)
        self.results_out = diag.RateCounter(now)
        self.step_times = StepTimes()
        self.exit_hist = np.zeros(self.model.num_exits, dtype=np.int64)
        self.source_hist = np.zeros(3, dtype=np.int64)     # by InferenceResult.SOURCE_*
        self._last_result_ns = self.get_clock().now().nanoseconds
        self._hovering = False
        self._cmd_lock = threading.Lock()
        self.link = self._open_link(p) if p["cloud.enabled"] else None
        self.engine = DroneEngine(
            self.model, self.model_id, plan, self._on_answer, prepare=self._model_input,
            transport=QueuedTransport(self.link) if self.link else None, device=self._slower_device(p),
            settings=Settings(p["cloud.deadline_ms"], p["cloud.late_grace_ms"], p["cloud.max_in_flight"],
                              p["cloud.encoding"]),
            no_reply_reason=self._no_reply_reason if self.link else None,
            warn=lambda text: self.get_logger().warn(text, throttle_duration_sec=5.0))
        self.create_subscription(SplitPlan, "spinn/plan", self._on_plan, qos.LATCHED)

        self._stop = threading.Event()
        self.worker = threading.Thread(target=self._work, name="spinn-head", daemon=True)
        self.worker.start()
        self.create_subscription(Image, "image", self._on_image, qos.SENSOR)
        self.create_timer(p["diagnostics_period_s"], self._publish_diagnostics)
        self.create_timer(min(0.05, p["controller.timeout_s"] / 2), self._watchdog)
        self.get_logger().info(
            f"model {self.model_id} ({self.model.spec.name}, {self.model.num_stages} stages, "
            f"{self.model.num_exits} exits, {p['backend']}), split {plan.split}, threshold {plan.threshold}, "
            f"cloud {'via Zenoh ' + self.link.key if self.link else 'disabled'}")

    def _model_input(self, msg: Image) -> torch.Tensor:
        pixels, encoding = image_pixels(msg)
        return to_model_input(pixels, self.model.spec.input_size, encoding)

    # -- set-up -----------------------------------------------------------------------------
    def _open_link(self, p: dict):
        from ..transport.zenoh_link import NO_REPLY, DroneLink, key_name, settings_from_params

        self._no_reply_reason = NO_REPLY
        try:   # its certificate's name is its tail key's: the cloud lets it query that key only
            settings = settings_from_params(p, key_name(self.get_namespace()), self.get_logger().warn)
        except ValueError as exc:
            raise ParameterError(f"zenoh parameters: {exc}") from exc
        return DroneLink(settings, self.get_namespace(), self._on_clouds)

    def _slower_device(self, p: dict) -> SlowerDevice:
        profile = None
        if p["emulate.slowdown"] > 1.0:
            from ..core.profile import find_profile, load_profile

            try:
                path = p["emulate.profile"] or find_profile(self.model_id, "device", backend=p["backend"])
                profile = load_profile(path, self.model_id, "device", backend=p["backend"])
            except (OSError, ValueError) as exc:
                if p["emulate.profile"]:
                    raise ParameterError(f"parameter 'emulate.profile'={p['emulate.profile']!r}: {exc}") from exc
                self.get_logger().warn(f"no device profile for {self.model_id} ({exc}); measuring stage costs here")
        device = SlowerDevice(self.model, p["emulate.slowdown"], profile)
        if device.factor > 1.0:
            self.get_logger().info(f"emulating a drone {device.factor:g}x slower ({device.source}): whole model "
                                   f"{device.factor * device.cost_s(0, self.model.num_stages) * 1e3:.1f} ms")
        return device

    def _on_clouds(self, alive: set[str]) -> None:
        self.get_logger().info(f"cloud servers alive: {sorted(alive) or 'none (device answers alone)'}")

    def _resolve_split(self, split: int) -> int:
        n = self.model.num_stages
        split = n if split == -1 else split
        if not 0 <= split <= n:
            raise ParameterError(f"parameter 'split_point'={split} is invalid: must be -1 or in [0, {n}] "
                                 f"for model '{self.model.spec.name}'")
        return split

    @staticmethod
    def _controller_config(p: dict) -> ControllerConfig:
        for upper, lower in (("max_age_s", "slow_age_s"), ("turn_max_rad", "turn_slow_rad")):
            if p[f"controller.{upper}"] <= p[f"controller.{lower}"]:
                raise ParameterError(f"parameter 'controller.{upper}'={p[f'controller.{upper}']!r} is invalid: "
                                     f"must exceed controller.{lower}={p[f'controller.{lower}']!r}")
        return ControllerConfig(**{k.split(".", 1)[1]: v for k, v in p.items() if k.startswith("controller.")})

    def _apply_params(self, changed: dict) -> str | None:
        plan = self.engine.plan
        try:
            split = self._resolve_split(changed.get("split_point", plan.split))
        except ParameterError as exc:
            return str(exc)
        threshold = changed.get("exit_threshold", plan.threshold)
        if any(k.startswith("controller.") for k in changed):
            try:
                config = self._controller_config({**self.p, **changed})
            except ParameterError as exc:
                return str(exc)
            self.controller.config = config
        self.p.update(changed)
        self.engine.plan = replace(plan, split=split, threshold=threshold, mode=changed.get("plan_mode", plan.mode))
        self.engine.reconfigure(deadline_ms=self.p["cloud.deadline_ms"], late_grace_ms=self.p["cloud.late_grace_ms"],
                                encoding=self.p["cloud.encoding"])
        return None

    def _on_plan(self, plan: SplitPlan) -> None:
        if not self.p["follow_plans"]:
            return
        if plan.model_id and plan.model_id != self.model_id:
            self.get_logger().warn(f"ignoring plan {plan.plan_id} for model {plan.model_id} (running {self.model_id})",
                                   throttle_duration_sec=10.0)
            return
        mode = plan.mode or PROVISIONAL_FIRST      # a monitor older than plan modes sends none
        if (not 0 <= plan.split_point <= self.model.num_stages or threshold_or_plain(plan.exit_threshold)
                or mode not in PLAN_MODES):
            self.get_logger().error(f"ignoring invalid plan {plan.plan_id}: split {plan.split_point}, "
                                    f"threshold {plan.exit_threshold}, mode {plan.mode!r}")
            return
        # one assignment: the engine reads its plan once per frame, so no frame mixes plans
        self.engine.plan = Plan(plan.split_point, plan.exit_threshold, mode, plan.plan_id, plan.offload)
        self.get_logger().info(f"plan {plan.plan_id}: split {plan.split_point}, threshold "
                               f"{plan.exit_threshold:.2f}, {mode}, offload {plan.offload} ({plan.reason})")

    def _on_odom(self, msg: Odometry) -> None:
        q, pos = msg.pose.pose.orientation, msg.pose.pose.position
        self._pose = (pos.x, pos.y, math.atan2(2 * (q.w * q.z + q.x * q.y), 1 - 2 * (q.y * q.y + q.z * q.z)))

    def _heading_error(self) -> float | None:
        if self._pose is None:
            return None
        x, y, yaw = self._pose
        return math.atan2(self.p["goal.y"] - y, self.p["goal.x"] - x) - yaw

    # -- camera path: never blocks ------------------------------------------------------------
    def _on_image(self, msg: Image) -> None:
        self.frames_in.tick()
        self.engine.submit(msg)

    # -- inference worker -------------------------------------------------------------------
    def _work(self) -> None:
        while not self._stop.is_set():
            try:
                self.engine.step(timeout=0.1)
            except Exception as exc:  # noqa: BLE001 - one bad frame must not stop the drone
                if self._stop.is_set() or not self.context.ok():
                    return              # shutting down: SIGINT already invalidated the publishers
                self.get_logger().error(f"frame processing failed: {exc!r}", throttle_duration_sec=5.0)

    # -- output -----------------------------------------------------------------------------
    def _on_answer(self, a: Answer) -> None:
        """From the worker or a Zenoh thread: act on the answer (the command first: control does not
        wait for the result message), then publish the result. Both leave under the controller's lock,
        in the order the controller took the answers: published after it, a worker's command and a
        Zenoh thread's could swap, and the autopilot would hold the controller's older command (seen
        in a flight whose drone was frozen at intervals: both threads resumed together)."""
        answered_ns = time.monotonic_ns()
        header, d, plan = a.frame.data.header, a.decision, a.plan
        stamp_ns = Time.from_msg(header.stamp).nanoseconds
        now_ns = self.get_clock().now().nanoseconds
        res = InferenceResult(
            header=header, frame_seq=a.frame.seq, collision_probability=d.collision_prob,
            steering=d.steering, exit_index=d.exit_index, num_exits=self.model.num_exits, confidence=d.confidence,
            provisional=a.provisional, source=int(a.source), split_point=plan.split, exit_threshold=plan.threshold,
            plan_id=plan.plan_id, device_compute_ms=a.device_s * 1e3, network_ms=a.network_ms,
            offload_bytes=a.wire_bytes, cloud_compute_ms=a.cloud_ms, cloud_queue_ms=a.queue_ms,
            latency_ms=(now_ns - stamp_ns) / 1e6)        # the age the controller is given below
        commanded_ns = None
        with self._cmd_lock:
            self._last_result_ns = now_ns
            self._hovering = False
            cmd = self.controller.update(d.collision_prob, d.steering, stamp_ns, self._heading_error(), a.provisional,
                                         age_s=(now_ns - stamp_ns) / 1e9)
            if cmd.reason != "stale":
                self.controller.commanded(now_ns, cmd.yaw_rate)     # the turn since a frame slows old answers
                self._publish_command(cmd.forward_speed, cmd.yaw_rate, header)
                commanded_ns = time.monotonic_ns()
            self.result_pub.publish(res)
        published_ns = time.monotonic_ns()
        if not a.provisional:
            self.exit_hist[d.exit_index] += 1
            self.source_hist[int(a.source)] += 1
            self.results_out.tick()
        self._record_steps(a, [answered_ns, commanded_ns, published_ns])

    def _record_steps(self, a: Answer, marks: list[int]) -> None:
        """The frame's step times (core/step_times.py), from its first answer by the drone's head:
        the engine's marks (arrived, taken, input ready) are on the same monotonic clock."""
        if a.source == Source.DEVICE and len(a.frame.marks) == 3:
            a.frame.marks += marks          # a frame's later answers (the cloud's, a fallback) are not counted
            self.step_times.record(a.frame.marks)

    def _publish_command(self, forward_speed: float, yaw_rate: float, header) -> None:
        msg = TwistStamped()
        msg.header = header
        msg.twist.linear.x = float(forward_speed)
        msg.twist.angular.z = float(yaw_rate)
        self.cmd_pub.publish(msg)

    def _watchdog(self) -> None:
        """Hover when results stop (camera gone, node overloaded); control never waits."""
        now = self.get_clock().now()
        with self._cmd_lock:
            stale = now.nanoseconds - self._last_result_ns > self.controller.config.timeout_s * 1e9
            if not stale or self._hovering:
                return
            self._hovering = True
            cmd = self.controller.hover()
            header = InferenceResult().header
            header.stamp = now.to_msg()
            self._publish_command(cmd.forward_speed, cmd.yaw_rate, header)     # not after a fresh answer's command

    def _publish_diagnostics(self) -> None:
        now = time.monotonic()
        engine, plan = self.engine, self.engine.plan
        c = engine.tracker.counters
        values = {
            "input_rate_hz": self.frames_in.rate(now),
            "output_rate_hz": self.results_out.rate(now),
            "frames_received": self.frames_in.total,
            "results_published": self.results_out.total,
            "frames_dropped_busy": engine.slot.dropped,
            "images_rejected": engine.rejected,
            "exit_histogram": " ".join(map(str, self.exit_hist.tolist())),
            "answered_device": int(self.source_hist[InferenceResult.SOURCE_DEVICE]),
            "answered_cloud": int(self.source_hist[InferenceResult.SOURCE_CLOUD]),
            "answered_fallback": int(self.source_hist[InferenceResult.SOURCE_DEVICE_FALLBACK]),
            "offloads_sent": c.sent, "offloads_in_flight": engine.tracker.in_flight,
            "offloads_late": c.late, "offloads_failed": c.failed, "offloads_expired": c.expired,
            "offload_skipped_no_cloud": c.skipped_no_cloud, "offload_skipped_full": c.skipped_full,
            "offload_skipped_late": c.skipped_late, "offloads_no_reply": engine.no_reply,
            "cloud_alive": sorted(self.link.clouds.alive) if self.link else "disabled",
            "split_point": plan.split,
            "exit_threshold": plan.threshold,
            "plan_mode": plan.mode,
            "plan_id": plan.plan_id,
            "model_id": self.model_id,
            **self.step_times.percentiles(),
        }
        level, msg = diag.OK, "ok"
        if engine.rejected:
            level, msg = diag.WARN, "images rejected"
        name = f"{self.get_fully_qualified_name()}: head"
        self.diag_pub.publish(diag.make_array(self.get_clock().now().to_msg(), name, self.model_id, level, msg, values))

    def close(self) -> None:
        self._stop.set()
        self.engine.slot.close()
        self.worker.join(timeout=5.0)
        if self.engine.transport is not None:
            self.engine.transport.close()
        self.engine.close()
        if self.link is not None:
            self.link.close()


def main(args=None) -> int:
    return run_node(DroneNode, args)


if __name__ == "__main__":
    raise SystemExit(main())
