"""Helpers shared by the process-level test files."""
from __future__ import annotations

import time

import numpy as np
from sensor_msgs.msg import Image

from spinn_ros.ros.images import fill_image
from spinn_ros.testing.frames import synthetic_frames
from spinn_ros.tools.waiting import wait_until


def as_encoding(rgb: np.ndarray, encoding: str) -> np.ndarray:
    if encoding == "bgr8":
        return rgb[..., ::-1].copy()
    if encoding == "mono8":
        return rgb.mean(axis=2, keepdims=True).astype(np.uint8)
    return rgb


def image_msg(pixels: np.ndarray, encoding: str, stamp_s: int) -> Image:
    msg = Image()
    msg.header.stamp.sec = stamp_s
    msg.header.frame_id = "camera"
    fill_image(msg, pixels, encoding)
    return msg


WARMUP_SEC = 1


def prime(pub, results, timeout=30.0) -> None:
    """Publish a warm-up frame until its result comes back: after discovery the writer
    may see the reader before the reader sees the writer, and best-effort frames sent
    in that window are lost. Its result is then removed from ``results``."""
    frame = image_msg(synthetic_frames(1, seed=99)[0], "rgb8", WARMUP_SEC)
    deadline = time.monotonic() + timeout
    while not any(r.header.stamp.sec == WARMUP_SEC for r in results.msgs):
        if time.monotonic() > deadline:
            raise TimeoutError("the drone node never answered a warm-up frame")
        pub.publish(frame)
        time.sleep(0.2)
    time.sleep(0.3)
    results.msgs[:] = [r for r in results.msgs if r.header.stamp.sec != WARMUP_SEC]


class Collector:
    """Every message on a topic, with the monotonic time it arrived here (``arrived[id(msg)]``)."""

    def __init__(self, node, msg_type, topic, qos_profile):
        self.msgs = []
        self.arrived: dict[int, float] = {}
        self.sub = node.create_subscription(msg_type, topic, self._on_msg, qos_profile)

    def _on_msg(self, msg) -> None:
        self.arrived[id(msg)] = time.monotonic()
        self.msgs.append(msg)


def diagnostics_value(msgs, key, source: str = ""):
    """The latest value of ``key`` in DiagnosticArray messages whose status name starts with ``source``."""
    for arr in reversed(msgs):
        for st in arr.status:
            if not st.name.startswith(source):
                continue
            for kv in st.values:
                if kv.key == key:
                    return kv.value
    return None


def node_accounting(diags, node: str) -> tuple[int, int] | None:
    """(frames received, frames dropped while busy) from a drone node's latest diagnostics."""
    got = (diagnostics_value(diags.msgs, "frames_received", node),
           diagnostics_value(diags.msgs, "frames_dropped_busy", node))
    return None if None in got else (int(got[0]), int(got[1]))


class DroneIO:
    """This test's end of one drone node: its camera publisher, result and /diagnostics subscriptions."""

    def __init__(self, ros, camera_topic: str, ns: str = ""):
        from diagnostic_msgs.msg import DiagnosticArray

        from spinn_ros.msg import InferenceResult
        from spinn_ros.ros import qos

        self.ns = ns
        prefix = f"/{ns}" if ns else ""
        self.results = Collector(ros.node, InferenceResult, f"{prefix}/spinn/result", qos.RESULTS)
        self.diags = Collector(ros.node, DiagnosticArray, "/diagnostics", qos.RESULTS)
        self.pub = ros.node.create_publisher(Image, camera_topic, qos.SENSOR)
        ros.wait_matched(self.pub)
        ros.wait_matched(self.results.sub)

    def prime(self) -> None:
        prime(self.pub, self.results)

    def finals(self, sec_from: int = 0) -> dict:
        """Final results by frame (stamp seconds) from ``sec_from`` on; a frame answered twice fails."""
        out = {}
        for r in self.results.msgs:
            if not r.provisional and r.header.stamp.sec >= sec_from:
                assert r.header.stamp.sec not in out, f"two final results for frame {r.header.stamp.sec}"
                out[r.header.stamp.sec] = r
        return out


def drone_settings(certs, name: str, *endpoints: str, **kw):
    """A secured drone end's settings (mutual TLS with the certificate ``name`` from ``certs``)."""
    from spinn_ros.transport.zenoh_link import ZenohSettings

    return ZenohSettings(connect=endpoints, security="mtls", certs_dir=str(certs), identity=name, **kw)


def parameter_setter(node, target: str, timeout: float = 20.0):
    """``set(**values)`` -> the SetParametersResult of setting them on node ``target`` (its
    parameter services, as ``ros2 param set`` does)."""
    from rclpy.parameter import Parameter
    from rclpy.parameter_client import AsyncParameterClient

    client = AsyncParameterClient(node, target)
    assert client.wait_for_services(timeout_sec=timeout), f"{target}'s parameter services"

    def set_params(**values):
        fut = client.set_parameters([Parameter(k, value=v) for k, v in values.items()])
        wait_until(fut.done, 10, "set_parameters reply")
        return fut.result().results[0]

    return set_params


class FrameAccounting:
    """Checks that every frame a drone node received (and did not drop for a newer one)
    got exactly one final result. Camera frames are best effort, so DDS may lose a
    few on a loaded machine; those never reach the node and are not its to answer."""

    def __init__(self, node: str, diags):
        self.node = node
        self.diags = diags
        seen = len(diags.msgs)
        wait_until(lambda: len(diags.msgs) >= seen + 2 and node_accounting(diags, node) is not None, 15,
                    f"{node}'s diagnostics")
        self.base = node_accounting(diags, node)

    def check(self, finals: int, sent: int, timeout: float = 10.0) -> None:
        def answered_all():
            c = node_accounting(self.diags, self.node)
            return c is not None and (c[0] - self.base[0]) - (c[1] - self.base[1]) == finals

        try:
            wait_until(answered_all, timeout, "frames received - dropped == final results")
        except TimeoutError:
            raise AssertionError(f"{self.node}: accounting {node_accounting(self.diags, self.node)} from "
                                 f"{self.base}, {finals} final results") from None
        assert finals >= 0.9 * sent, f"{self.node}: only {finals} of {sent} frames answered"


