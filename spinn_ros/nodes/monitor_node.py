"""The monitor node: measures the link and the cloud, and re-plans split and threshold.

It lives beside its drone (same namespace, same side of the link) and:
  in   spinn/result      spinn_ros/InferenceResult: offload outcomes (loss, a slowing link, cloud speed)
  in   Zenoh             cloud liveliness tokens, cloud load reports, its own probes (RTT; bandwidth trains)
  out  spinn/link        spinn_ros/LinkState, periodically (reliable, transient local)
  out  spinn/plan        spinn_ros/SplitPlan, when the decision changes (reliable, transient local)
  out  /diagnostics

Every control period the estimates go through a change detector with hysteresis; only a
lasting change (or the cloud appearing/vanishing) triggers a new decision, and only a
decision that differs from the plan in force is published (or the same plan again, with new
predictions, when the drone's settings changed under it), with its reason logged. Those
rules are the pure core's (core/replan.py); this node adapts them to ROS and Zenoh.
"""
from __future__ import annotations

import time
from typing import TYPE_CHECKING, Callable

from rclpy.node import Node

from spinn_ros.msg import InferenceResult, LinkState, SplitPlan

from ..core.backend import BACKENDS
from ..core.calibration import load_calibration
from ..core.checkpoint import calibration_path, checkpoint_path
from ..core.device_emulation import NO_SLOWDOWN
from ..core.drone_engine import Settings
from ..core.model_ref import is_random_ref, load_model
from ..core.performance import PerformanceModel
from ..core.prediction import Conditions
from ..core.probe_train import TRAIN_LENGTH, ProbeTrains
from ..core.profile import find_profile, load_profile
from ..core.replan import Replanner
from ..core.scheduler import STRATEGIES, Decision, Scheduler
from ..core.sla import load_sla
from ..ros import diagnostics as diag
from ..ros import qos
from ..ros.node_main import run_node
from ..ros.params import Param, ParameterError, declare, in_range, non_empty, on_change, one_of, zenoh_params
from ..ros.remote_params import RemoteParameters

if TYPE_CHECKING:
    from ..transport.zenoh_link import ProbeEcho

#: the drone's settings the plan depends on, with the drone node's own defaults (until it answers)
DRONE_DEFAULTS = {"cloud.deadline_ms": Settings.deadline_ms, "cloud.encoding": Settings.encoding,
                  "cloud.max_in_flight": Settings.max_in_flight, "emulate.slowdown": NO_SLOWDOWN}

