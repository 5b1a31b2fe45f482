"""A free local TCP port, for a Zenoh endpoint that nothing else listens on."""
from __future__ import annotations

import socket


def free_port(host: str = "127.0.0.1") -> int:
    """A port the kernel just had free on ``host``: another process may take it before it is
    bound again, which is harmless for the short-lived local endpoints tools and tests make."""
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]
