"""The drone node: camera -> head of the early-exit CNN -> result + command at once.

Topics (relative, so a namespace or remapping places them):
  in   image               sensor_msgs/Image (sensor-data QoS; rgb8, bgr8, mono8)
  in   spinn/plan          spinn_ros/SplitPlan (reliable, transient local) from the monitor
  in   odom                nav_msgs/Odometry, only with goal.enabled (steer toward the goal when clear)
  out  spinn/result        spinn_ros/InferenceResult (stamp = source image stamp)
  out  cmd_vel             geometry_msgs/TwistStamped (stamp = source image stamp)
  out  /diagnostics        diagnostic_msgs/DiagnosticArray

Frame flow: the head runs stages [0, split) with its exits. A confident exit (or
the final one) answers at once, final. Otherwise the deepest device exit answers at
once as *provisional* and the split activation goes to the cloud over Zenoh; the
cloud's answer, if it comes before the frame's deadline, is published as final
with the same stamp; if not (or on any failure) the device answer is published
again as final (source DEVICE_FALLBACK). Control never waits on the network.

The camera callback only drops the frame into a one-slot mailbox; a worker thread
runs the model, so a slow frame never blocks the camera and a frame arriving while
the worker is busy replaces any older waiting one (counted as dropped).
"""
from __future__ import annotations

import math
import queue
import threading
import time
from dataclasses import dataclass

import numpy as np
import torch
from geometry_msgs.msg import TwistStamped
from nav_msgs.msg import Odometry
from rclpy.node import Node
from rclpy.time import Time
from sensor_msgs.msg import Image

from spinn_ros.msg import InferenceResult, SplitPlan

from ..core import codec
from ..core.backend import BACKENDS, staged_model
from ..core.controller import ControllerConfig, DroNetController
from ..core.device_emulation import SlowerDevice
from ..core.frame_slot import LatestSlot
from ..core.model_ref import load_model
from ..core.offload import InFlight, OffloadTracker
from ..core.preprocess import UnsupportedImage, to_model_input
from ..core.progressive import PLAIN_NETWORK, ExitDecision, HeadResult, run_head, run_tail
from ..ros import diagnostics as diag
from ..ros import qos
from ..ros.images import image_pixels
from ..ros.node_main import run_node
from ..ros.params import Param, ParameterError, declare, in_range, non_empty, on_change, one_of, threshold_or_plain, zenoh_params

ENCODINGS = {f"{d}-{c}": (codec.Dtype[d.upper()], codec.Codec[c.upper()])
             for d in ("f32", "f16", "u8") for c in ("none", "lz4", "zstd")}

PARAMS = [
    Param("checkpoint", "default", "model: 'default' (shipped), a checkpoint path, or random:<size>:<seed>",
          non_empty, read_only=True),
    Param("split_point", -1, "stages [0, split) run on the drone; -1 = the whole model (no offload)",
          in_range(-1, 255)),
    Param("exit_threshold", 0.8, "an exit answers when its top-1 softmax confidence reaches this, (0, 1]; "
          ".inf: the plain network (no early exit, exit heads skipped)", threshold_or_plain),
    Param("torch_threads", 1, "intra-op threads for the head, torch or onnxruntime (1: leave the other cores to ROS)",
          in_range(1, 64), read_only=True),
    Param("backend", "torch", "inference engine of the head: torch (eager) or onnxruntime (TensorRT, CUDA, "
          "else CPU provider; ONNX files exported on first use)", one_of(*BACKENDS), read_only=True),
    Param("diagnostics_period_s", 1.0, "period of /diagnostics messages, seconds",
          in_range(0.05, 60.0), read_only=True),
    Param("emulate.slowdown", 1.0, "emulate a drone computer this many times slower than this machine: each "
          "head is sleep-padded to k x its stages' idle cost, measured at start-up (1 = no emulation)",
          in_range(1.0, 100.0), read_only=True),
    Param("emulate.profile", "", "device profile whose stage costs the slowdown multiplies (default: the "
          "model's profile in profiles/, else costs measured at start-up)", read_only=True),
    Param("follow_plans", True, "apply SplitPlan messages from the monitor (split and threshold)"),
    Param("cloud.enabled", False, "offload frames no device exit is confident about to a cloud over Zenoh",
          read_only=True),
    Param("cloud.deadline_ms", 200.0, "latency budget per frame from its arrival; later cloud answers are discarded",
          in_range(1.0, 10000.0)),
    Param("cloud.late_grace_ms", 500.0, "keep a query open this long past its deadline, to count late replies",
          in_range(0.0, 10000.0)),
    Param("cloud.max_in_flight", 4, "offloads outstanding at once; beyond it the device answers alone",
          in_range(1, 64), read_only=True),
    Param("cloud.encoding", "u8-lz4", "split tensor encoding on the wire: <f32|f16|u8>-<none|lz4|zstd>",
          one_of(*ENCODINGS)),
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
    Param("goal.enabled", False, "steer toward goal.x, goal.y as well (needs odometry on 'odom')", read_only=True),
    Param("goal.x", 0.0, "goal x in the odometry frame, m", read_only=True),
    Param("goal.y", 0.0, "goal y in the odometry frame, m", read_only=True),
]


