"""The cloud node: completes offloaded tails for any number of drones, over Zenoh only.

A ROS 2 node for its parameters, logging and /diagnostics; its only channel to the
drones is Zenoh (spinn_ros/transport/zenoh_link.py): a queryable on
``<prefix>/tail/*``, a liveliness token, and load puts for monitors. The same
service runs without ROS as ``spinn cloud``.
"""
from __future__ import annotations

import torch
from rclpy.node import Node

from ..cloud_service import CloudService
from ..core.backend import BACKENDS, BackendError
from ..ros import diagnostics as diag
from ..ros import qos
from ..ros.node_main import run_node
from ..ros.params import Param, ParameterError, declare, in_range, non_empty, one_of, zenoh_params

PARAMS = [
    Param("checkpoint", "default",
          "model: 'default', a checkpoint path, or random:<size>:<seed> (must match the drones')",
          non_empty, read_only=True),
    Param("name", "cloud", "server name: its liveliness token and load key", non_empty, read_only=True),
    Param("max_batch", 8, "most requests run as one batch", in_range(1, 256), read_only=True),
    Param("max_wait_ms", 4.0, "longest wait for a batch to fill after its first request, ms (only while "
          "another drone is sending: a lone drone's request runs at once)",
          in_range(0.0, 1000.0), read_only=True),
    Param("max_queue", 256, "requests waiting beyond this are refused (OVERLOADED)", in_range(1, 100000),
          read_only=True),
    Param("drop_late", True, "answer DEADLINE_EXCEEDED instead of computing requests already past their deadline",
          read_only=True),
    Param("torch_threads", 1, "intra-op threads for the tails, torch or onnxruntime", in_range(1, 256), read_only=True),
    Param("backend", "torch", "inference engine of the tails: torch (eager) or onnxruntime (TensorRT, CUDA, "
          "else CPU provider; ONNX files exported on first use)", one_of(*BACKENDS), read_only=True),
    Param("diagnostics_period_s", 1.0, "period of /diagnostics messages, seconds", in_range(0.05, 60.0),
          read_only=True),
    *zenoh_params(listen="tls/127.0.0.1:7447"),
    Param("zenoh.allowed_drones", "default", "mtls: comma-separated drone names (their certificates' CN, their "
          "namespaces without slashes, 'default' without one) that may query their own tail key; their "
          "monitors (<name>-monitor) may read the cloud's keys", non_empty, read_only=True),
]


class CloudNode(Node):
    def __init__(self, **kwargs):
        super().__init__("spinn_cloud", **kwargs)
        p = declare(self, PARAMS)
        torch.set_num_threads(p["torch_threads"])
        from ..transport.zenoh_link import settings_from_params

        try:
            settings = settings_from_params(p, "cloud", self.get_logger().warn)
        except ValueError as exc:
            raise ParameterError(f"zenoh parameters: {exc}") from exc
        try:
            self.service = CloudService(p["checkpoint"], settings, p["name"], max_batch=p["max_batch"],
                                        max_wait_ms=p["max_wait_ms"], max_queue=p["max_queue"],
                                        drop_late=p["drop_late"], log=self.get_logger().info,
                                        backend=p["backend"], threads=p["torch_threads"])
        except BackendError as exc:
            raise ParameterError(f"parameter 'backend'={p['backend']!r}: {exc}") from exc
        except (OSError, ValueError) as exc:
            raise ParameterError(f"parameter 'checkpoint'={p['checkpoint']!r}: {exc}") from exc
        self.diag_pub = self.create_publisher(diag.DiagnosticArray, "/diagnostics", qos.RESULTS)
        self.create_timer(p["diagnostics_period_s"], self._publish_diagnostics)

    def _publish_diagnostics(self) -> None:
        load = self.service.server.load()
        level, msg = diag.OK, "serving"
        if self.service.server.stats.rejected:
            level, msg = diag.WARN, f"rejected frames; last: {self.service.server.stats.last_error[:120]}"
        self.diag_pub.publish(diag.make_array(self.get_clock().now().to_msg(), f"{self.get_fully_qualified_name()}: tails",
                                              self.service.model_id, level, msg, load))

    def close(self) -> None:
        self.service.close()


def main(args=None) -> int:
    return run_node(CloudNode, args)


if __name__ == "__main__":
    raise SystemExit(main())
