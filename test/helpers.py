"""Helpers shared by the process-level test files."""
from __future__ import annotations

import socket
import time

import numpy as np
from sensor_msgs.msg import Image

from spinn_ros.ros.images import fill_image


def synthetic_frames(n: int, seed: int = 0, size=(128, 128)) -> list[np.ndarray]:
    """Structured RGB frames: a sky/ground gradient with random boxes (not pure noise)."""
    rng = np.random.default_rng(seed)
    h, w = size
    frames = []
    for _ in range(n):
        img = np.zeros((h, w, 3), np.uint8)
        img[: h // 2] = rng.integers(120, 220, 3)
        img[h // 2:] = rng.integers(30, 120, 3)
        for _ in range(rng.integers(1, 5)):
            x0, y0 = rng.integers(0, w - 8), rng.integers(0, h - 8)
            img[y0: y0 + rng.integers(8, h // 2), x0: x0 + rng.integers(8, w // 2)] = rng.integers(0, 255, 3)
        frames.append(img)
    return frames


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
    def __init__(self, node, msg_type, topic, qos_profile):
        self.msgs = []
        self.sub = node.create_subscription(msg_type, topic, self.msgs.append, qos_profile)


def diagnostics_value(msgs, key):
    for arr in reversed(msgs):
        for st in arr.status:
            for kv in st.values:
                if kv.key == key:
                    return kv.value
    return None


def free_port() -> int:
    """A TCP port nobody listens on right now (for a test's own Zenoh endpoint)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