PARAMS = [
    Param("checkpoint", "default", "the drone's model ('default', a path); plans carry its id", non_empty,
          read_only=True),
    Param("calibration", "", "calibration file (default: the one beside the checkpoint)", read_only=True),
    Param("sla", "", "SLA file (default: the package's config/sla.yaml)", read_only=True),
    Param("strategy", "spinn", "planner: spinn or a baseline (" + ", ".join(STRATEGIES) + ")",
          one_of(*STRATEGIES), read_only=True),
    Param("profiles_dir", "", "where the device and cloud profiles are (default: the package's profiles/)",
          read_only=True),
    Param("device_profile", "", "device profile file (default: found in profiles_dir for this host)",
          read_only=True),
    Param("cloud_profile", "", "cloud profile file (default: found in profiles_dir)", read_only=True),
    Param("backend", "torch", "the drone's backend: plans use the device profile measured on it",
          one_of(*BACKENDS), read_only=True),
    Param("cloud_backend", "torch", "the cloud's backend: plans use the cloud profile measured on it",
          one_of(*BACKENDS), read_only=True),
    Param("drone_node", "spinn_drone", "the drone node planned for (relative to this namespace): its "
          "cloud.deadline_ms, cloud.encoding, cloud.max_in_flight and emulate.slowdown are read from it and "
          "followed", non_empty, read_only=True),
    Param("frame_rate_hz", 15.0, "camera rate the drone sees", in_range(0.1, 1000.0)),
    Param("device_slowdown", 1.0, "drone compute relative to its profile beyond what the drone emulates (a "
          "throttled drone): the planner multiplies the drone's emulate.slowdown by it", in_range(0.01, 100.0)),
    Param("period_s", 0.1, "control period: estimates checked for change this often", in_range(0.01, 10.0),
          read_only=True),
    Param("link_state_period_s", 0.5, "period of spinn/link messages", in_range(0.05, 60.0), read_only=True),
    Param("probe.rtt_period_s", 0.2, "small round-trip probes this often (0: none)", in_range(0.0, 60.0),
          read_only=True),
    Param("probe.bandwidth_period_s", 0.5, "bandwidth probe trains at most this often (0: none)",
          in_range(0.0, 60.0), read_only=True),
    Param("probe.bandwidth_bytes", 16384, "largest payload in a bandwidth probe train, bytes",
          in_range(4096, 1 << 20), read_only=True),
    Param("probe.max_share", 0.05, "while the drone offloads, probe trains use at most this share of the "
          "estimated bandwidth, (0, 1]",
          in_range(0.0, 1.0, lo_open=True), read_only=True),
    Param("probe.timeout_s", 1.0, "a probe unanswered this long counts as lost", in_range(0.01, 60.0),
          read_only=True),
    Param("min_samples", 3, "link samples needed before the first link-based decision", in_range(0, 1000)),
    Param("refresh_s", 5.0, "re-plan at least this often, even with no change in the estimates (the plan in "
          "force stays unless another is better by more than the SLA's tolerances); 0: only on a change",
          in_range(0.0, 3600.0), read_only=True),
    Param("diagnostics_period_s", 1.0, "period of /diagnostics messages, seconds", in_range(0.05, 60.0),
          read_only=True),
    *zenoh_params(connect="tls/127.0.0.1:7447"),
]


