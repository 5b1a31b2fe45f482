"""The drone node: camera -> head of the early-exit CNN -> result + command at once.

Topics (relative, so a namespace or remapping places them):
  in   image               sensor_msgs/Image (sensor-data QoS; rgb8, bgr8, mono8)
  out  spinn/result        spinn_ros/InferenceResult (stamp = source image stamp)
  out  cmd_vel             geometry_msgs/TwistStamped (stamp = source image stamp)
  out  /diagnostics        diagnostic_msgs/DiagnosticArray

The camera callback only drops the frame into a one-slot mailbox; a worker thread
runs the model, so a slow frame never blocks the camera and a frame arriving while
the worker is busy replaces any older waiting one (counted as dropped).
"""
from __future__ import annotations

import threading
import time
from dataclasses import dataclass

import numpy as np
import torch
from geometry_msgs.msg import TwistStamped
from rclpy.node import Node
from rclpy.time import Time
from sensor_msgs.msg import Image

from spinn_ros.msg import InferenceResult

from ..core.controller import Command, ControllerConfig, DroNetController
from ..core.frame_slot import LatestSlot
from ..core.model_ref import load_model
from ..core.preprocess import UnsupportedImage, to_model_input
from ..core.progressive import ExitDecision, run_head
from ..ros import diagnostics as diag
from ..ros import qos
from ..ros.images import image_pixels
from ..ros.node_main import run_node
from ..ros.params import Param, ParameterError, declare, in_range, non_empty, on_change

PARAMS = [
    Param("checkpoint", "default", "model: 'default' (shipped), a checkpoint path, or random:<size>:<seed>",
          non_empty, read_only=True),
    Param("split_point", -1, "stages [0, split) run on the drone; -1 = the whole model (no offload)",
          in_range(-1, 255)),
    Param("exit_threshold", 0.8, "an exit answers when its top-1 softmax confidence reaches this, (0, 1]",
          in_range(0.0, 1.0, lo_open=True)),
    Param("torch_threads", 1, "torch intra-op threads for the head (1: leave the other cores to ROS)",
          in_range(1, 64), read_only=True),
    Param("diagnostics_period_s", 1.0, "period of /diagnostics messages, seconds",
          in_range(0.05, 60.0), read_only=True),
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
]


@dataclass
class Frame:
    msg: Image
    seq: int
    received_ns: int


@dataclass(frozen=True)
class Policy:
    """Split and threshold, swapped as one object so a frame never sees half a change."""

    split: int
    threshold: float
    plan_id: int = 0


