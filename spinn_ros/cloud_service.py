"""The cloud server: the tail server (core) behind the Zenoh endpoint, with or without ROS.

``spinn cloud`` runs it on a machine with no ROS (``pip install .``); the ROS cloud
node (spinn_ros/nodes/cloud_node.py) wraps the very same class and adds parameters
and /diagnostics.

    spinn cloud --listen tls/0.0.0.0:7447 --allow-drone drone1 [--certs DIR] [--checkpoint default]

Secured by default (mutual TLS, access control; certificates from ``spinn certs``);
``--security plain`` (with tcp/ endpoints) turns that off, with a warning.
"""
from __future__ import annotations

import argparse
import os
import signal
import sys
import threading
import time
from typing import Callable

import torch

from .core.backend import BACKENDS, DEFAULT_BACKEND, staged_model
from .core.model_ref import load_model
from .core.tail_server import TailServer
from .transport.zenoh_link import CLOUD_IDENTITY, DEFAULT_CERTS_DIR, SECURITY, CloudEndpoint, IncomingQuery, ZenohSettings


class CloudService:
    def __init__(self, model_ref: str, settings: ZenohSettings, name: str = "cloud", *, max_batch: int = 8,
                 max_wait_ms: float = 4.0, max_queue: int = 256, drop_late: bool = True, load_period_s: float = 0.5,
                 log: Callable[[str], None] = print, backend: str = DEFAULT_BACKEND, threads: int = 1):
        model, self.model_id = load_model(model_ref)
        self.model = staged_model(model, self.model_id, backend, threads=threads, log=log)
        self.server = TailServer(self.model, self.model_id, max_batch=max_batch, max_wait_ms=max_wait_ms,
                                 max_queue=max_queue, drop_late=drop_late, log=log)
        self.endpoint = CloudEndpoint(settings, name, self._on_query)
        self._stop = threading.Event()
        self._load_period_s = load_period_s
        self._loader = threading.Thread(target=self._publish_load, name="spinn-cloud-load", daemon=True)
        self._loader.start()
        log(f"cloud '{self.endpoint.name}' serving model {self.model_id} ({self.model.spec.name}, {backend}) on "
            f"{settings.key_prefix}/tail/*, batches of up to {max_batch} within {max_wait_ms} ms")

    def _on_query(self, q: IncomingQuery) -> None:
        self.server.submit(q.payload, q.respond, q.drone, q.arrived_ns)

    def _publish_load(self) -> None:
        while not self._stop.wait(self._load_period_s):
            try:
                self.endpoint.publish_load(self.server.load())
            except Exception:  # noqa: BLE001 - the session may be closing; load is best effort
                pass

    def close(self) -> None:
        self._stop.set()
        self._loader.join(timeout=2.0)
        self.server.close()
        self.endpoint.close()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="spinn cloud", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--checkpoint", default="default", help="model reference (must match the drones')")
    ap.add_argument("--name", default="cloud", help="server name (its liveliness token)")
    ap.add_argument("--mode", default="peer", choices=["peer", "client"])
    ap.add_argument("--listen", action="append", default=[], help="endpoint to listen on (repeatable)")
    ap.add_argument("--connect", action="append", default=[], help="endpoint to connect to (repeatable)")
    ap.add_argument("--key-prefix", default="spinn")
    ap.add_argument("--security", choices=SECURITY, default="mtls",
                    help="mtls (default): TLS with client certificates and per-drone access control; plain: none")
    ap.add_argument("--certs", default=os.environ.get("SPINN_CERTS", DEFAULT_CERTS_DIR),
                    help="certificate directory (spinn certs; default $SPINN_CERTS, else %(default)s)")
    ap.add_argument("--allow-drone", action="append", default=[],
                    help="a drone allowed in (its cert's CN; repeatable or comma-separated; default: default)")
    ap.add_argument("--max-batch", type=int, default=8)
    ap.add_argument("--max-wait-ms", type=float, default=4.0)
    ap.add_argument("--threads", type=int, default=1, help="torch (or onnxruntime) threads for the tails")
    ap.add_argument("--backend", default=DEFAULT_BACKEND, choices=BACKENDS,
                    help="inference engine of the tails (onnxruntime: TensorRT, CUDA, else CPU provider)")
    ap.add_argument("--stats-period", type=float, default=5.0, help="seconds between status lines (0: none)")
    opts = ap.parse_args(argv)
    if not opts.listen and not opts.connect:
        opts.listen = [f"{'tls' if opts.security == 'mtls' else 'tcp'}/0.0.0.0:7447"]
    drones = tuple(d.strip() for item in opts.allow_drone for d in item.split(",") if d.strip()) or ("default",)
    torch.set_num_threads(opts.threads)
    try:
        settings = ZenohSettings(mode=opts.mode, listen=tuple(opts.listen), connect=tuple(opts.connect),
                                 key_prefix=opts.key_prefix, security=opts.security, certs_dir=opts.certs,
                                 identity=CLOUD_IDENTITY, allowed_drones=drones)
        if opts.security == "plain":
            print("spinn cloud: WARNING: --security plain: no authentication, no access control", flush=True)
        service = CloudService(opts.checkpoint, settings, opts.name, max_batch=opts.max_batch,
                               max_wait_ms=opts.max_wait_ms, log=lambda m: print(m, flush=True),
                               backend=opts.backend, threads=opts.threads)
    except (ValueError, OSError) as exc:
        print(f"spinn cloud: {exc}", file=sys.stderr)
        return 2
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    try:
        while not stop.wait(opts.stats_period or None):
            load = service.server.load()
            print(f"[{time.strftime('%H:%M:%S')}] served {load['served']}, queue {load['queue_depth']}, "
                  f"batch {load['batch_size']:.1f}, {load['compute_ms']:.1f} ms/request, "
                  f"rejected {load['rejected']}, late {load['late']}", flush=True)
    finally:
        service.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