class MonitorNode(Node):
    def __init__(self, **kwargs):
        super().__init__("spinn_monitor", **kwargs)
        p = declare(self, PARAMS)
        self.p = p
        self.scheduler, self.model_id = self._build_scheduler(p)
        # (a bandwidth period of 0 sends no trains: the pace is then never read, any positive one will do)
        self.replanner = Replanner(self.scheduler, p["min_samples"], ProbeTrains(
            max_bytes=p["probe.bandwidth_bytes"], max_share=p["probe.max_share"],
            period_s=max(p["probe.bandwidth_period_s"], 1e-3)), p["refresh_s"])
        self.add_on_set_parameters_callback(on_change(PARAMS, self._apply_params))
        # the drone's settings, from the drone itself (its defaults until it answers)
        self.drone = dict(DRONE_DEFAULTS)
        self.drone_settings = RemoteParameters(self, p["drone_node"], list(DRONE_DEFAULTS), self._on_drone_settings)

        self.plan_pub = self.create_publisher(SplitPlan, "spinn/plan", qos.LATCHED)
        self.link_pub = self.create_publisher(LinkState, "spinn/link", qos.LATCHED)
        self.diag_pub = self.create_publisher(diag.DiagnosticArray, "/diagnostics", qos.RESULTS)
        self.create_subscription(InferenceResult, "spinn/result", self.replanner.on_result, qos.RESULTS)
        self.link = self._open_link(p)
        self._probing: dict[str, float] = {}      # probe kind -> when it may be sent again
        self.create_timer(p["period_s"], self._control)
        self.create_timer(p["link_state_period_s"], self._publish_link_state)
        self.create_timer(p["diagnostics_period_s"], self._publish_diagnostics)
        if p["probe.rtt_period_s"] > 0:
            self.create_timer(p["probe.rtt_period_s"], self._rtt_probe)
        if p["probe.bandwidth_period_s"] > 0:
            self.create_timer(p["probe.bandwidth_period_s"], self._probe_train)
        self._control()     # a plan at once: device only until the link is measured

    # -- set-up -----------------------------------------------------------------------------
    def _build_scheduler(self, p: dict) -> tuple[Scheduler, str]:
        ref = p["checkpoint"]
        if is_random_ref(ref):
            raise ParameterError(f"parameter 'checkpoint'={ref!r}: the monitor needs a calibrated checkpoint")
        try:
            model, model_id = load_model(ref)
            cal_file = p["calibration"] or calibration_path(checkpoint_path(ref))
            calibration = load_calibration(cal_file, model_id)
            profiles = p["profiles_dir"] or None
            device = load_profile(p["device_profile"] or find_profile(model_id, "device", root=profiles,
                                                                      backend=p["backend"]),
                                  model_id, "device", p["backend"])
            cloud = load_profile(p["cloud_profile"] or find_profile(model_id, "cloud", root=profiles,
                                                                    backend=p["cloud_backend"]),
                                 model_id, "cloud", p["cloud_backend"])
            sla = load_sla(p["sla"] or None)
        except (OSError, ValueError) as exc:
            raise ParameterError(f"monitor set-up: {exc}") from exc
        del model
        self.get_logger().info(f"planning for model {model_id} with strategy {p['strategy']}, SLA {sla.name}, "
                               f"profiles {device.source} ({device.backend}), {cloud.source} ({cloud.backend})")
        return Scheduler(PerformanceModel(device, cloud, calibration), sla, p["strategy"]), model_id

    def _open_link(self, p: dict):
        from ..transport.zenoh_link import MonitorLink, monitor_name, settings_from_params

        try:   # its own identity: it may read the cloud's keys, never query a drone's tail
            settings = settings_from_params(p, monitor_name(self.get_namespace()), self.get_logger().warn)
        except ValueError as exc:
            raise ParameterError(f"zenoh parameters: {exc}") from exc
        return MonitorLink(settings, self._on_load, self.replanner.on_clouds)

    def _apply_params(self, changed: dict) -> None:
        """New settings at run time (frame rate, device slowdown, min_samples): the next control period
        re-plans for them. The drone's own settings come from the drone (_on_drone_settings)."""
        self.p = {**self.p, **changed}
        self.replanner.min_samples = self.p["min_samples"]
        self.replanner.force("parameters changed: " + ", ".join(sorted(changed)), republish=True)

    # -- measurements (ROS and Zenoh threads) -------------------------------------------------
    def _on_load(self, cloud: str, load: dict) -> None:
        self.replanner.on_cloud_load(load)

    def _out(self, kind: str, now: float) -> bool:
        """A probe of this kind is out (and not yet given up on)."""
        return now < self._probing.get(kind, 0.0)

    def _rtt_probe(self) -> None:
        if self._out("bw", time.monotonic()):
            return      # it would time the train's queue, not the round trip
        self._probe("rtt", 64, 1, lambda echoes: self.replanner.on_probe(
            None if echoes[0] is None else echoes[0].reply_s * 1e3))

    def _probe_train(self) -> None:
        """A bandwidth probe train when one is due (core/probe_train.py: its size and pace)."""
        now = time.monotonic()
        if self.link.clouds.alive and not self._out("bw", now):     # checked before booking the next train
            nbytes = self.replanner.probe_train_due(now)
            if nbytes is not None:
                # spacing as the cloud saw it arrive: the replies' adds both ends' scheduling
                self._probe("bw", nbytes, TRAIN_LENGTH, lambda echoes: self.replanner.on_probe_train(
                    nbytes, [None if e is None else e.received_s * 1e3 for e in echoes]))

    def _probe(self, kind: str, nbytes: int, count: int, report: Callable[[list[ProbeEcho | None]], None]) -> None:
        """``count`` probes of ``nbytes`` back to back to a live cloud; ``report(ProbeEcho | None per probe)``."""
        clouds = sorted(self.link.clouds.alive)
        now = time.monotonic()
        if not clouds or self._out(kind, now):
            return          # nothing to probe, or the last one of this kind is still out
        timeout = self.p["probe.timeout_s"]
        self._probing[kind] = now + 2 * timeout      # a probe whose end never comes blocks no longer

        def done(echoes: list[ProbeEcho | None]) -> None:
            self._probing.pop(kind, None)
            error, self.link.last_probe_error = self.link.last_probe_error, None
            if error:
                self.get_logger().error(f"{error} (counted as lost; is the cloud another version?)",
                                        throttle_duration_sec=5.0)
            report(echoes)

        try:
            self.link.probe(clouds[0], nbytes, 16, timeout, done, count)
        except Exception as exc:  # noqa: BLE001 - zenoh raises its own error types; a probe is best effort
            self._probing.pop(kind, None)
            self.get_logger().warn(f"probe failed: {exc}", throttle_duration_sec=5.0)

    # -- planning -----------------------------------------------------------------------------
    def _settings(self) -> dict:
        """The drone's settings the plan is made for (``LinkEstimator.conditions``)."""
        d = self.drone
        return {"frame_rate_hz": self.p["frame_rate_hz"], "deadline_ms": d["cloud.deadline_ms"],
                "encoding": d["cloud.encoding"], "max_in_flight": d["cloud.max_in_flight"],
                "device_slowdown": d["emulate.slowdown"] * self.p["device_slowdown"]}

    def _on_drone_settings(self, values: dict) -> None:
        changed = {k: v for k, v in values.items() if self.drone.get(k) != v}
        self.drone.update(values)
        if changed:
            what = ", ".join(f"{k}={v}" for k, v in sorted(changed.items()))
            self.get_logger().info(f"drone settings from {self.drone_settings.fqn}: {what}")
            self.replanner.force(f"drone parameters changed: {what}", republish=True)

    def _control(self) -> None:
        new_plan = self.replanner.step(time.monotonic(), **self._settings())
        if new_plan is not None:
            self._publish_plan(*new_plan)

    def _publish_plan(self, d: Decision, why: str, c: Conditions) -> None:
        """``d``: the plan the replanner just put in force."""
        plan_id = self.replanner.plan_id
        msg = SplitPlan(plan_id=plan_id, model_id=self.model_id, **d.plan_fields())
        msg.reason = f"{why}; {d.reason}"
        msg.header.stamp = self.get_clock().now().to_msg()
        self.plan_pub.publish(msg)
        self.get_logger().info(
            f"plan {plan_id}: split {msg.split_point}, threshold {msg.exit_threshold:.3f}, {msg.mode}, offload "
            f"{msg.offload}, predicted p{self.scheduler.sla.percentile:g} {msg.predicted_latency_ms:.1f} ms, "
            f"accuracy {msg.predicted_accuracy:.3f} (link {c.bandwidth_mbps:.1f} Mbit/s, rtt {c.rtt_ms:.1f} ms, "
            f"loss {c.loss_rate:.2f}, cloud {'up' if c.cloud_alive else 'down'}) -- {msg.reason}")

    def _publish_link_state(self) -> None:
        msg = LinkState(**self.replanner.link_state_fields())
        msg.header.stamp = self.get_clock().now().to_msg()
        self.link_pub.publish(msg)

    def _publish_diagnostics(self) -> None:
        values = self.replanner.link_state_fields()
        plan = self.replanner.plan
        values.update({"plan_id": self.replanner.plan_id, "plan_changes": self.replanner.plan_changes,
                       "split_point": plan.split if plan else -1,
                       "exit_threshold": plan.threshold if plan else 0.0,
                       "feasible": plan.feasible if plan else False,
                       "cloud_slowdown": self.replanner.cloud_slowdown(),
                       "drone_settings": (f"from {self.drone_settings.fqn}" if self.drone_settings.fetched
                                          else f"defaults: {self.drone_settings.fqn} not reached yet"),
                       **{f"drone.{k}": v for k, v in sorted(self.drone.items())}})
        level = diag.OK if plan is None or plan.feasible else diag.WARN
        text = "plan meets the SLA" if level == diag.OK else "no plan meets the SLA: safest plan in force"
        self.diag_pub.publish(diag.make_array(self.get_clock().now().to_msg(),
                                              f"{self.get_fully_qualified_name()}: planner", self.model_id, level,
                                              text, values))

    def close(self) -> None:
        self.link.close()


def main(args=None) -> int:
    return run_node(MonitorNode, args)


if __name__ == "__main__":
    raise SystemExit(main())
