"""The drone node's pass-through: what a camera frame's answer pays besides the model.

A camera publisher (this process) sends frames to a real drone node process over DDS (the
package's FastDDS transports, sensor-data QoS) and times each frame until its result arrives
back here. The node reports, per frame, its model compute (``device_compute_ms``) and its own
latency from the image stamp to its answer (``latency_ms``, just before the command and the
result go out), so each frame splits into

    in  = latency_ms - device_compute_ms - preprocessing    (DDS in, the hand-off to the worker)
    out = (arrival here - publish) - latency_ms              (publishing both, DDS out, the receiving callback)

``spinn profile`` stores both in the device profile (``hops``) for the performance model, which
adds them to every answer; bench/bench_node_overhead.py tabulates the same run per camera size.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np

#: the drone node under measurement listens here (not /camera: a real camera may be running)
CAMERA = "/spinn_profile/camera"
WARMUP = 20
QUIET_S = 2.0       # no answer for this long after the frames: the node answered all it will


@dataclass
class NodeRun:
    """One drone node's frames: per answered frame after the warm-up (``WARMUP`` frames before the
    ``sent`` measured ones) the times in ms."""
    sent: int
    e2e_ms: list[float] = field(default_factory=list)         # publish -> result here
    device_ms: list[float] = field(default_factory=list)      # the node's model compute
    node_ms: list[float] = field(default_factory=list)        # stamp -> the answer (latency_ms), in the node
    steps: dict[str, float] = field(default_factory=dict)     # the node's step percentiles (/diagnostics)

    @property
    def received(self) -> int:
        return len(self.e2e_ms)


def run_drone_node(ros, checkpoint: str, frames: np.ndarray, n: int, rate_hz: float, backend: str = "torch",
                   steps: bool = False) -> NodeRun:
    """Publish ``n`` frames (cycling ``frames``, uint8 HxWx3) at ``rate_hz`` to a drone node
    (no cloud) started in ``ros`` (a tools.harness.RosHarness); collect its results."""
    from diagnostic_msgs.msg import DiagnosticArray
    from sensor_msgs.msg import Image

    from ..msg import InferenceResult
    from ..ros import qos
    from ..ros.images import fill_image
    from . import launch_spec
    from .waiting import wait_until

    spec = launch_spec.drone(camera_topic=CAMERA, backend=backend,
                             overrides={"checkpoint": checkpoint, "cloud.enabled": False})[0]
    proc = ros.start(spec)
    sent: dict[int, int] = {}
    arrivals: list[tuple[int, int, float, float]] = []      # (seq, received ns, device ms, node latency ms)
    node_steps: dict[str, float] = {}

    def on_result(msg) -> None:
        arrivals.append((int(msg.header.frame_id), time.monotonic_ns(), msg.device_compute_ms, msg.latency_ms))

    def settled() -> bool:
        """The last frame answered, or answers stopped coming: a busy node answers the newest frame
        and drops the ones it replaced (the mailbox), best-effort DDS may drop one; the hops are
        timed on the frames answered, whichever they are."""
        if not arrivals:
            return False
        return arrivals[-1][0] == n + WARMUP - 1 or time.monotonic_ns() - arrivals[-1][1] > QUIET_S * 1e9

    def on_diagnostics(arr) -> None:
        for st in arr.status:
            if st.name.startswith("/spinn_drone"):
                node_steps.update({kv.key: float(kv.value) for kv in st.values if kv.key.startswith("step_")})

    sub = ros.node.create_subscription(InferenceResult, "/spinn/result", on_result, qos.RESULTS)
    diag_sub = ros.node.create_subscription(DiagnosticArray, "/diagnostics", on_diagnostics, qos.RESULTS)
    pub = ros.node.create_publisher(Image, CAMERA, qos.SENSOR)
    try:
        ros.wait_matched(pub)
        ros.wait_matched(sub)
        msg = Image()

        def publish(i: int) -> None:
            fill_image(msg, frames[i % len(frames)], "rgb8")
            msg.header.frame_id = str(i)                                # the frame's id travels in frame_id
            msg.header.stamp = ros.node.get_clock().now().to_msg()
            sent[i] = time.monotonic_ns()
            pub.publish(msg)
            time.sleep(1.0 / rate_hz)

        # frames until the node answers one (its model ready: a cold start can outlast the run), then the run
        deadline = time.monotonic() + 30.0
        while not arrivals and time.monotonic() < deadline:
            publish(-1)
        for i in range(n + WARMUP):
            publish(i)
        try:
            wait_until(settled, 30, "the drone node's results")
        except TimeoutError as exc:
            raise TimeoutError(f"{exc} ({len(arrivals)} of {n + WARMUP} frames answered)") from None
        if steps:
            node_steps.clear()
            wait_until(lambda: "step_callback_to_command_p50_ms" in node_steps, 10, "the node's step times")
    finally:
        ros.node.destroy_subscription(diag_sub)
        ros.node.destroy_subscription(sub)
        ros.node.destroy_publisher(pub)
        proc.stop()
        ros.procs.remove(proc)
    run = NodeRun(sent=n, steps=dict(node_steps))
    for seq, recv_ns, dev_ms, node_ms in arrivals:
        if seq >= WARMUP:
            run.e2e_ms.append((recv_ns - sent[seq]) / 1e6)
            run.device_ms.append(dev_ms)
            run.node_ms.append(node_ms)
    return run


def hop_section(run: NodeRun, preprocess_ms: float, camera: tuple[int, int], rate_hz: float) -> dict:
    """The device profile's ``hops``: in and out per frame as {median, p90, mean} ms (never below 0)."""
    if run.received < 10:
        raise RuntimeError(f"only {run.received} of {run.sent} frames answered: too few to measure the hops")
    from .profile import stats_ms

    ins = [max(node - dev - preprocess_ms, 0.0) / 1e3 for node, dev in zip(run.node_ms, run.device_ms)]
    outs = [max(e2e - node, 0.0) / 1e3 for e2e, node in zip(run.e2e_ms, run.node_ms)]
    return {"in_ms": stats_ms(ins), "out_ms": stats_ms(outs), "frames": run.received, "camera": list(camera),
            "rate_hz": rate_hz}


def measure_hops(checkpoint: str, frames: np.ndarray, preprocess_ms: float, *, n: int = 100, rate_hz: float = 20.0,
                 backend: str = "torch") -> dict:
    """Start a ROS domain of its own, run the drone node on ``frames`` and return the ``hops`` section."""
    from .harness import RosHarness, domain_id_for_run

    ros = RosHarness(domain_id_for_run())
    try:
        run = run_drone_node(ros, checkpoint, frames, n, rate_hz, backend)
    finally:
        ros.close()
    return hop_section(run, preprocess_ms, frames.shape[1:3], rate_hz)
