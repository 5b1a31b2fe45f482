"""A real `spinn cloud` server process on a free loopback port and a drone's link to it, for
the benchmarks that time offloads (plain TCP, or mutual TLS with a `spinn certs` directory)."""
from __future__ import annotations

import contextlib
import subprocess
import sys
import threading
import time

from ..core import codec
from ..tools.ports import free_port
from ..transport.zenoh_link import DroneLink, ZenohSettings


@contextlib.contextmanager
def cloud_link(ref: str, max_batch: int, max_wait_ms: float, certs: str = ""):
    """A `spinn cloud` server process on a free loopback port and a DroneLink that sees it: plain TCP,
    or with ``certs`` (a `spinn certs` directory with a drone 'bench') mutual TLS and access control."""
    port = free_port()
    scheme, security = ("tls", ["--certs", certs, "--allow-drone", "bench"]) if certs else ("tcp", ["--security", "plain"])
    endpoint = f"{scheme}/127.0.0.1:{port}"
    proc = subprocess.Popen([sys.executable, "-m", "spinn_ros.tools.cli", "cloud", "--checkpoint", ref, "--listen",
                             endpoint, *security, "--max-batch", str(max_batch), "--max-wait-ms",
                             str(max_wait_ms), "--stats-period", "0"],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    link = None
    try:
        if not any("serving model" in line for line in proc.stdout):
            raise RuntimeError(f"cloud server did not start (exit {proc.wait()})")
        tls = {"security": "mtls", "certs_dir": certs, "identity": "bench"} if certs else {}
        link = DroneLink(ZenohSettings(connect=(endpoint,), **tls), "bench")
        while not link.cloud_available:
            time.sleep(0.05)
        yield link
    finally:
        if link is not None:
            link.close()
        proc.terminate()
        proc.wait()


def round_trip(link: DroneLink, frame: bytes, timeout: float = 5.0) -> tuple[float, codec.Reply]:
    done = threading.Event()
    out = {}

    def on_done(payload, why):
        out["t"] = time.perf_counter()
        out["payload"], out["why"] = payload, why
        done.set()

    t0 = time.perf_counter()
    link.request(frame, timeout, on_done)
    done.wait(timeout + 1)
    if out.get("payload") is None:
        raise RuntimeError(f"offload failed: {out.get('why')}")
    reply = codec.decode_reply(out["payload"])
    if not isinstance(reply, codec.Reply):
        raise RuntimeError(f"cloud error: {reply}")
    return out["t"] - t0, reply
