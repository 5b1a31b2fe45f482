"""Waiting for a condition instead of sleeping: discovery, a process's first output, a result.
Pure (no rclpy), so unit tests use it as well as the ROS harness."""
from __future__ import annotations

import time
from typing import Callable


def wait_until(predicate: Callable[[], bool], timeout: float, what: str, poll: float = 0.02) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout:.1f} s waiting for {what}")
        time.sleep(poll)