#: an offload needs at least this much of its frame's budget left to have a chance
MIN_OFFLOAD_BUDGET_NS = 5_000_000


@dataclass
class Frame:
    msg: Image
    seq: int
    arrived_ns: int            # time.monotonic_ns() at the camera callback


@dataclass(frozen=True)
class Policy:
    """Split, threshold and whether to offload, swapped as one object between frames."""

    split: int
    threshold: float
    plan_id: int = 0
    offload: bool = True


@dataclass
class Pending:
    """What finishing an offloaded frame needs, whichever way it ends."""

    policy: Policy
    provisional: ExitDecision | None
    activation: torch.Tensor
    device_s: float


@dataclass
class DeviceFallback:
    """Urgent worker job: finish a frame on the drone (its offload failed, no device exit)."""

    job: InFlight
    in_flight_ms: float = 0.0


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
        self.policy = Policy(self._resolve_split(p["split_point"]), p["exit_threshold"])
        self.device = self._slower_device(p)
        self.controller = DroNetController(self._controller_config(p))
        self.add_on_set_parameters_callback(on_change(PARAMS, self._apply_params))

        self.result_pub = self.create_publisher(InferenceResult, "spinn/result", qos.RESULTS)
        self.cmd_pub = self.create_publisher(TwistStamped, "cmd_vel", qos.RESULTS)
        self.diag_pub = self.create_publisher(diag.DiagnosticArray, "/diagnostics", qos.RESULTS)
        self.create_subscription(SplitPlan, "spinn/plan", self._on_plan, qos.LATCHED)
        self._pose: tuple[float, float, float] | None = None      # x, y, yaw from odometry (goal.enabled)
        if p["goal.enabled"]:
            self.create_subscription(Odometry, "odom", self._on_odom, qos.RESULTS)

        now = time.monotonic()
        self.frames_in = diag.RateCounter(now)
        self.results_out = diag.RateCounter(now)
        self.rejected = 0
        self.no_reply = 0         # offloads that ended with no reply at all, before their timeout
        self.exit_hist = np.zeros(self.model.num_exits, dtype=np.int64)
        self.source_hist = np.zeros(3, dtype=np.int64)     # by InferenceResult.SOURCE_*
        self._seq = 0
        self._last_result_ns = self.get_clock().now().nanoseconds
        self._hovering = False
        self._cmd_lock = threading.Lock()
        self.slot = LatestSlot()
        self.link = None
        self.tracker = OffloadTracker(p["cloud.max_in_flight"], self._on_expired)
        if p["cloud.enabled"]:
            self.link = self._open_link(p)

        self._stop = threading.Event()
        self.worker = threading.Thread(target=self._work, name="spinn-head", daemon=True)
        self.worker.start()
        # offloads leave through a thread of their own: a Zenoh query blocks its caller while the link's
        # queue is full (a dead or congested link), and that must stall offloading, never the worker
        self._sends: queue.SimpleQueue = queue.SimpleQueue()
        self.sender = threading.Thread(target=self._send_loop, name="spinn-offload-send", daemon=True)
        self.sender.start()
        self.create_subscription(Image, "image", self._on_image, qos.SENSOR)
        self.create_timer(p["diagnostics_period_s"], self._publish_diagnostics)
        self.create_timer(min(0.05, p["controller.timeout_s"] / 2), self._watchdog)
        self.get_logger().info(
            f"model {self.model_id} ({self.model.spec.name}, {self.model.num_stages} stages, "
            f"{self.model.num_exits} exits, {p['backend']}), split {self.policy.split}, threshold {self.policy.threshold}, "
            f"cloud {'via Zenoh ' + self.link.key if self.link else 'disabled'}")

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
            from ..core.profiler import find_profile, load_profile

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
        try:
            split = self._resolve_split(changed.get("split_point", self.policy.split))
        except ParameterError as exc:
            return str(exc)
        threshold = changed.get("exit_threshold", self.policy.threshold)
        if any(k.startswith("controller.") for k in changed):
            try:
                config = self._controller_config({**self.p, **changed})
            except ParameterError as exc:
                return str(exc)
            self.controller.config = config
        self.p.update(changed)
        self.policy = Policy(split, threshold, self.policy.plan_id, self.policy.offload)
        return None

    def _on_plan(self, plan: SplitPlan) -> None:
        if not self.p["follow_plans"]:
            return
        if plan.model_id and plan.model_id != self.model_id:
            self.get_logger().warn(f"ignoring plan {plan.plan_id} for model {plan.model_id} (running {self.model_id})",
                                   throttle_duration_sec=10.0)
            return
        if not 0 <= plan.split_point <= self.model.num_stages or threshold_or_plain(plan.exit_threshold):
            self.get_logger().error(f"ignoring invalid plan {plan.plan_id}: split {plan.split_point}, "
                                    f"threshold {plan.exit_threshold}")
            return
        # one assignment: the worker reads self.policy once per frame, so no frame mixes plans
        self.policy = Policy(plan.split_point, plan.exit_threshold, plan.plan_id, plan.offload)
        self.get_logger().info(f"plan {plan.plan_id}: split {plan.split_point}, threshold "
                               f"{plan.exit_threshold:.2f}, offload {plan.offload} ({plan.reason})")

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
        self._seq += 1
        self.frames_in.tick()
        self.slot.put(Frame(msg, self._seq, time.monotonic_ns()))

    # -- inference worker -------------------------------------------------------------------
    def _work(self) -> None:
        while not self._stop.is_set():
            item = self.slot.take(timeout=0.1)
            try:
                if isinstance(item, DeviceFallback):
                    self._finish_tail_on_device(item)
                elif item is not None:
                    self._process(item)
            except Exception as exc:  # noqa: BLE001 - one bad frame must not stop the drone
                if self._stop.is_set() or not self.context.ok():
                    return              # shutting down: SIGINT already invalidated the publishers
                self.get_logger().error(f"frame processing failed: {exc!r}", throttle_duration_sec=5.0)

    def _can_offload(self, policy: Policy) -> bool:
        if self.link is None or not policy.offload or policy.split >= self.model.num_stages:
            return False
        if not self.link.cloud_available:
            self.tracker.counters.skipped_no_cloud += 1
            return False
        if not self.tracker.has_room():
            self.tracker.counters.skipped_full += 1
            return False
        return True

    def _process(self, frame: Frame) -> None:
        try:
            pixels, encoding = image_pixels(frame.msg)
            x = to_model_input(pixels, self.model.spec.input_size, encoding)
        except UnsupportedImage as exc:
            self.rejected += 1
            self.get_logger().warn(f"rejected image (frame {frame.seq}): {exc}", throttle_duration_sec=5.0)
            return
        policy = self.policy
        head = run_head(self.model, x, policy.split, policy.threshold, offload=self._can_offload(policy))
        head.compute_s = self.device.pad(0, head.stages_run, head.compute_s, policy.threshold == PLAIN_NETWORK)
        if head.final is not None:
            self._publish(frame, head.final, policy, InferenceResult.SOURCE_DEVICE, device_s=head.compute_s)
            return
        if head.provisional is not None:
            self._publish(frame, head.provisional, policy, InferenceResult.SOURCE_DEVICE, device_s=head.compute_s,
                          provisional=True)
        self._offload(frame, policy, head)

    # -- offloading -------------------------------------------------------------------------
    def _offload(self, frame: Frame, policy: Policy, head: HeadResult) -> None:
        deadline = frame.arrived_ns + int(self.p["cloud.deadline_ms"] * 1e6)
        pending = Pending(policy, head.provisional, head.activation, head.compute_s)
        if deadline - time.monotonic_ns() < MIN_OFFLOAD_BUDGET_NS:
            self.tracker.counters.skipped_late += 1      # the head used up the budget: no reply could make it
            self._finish_locally(frame, pending)
            return
        job = self.tracker.begin(frame, pending, deadline)
        if job is None:   # cannot happen with one worker (room was checked), but never lose a frame
            self._finish_locally(frame, pending)
            return
        dtype, compression = ENCODINGS[self.p["cloud.encoding"]]
        act = head.activation
        if policy.split == 0:   # the cloud-only path sends the (model-sized) frame itself
            dtype, act = codec.Dtype.FRAME, (act[0] * 255).round().to(torch.uint8).permute(1, 2, 0).numpy()
        remaining_s = (deadline - time.monotonic_ns()) / 1e9
        frame_bytes = codec.encode_request(act, request_id=job.request_id, model_id=self.model_id, split=policy.split,
                                           exit_threshold=policy.threshold, dtype=dtype, codec=compression,
                                           budget_ms=max(remaining_s, 0.0) * 1e3)
        job.wire_bytes = len(frame_bytes)
        timeout = remaining_s + self.p["cloud.late_grace_ms"] / 1e3
        self._sends.put((frame_bytes, time.monotonic() + timeout, job.request_id))

    def _send_loop(self) -> None:
        while (item := self._sends.get()) is not None:
            frame_bytes, give_up, request_id = item
            done = lambda payload, why, rid=request_id: self._on_reply(rid, payload, why)  # noqa: E731
            if time.monotonic() >= give_up:     # held up behind a blocked send: the device has answered
                done(None, "not sent: the link was blocked past the frame's deadline")
                continue
            self.link.request(frame_bytes, give_up - time.monotonic(), done)

    def _on_reply(self, request_id: int, payload: bytes | None, why: str | None) -> None:
        """From a Zenoh thread: publish the refined answer, or fall back on the device."""
        reply = None
        if payload is not None:
            try:
                reply = codec.decode_reply(payload, num_exits=self.model.num_exits)
            except codec.WireError as exc:
                why = f"undecodable reply: {exc}"
            if isinstance(reply, codec.ErrorReply):
                why, reply = f"cloud error {getattr(reply.code, 'name', reply.code)}: {reply.message}", None
        job = self.tracker.finish(request_id, ok=reply is not None)
        if job is None:
            return      # late (already finished on the device) or unknown: discarded
        if reply is None:
            if why == self._no_reply_reason:
                self.no_reply += 1      # silent: denied, oversized or nobody serving the key (not a slow cloud)
            self.get_logger().warn(f"offload of frame {job.frame.seq} failed: {why}", throttle_duration_sec=5.0)
            self._finish_on_device(job)
            return
        rtt_ms = (time.monotonic_ns() - job.sent_ns) / 1e6
        decision = ExitDecision(reply.exit_index, reply.collision_prob, reply.confidence, reply.steering,
                                reply.steering_bin)
        ctx: Pending = job.context
        self._publish(job.frame, decision, ctx.policy, InferenceResult.SOURCE_CLOUD, device_s=ctx.device_s,
                      network_ms=max(rtt_ms - reply.compute_ms - reply.queue_ms, 0.0), cloud_ms=reply.compute_ms,
                      queue_ms=reply.queue_ms, wire_bytes=job.wire_bytes)

    def _on_expired(self, job: InFlight) -> None:
        # how long it was out is a lower bound on its round trip: the monitor learns from it
        self._finish_on_device(job, in_flight_ms=(time.monotonic_ns() - job.sent_ns) / 1e6)

    def _finish_on_device(self, job: InFlight, in_flight_ms: float = 0.0) -> None:
        """The frame's answer is the device's: the provisional one, or (none) compute the tail here."""
        ctx: Pending = job.context
        if ctx.provisional is not None:
            self._publish(job.frame, ctx.provisional, ctx.policy, InferenceResult.SOURCE_DEVICE_FALLBACK,
                          device_s=ctx.device_s, wire_bytes=job.wire_bytes, network_ms=in_flight_ms)
        else:
            self.slot.put_urgent(DeviceFallback(job, in_flight_ms))

    def _finish_locally(self, frame: Frame, ctx: Pending) -> None:
        """Never offloaded after all: the deepest device exit answers, or the tail runs here."""
        if ctx.provisional is not None:
            self._publish(frame, ctx.provisional, ctx.policy, InferenceResult.SOURCE_DEVICE_FALLBACK,
                          device_s=ctx.device_s)
        else:
            self._finish_tail_on_device_now(frame, ctx)

    def _finish_tail_on_device(self, fb: DeviceFallback) -> None:
        self._finish_tail_on_device_now(fb.job.frame, fb.job.context, fb.job.wire_bytes, fb.in_flight_ms)

    def _finish_tail_on_device_now(self, frame: Frame, ctx: Pending, wire_bytes: int = 0,
                                   in_flight_ms: float = 0.0) -> None:
        t0 = time.perf_counter()
        decision = run_tail(self.model, ctx.activation, ctx.policy.split, ctx.policy.threshold)[0]
        stop = self.model.exit_stages[decision.exit_index] + 1
        tail_s = self.device.pad(ctx.policy.split, stop, time.perf_counter() - t0, ctx.policy.threshold == PLAIN_NETWORK)
        self._publish(frame, decision, ctx.policy, InferenceResult.SOURCE_DEVICE_FALLBACK,
                      device_s=ctx.device_s + tail_s, wire_bytes=wire_bytes, network_ms=in_flight_ms)

    # -- output -----------------------------------------------------------------------------
    def _publish(self, frame: Frame, d: ExitDecision, policy: Policy, source: int, *, device_s: float,
                 provisional: bool = False, network_ms: float = 0.0, cloud_ms: float = 0.0, queue_ms: float = 0.0,
                 wire_bytes: int = 0) -> None:
        stamp_ns = Time.from_msg(frame.msg.header.stamp).nanoseconds
        now_ns = self.get_clock().now().nanoseconds
        res = InferenceResult(
            header=frame.msg.header, frame_seq=frame.seq, collision_probability=d.collision_prob,
            steering=d.steering, exit_index=d.exit_index, num_exits=self.model.num_exits, confidence=d.confidence,
            provisional=provisional, source=source, split_point=policy.split, exit_threshold=policy.threshold,
            plan_id=policy.plan_id, device_compute_ms=device_s * 1e3, network_ms=network_ms,
            offload_bytes=wire_bytes, cloud_compute_ms=cloud_ms, cloud_queue_ms=queue_ms,
            latency_ms=(now_ns - stamp_ns) / 1e6)
        self.result_pub.publish(res)
        if not provisional:
            self.exit_hist[d.exit_index] += 1
            self.source_hist[source] += 1
            self.results_out.tick()
        with self._cmd_lock:
            self._last_result_ns = now_ns
            self._hovering = False
            cmd = self.controller.update(d.collision_prob, d.steering, stamp_ns, self._heading_error(), provisional,
                                         age_s=(now_ns - stamp_ns) / 1e9)
            if cmd.reason != "stale":
                self.controller.commanded(now_ns, cmd.yaw_rate)     # the turn since a frame slows old answers
        if cmd.reason != "stale":
            self._publish_command(cmd.forward_speed, cmd.yaw_rate, frame.msg.header)

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
        self._publish_command(cmd.forward_speed, cmd.yaw_rate, header)

    def _publish_diagnostics(self) -> None:
        now = time.monotonic()
        c = self.tracker.counters
        values = {
            "input_rate_hz": self.frames_in.rate(now),
            "output_rate_hz": self.results_out.rate(now),
            "frames_received": self.frames_in.total,
            "results_published": self.results_out.total,
            "frames_dropped_busy": self.slot.dropped,
            "images_rejected": self.rejected,
            "exit_histogram": " ".join(map(str, self.exit_hist.tolist())),
            "answered_device": int(self.source_hist[InferenceResult.SOURCE_DEVICE]),
            "answered_cloud": int(self.source_hist[InferenceResult.SOURCE_CLOUD]),
            "answered_fallback": int(self.source_hist[InferenceResult.SOURCE_DEVICE_FALLBACK]),
            "offloads_sent": c.sent, "offloads_in_flight": self.tracker.in_flight,
            "offloads_late": c.late, "offloads_failed": c.failed, "offloads_expired": c.expired,
            "offload_skipped_no_cloud": c.skipped_no_cloud, "offload_skipped_full": c.skipped_full,
            "offload_skipped_late": c.skipped_late, "offloads_no_reply": self.no_reply,
            "cloud_alive": sorted(self.link.clouds.alive) if self.link else "disabled",
            "split_point": self.policy.split,
            "exit_threshold": self.policy.threshold,
            "plan_id": self.policy.plan_id,
            "model_id": self.model_id,
        }
        level, msg = diag.OK, "ok"
        if self.rejected:
            level, msg = diag.WARN, "images rejected"
        name = f"{self.get_fully_qualified_name()}: head"
        self.diag_pub.publish(diag.make_array(self.get_clock().now().to_msg(), name, self.model_id, level, msg, values))

    def close(self) -> None:
        self._stop.set()
        self.slot.close()
        self.worker.join(timeout=5.0)
        self._sends.put(None)
        self.sender.join(timeout=5.0)
        self.tracker.close()
        if self.link is not None:
            self.link.close()


def main(args=None) -> int:
    return run_node(DroneNode, args)


if __name__ == "__main__":
    raise SystemExit(main())
