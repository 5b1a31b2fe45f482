"""Camera-like frames without the renderer: the stand-in input of ``spinn profile`` and
``spinn smoke`` when no simulator dataset exists (timings do not depend on the scene)."""
from __future__ import annotations

import numpy as np


def procedural_frames(n: int, size: int, seed: int = 0) -> np.ndarray:
    """Camera-like uint8 frames (sky gradient, textured ground, random boxes) when no dataset exists."""
    rng = np.random.default_rng(seed)
    rows = np.linspace(0, 1, size, dtype=np.float32)[:, None, None]
    frames = np.empty((n, size, size, 3), dtype=np.uint8)
    for i in range(n):
        horizon = int(size * rng.uniform(0.35, 0.65))
        img = np.where(rows < horizon / size, 120 + 100 * (1 - rows) * np.array([0.6, 0.8, 1.0]),
                       np.array([90, 110, 70]) + rng.normal(0, 12, (size, size, 3)))
        img = np.broadcast_to(img, (size, size, 3)).copy()
        for _ in range(rng.integers(1, 5)):
            w, h = rng.integers(size // 10, size // 2, 2)
            x0, y0 = rng.integers(0, size - w), rng.integers(size // 5, size - h)
            img[y0:y0 + h, x0:x0 + w] = rng.integers(30, 230, 3) + rng.normal(0, 8, (h, w, 3))
        frames[i] = np.clip(img, 0, 255).astype(np.uint8)
    return frames