class DroneNode(Node):
    def __init__(self, **kwargs):
        super().__init__("spinn_drone", **kwargs)
        p = declare(self, PARAMS)
        torch.set_num_threads(p["torch_threads"])
        try:
            self.model, self.model_id = load_model(p["checkpoint"])
        except (OSError, ValueError) as exc:
            raise ParameterError(f"parameter 'checkpoint'={p['checkpoint']!r}: {exc}") from exc
        self.policy = Policy(self._resolve_split(p["split_point"]), p["exit_threshold"])
        self.controller = DroNetController(self._controller_config(p))
        self.add_on_set_parameters_callback(on_change(PARAMS, self._apply_params))

        self.result_pub = self.create_publisher(InferenceResult, "spinn/result", qos.RESULTS)
        self.cmd_pub = self.create_publisher(TwistStamped, "cmd_vel", qos.RESULTS)
        self.diag_pub = self.create_publisher(diag.DiagnosticArray, "/diagnostics", qos.RESULTS)
        self.create_subscription(Image, "image", self._on_image, qos.SENSOR)

        now = time.monotonic()
        self.frames_in = diag.RateCounter(now)
        self.results_out = diag.RateCounter(now)
        self.rejected = 0
        self.exit_hist = np.zeros(self.model.num_exits, dtype=np.int64)
        self._seq = 0
        self._last_result_ns = self.get_clock().now().nanoseconds
        self._hovering = False
        self._cmd_lock = threading.Lock()
        self.slot = LatestSlot()
        self._stop = threading.Event()
        self.worker = threading.Thread(target=self._work, name="spinn-head", daemon=True)
        self.worker.start()
        self.create_timer(p["diagnostics_period_s"], self._publish_diagnostics)
        self.create_timer(min(0.05, p["controller.timeout_s"] / 2), self._watchdog)
        self.get_logger().info(
            f"model {self.model_id} ({self.model.spec.name}, {self.model.num_stages} stages, "
            f"{self.model.num_exits} exits), split {self.policy.split}, threshold {self.policy.threshold}")

    # -- parameters ---------------------------------------------------------------
    def _resolve_split(self, split: int) -> int:
        n = self.model.num_stages
        split = n if split == -1 else split
        if not 0 <= split <= n:
            raise ParameterError(f"parameter 'split_point'={split} is invalid: must be -1 or in [0, {n}] "
                                 f"for model '{self.model.spec.name}'")
        return split

    @staticmethod
    def _controller_config(p: dict) -> ControllerConfig:
        return ControllerConfig(**{k.split(".", 1)[1]: v for k, v in p.items() if k.startswith("controller.")})

    def _apply_params(self, changed: dict) -> str | None:
        try:
            split = self._resolve_split(changed.get("split_point", self.policy.split))
        except ParameterError as exc:
            return str(exc)
        threshold = changed.get("exit_threshold", self.policy.threshold)
        self.policy = Policy(split, threshold, self.policy.plan_id)
        ctrl = {k: v for k, v in changed.items() if k.startswith("controller.")}
        if ctrl:
            current = {f"controller.{k}": v for k, v in vars(self.controller.config).items()}
            self.controller.config = self._controller_config({**current, **ctrl})
        return None

    # -- camera path: never blocks ---------------------------------------------------
    def _on_image(self, msg: Image) -> None:
        self._seq += 1
        self.frames_in.tick()
        self.slot.put(Frame(msg, self._seq, self.get_clock().now().nanoseconds))

    # -- inference worker ---------------------------------------------------------------
    def _work(self) -> None:
        while not self._stop.is_set():
            frame = self.slot.take(timeout=0.1)
            if frame is not None:
                self._process(frame)

    def _process(self, frame: Frame) -> None:
        try:
            pixels, encoding = image_pixels(frame.msg)
            x = to_model_input(pixels, self.model.spec.input_size, encoding)
        except UnsupportedImage as exc:
            self.rejected += 1
            self.get_logger().warn(f"rejected image (frame {frame.seq}): {exc}", throttle_duration_sec=5.0)
            return
        policy = self.policy
        head = run_head(self.model, x, policy.split, policy.threshold, offload=False)
        self._publish(frame, head.final, policy, provisional=False, source=InferenceResult.SOURCE_DEVICE,
                      device_s=head.compute_s)

    def _publish(self, frame: Frame, d: ExitDecision, policy: Policy, *, provisional: bool, source: int,
                 device_s: float) -> None:
        res = InferenceResult()
        res.header = frame.msg.header
        res.frame_seq = frame.seq
        res.collision_probability = d.collision_prob
        res.steering = d.steering
        res.exit_index = d.exit_index
        res.num_exits = self.model.num_exits
        res.confidence = d.confidence
        res.provisional = provisional
        res.source = source
        res.split_point = policy.split
        res.exit_threshold = policy.threshold
        res.plan_id = policy.plan_id
        res.device_compute_ms = device_s * 1e3
        now_ns = self.get_clock().now().nanoseconds
        res.latency_ms = (now_ns - Time.from_msg(frame.msg.header.stamp).nanoseconds) / 1e6
        self.result_pub.publish(res)
        if not provisional:
            self.exit_hist[d.exit_index] += 1
            self.results_out.tick()
        with self._cmd_lock:
            self._last_result_ns = now_ns
            self._hovering = False
            cmd = self.controller.update(d.collision_prob, d.steering, Time.from_msg(frame.msg.header.stamp).nanoseconds)
        self._publish_command(cmd, frame.msg.header)

    def _publish_command(self, cmd: Command, header) -> None:
        msg = TwistStamped()
        msg.header = header
        msg.twist.linear.x = float(cmd.forward_speed)
        msg.twist.angular.z = float(cmd.yaw_rate)
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
        self._publish_command(cmd, header)

    def _publish_diagnostics(self) -> None:
        now = time.monotonic()
        values = {
            "input_rate_hz": self.frames_in.rate(now),
            "output_rate_hz": self.results_out.rate(now),
            "frames_received": self.frames_in.total,
            "results_published": self.results_out.total,
            "frames_dropped_busy": self.slot.dropped,
            "images_rejected": self.rejected,
            "exit_histogram": " ".join(map(str, self.exit_hist.tolist())),
            "split_point": self.policy.split,
            "exit_threshold": self.policy.threshold,
            "plan_id": self.policy.plan_id,
            "model_id": self.model_id,
        }
        level = diag.WARN if self.rejected else diag.OK
        msg = "images rejected" if self.rejected else "ok"
        self.diag_pub.publish(diag.make_array(self.get_clock().now().to_msg(), f"{self.get_name()}: head",
                                              self.model_id, level, msg, values))

    def close(self) -> None:
        self._stop.set()
        self.slot.close()
        self.worker.join(timeout=5.0)


def main(args=None) -> int:
    return run_node(DroneNode, args)


if __name__ == "__main__":
    raise SystemExit(main())
