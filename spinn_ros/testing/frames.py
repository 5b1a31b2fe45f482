"""Test inputs that need no simulator: labelled procedural scenes (the codec and model tests
and the codec benchmark), structured synthetic frames (the ROS tests), uniform noise (timing
benchmarks), and a simulator dataset split when one exists. The profile's own stand-in input
is spinn_ros/sim/procedural.py."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch


def labelled_frames(n: int, size: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(frames, collision labels): (n, size, size, 3) uint8 rgb8 scenes with natural-image
    statistics, a stand-in until the simulator's dataset exists. A sky/ground split at a
    random horizon, 1/f ("pink") texture, 0..3 flat-shaded box obstacles (near = large)
    and sensor noise; the label is 1 when boxes cover over a third of the central window
    the drone flies into."""
    rng = np.random.default_rng(seed)
    gen = torch.Generator().manual_seed(seed)
    fy = torch.fft.fftfreq(size)[:, None]
    fx = torch.fft.rfftfreq(size)[None, :]
    falloff = 1.0 / torch.clamp(torch.hypot(fy, fx), min=1.0 / size)
    texture = torch.fft.irfft2(torch.fft.rfft2(torch.randn(n, size, size, generator=gen)) * falloff, s=(size, size))
    texture = (texture / texture.std(dim=(1, 2), keepdim=True)).numpy()[..., None]

    rows = np.arange(size, dtype=np.float32)[None, :, None, None]
    horizon = rng.uniform(0.3, 0.7, (n, 1, 1, 1)).astype(np.float32) * size
    sky = rng.uniform(0.4, 0.9, (n, 1, 1, 3)).astype(np.float32)
    ground = rng.uniform(0.1, 0.5, (n, 1, 1, 3)).astype(np.float32)
    img = np.where(rows < horizon, sky, ground) + 0.08 * texture
    covered = np.zeros((n, size, size), dtype=bool)
    for i in range(n):
        for _ in range(rng.integers(0, 4)):
            h, w = (rng.uniform(0.1, 0.8, 2) * size).astype(int) + 1
            top, left = rng.integers(0, size - h + 1), rng.integers(0, size - w + 1)
            box = (slice(top, top + h), slice(left, left + w))
            img[i][box] = rng.uniform(0.0, 1.0, 3).astype(np.float32) * (1 + 0.1 * texture[i][box])
            covered[i][box] = True
    img += 0.02 * torch.randn(img.shape, generator=gen).numpy()
    centre = covered[:, size // 4 : 3 * size // 4, size // 3 : 2 * size // 3]
    labels = (centre.mean(axis=(1, 2)) > 1 / 3).astype(np.int64)
    return np.rint(np.clip(img, 0, 1) * 255).astype(np.uint8), labels


def load_dataset(path: str | Path, n: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(frames uint8 NxSxSx3, collision labels) of a split written by ``spinn gen-data``."""
    from ..sim.dataset import load_dataset as load

    data = load(path)
    return data.images[:n], data.collision[:n].astype(np.int64)


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


def noise_frames(n: int, size: tuple[int, int] = (128, 128), seed: int = 0) -> list[np.ndarray]:
    """Uniform uint8 noise frames: for timing, where the content does not matter."""
    rng = np.random.default_rng(seed)
    return [rng.integers(0, 256, (*size, 3), dtype=np.uint8) for _ in range(n)]


def scene_frames(n: int, seed: int = 0) -> list[np.ndarray]:
    """Simulator frames when the renderer is available, else structured random frames."""
    try:
        from ..tools.demo import course_frames

        return [f for _, f, _ in course_frames(seed + 3, n, 128)]
    except Exception:  # noqa: BLE001 - the simulator is optional for this benchmark
        return noise_frames(n, (128, 128), seed)
