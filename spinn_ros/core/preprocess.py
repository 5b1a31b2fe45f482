"""Camera pixels -> model input, shared by the drone node, training and evaluation.

Frames are uint8 HxWxC arrays (RGB, BGR or mono); the model takes float RGB in
[0, 1], shape (B, 3, S, S). One function so training and inference never drift.
"""
from __future__ import annotations

import numpy as np
import torch
from torch.nn import functional as F

#: encoding -> (channels, channel order to get RGB)
IMAGE_ENCODINGS: dict[str, tuple[int, tuple[int, ...] | None]] = {
    "rgb8": (3, None),
    "bgr8": (3, (2, 1, 0)),
    "mono8": (1, None),
}


class UnsupportedImage(ValueError):
    """An image the model cannot consume (encoding, layout or size)."""


def pixels_from_buffer(data, height: int, width: int, step: int, encoding: str) -> np.ndarray:
    """View a ROS-style image buffer as an HxWxC uint8 array without copying.

    ``step`` may include row padding; the view then skips it.
    """
    if encoding not in IMAGE_ENCODINGS:
        raise UnsupportedImage(f"unsupported encoding {encoding!r}; accepted: {', '.join(IMAGE_ENCODINGS)}")
    channels, _ = IMAGE_ENCODINGS[encoding]
    if height <= 0 or width <= 0:
        raise UnsupportedImage(f"empty image {width}x{height}")
    if step < width * channels:
        raise UnsupportedImage(f"step {step} is smaller than width*channels = {width * channels}")
    buf = np.frombuffer(data, dtype=np.uint8)
    if buf.size < step * height:
        raise UnsupportedImage(f"data holds {buf.size} bytes, expected step*height = {step * height}")
    rows = buf[: step * height].reshape(height, step)
    return rows[:, : width * channels].reshape(height, width, channels)


def to_model_input(pixels: np.ndarray, size: int, encoding: str = "rgb8") -> torch.Tensor:
    """HxWxC (or BxHxWxC) uint8 -> (B, 3, size, size) float32 RGB in [0, 1]."""
    if encoding not in IMAGE_ENCODINGS:
        raise UnsupportedImage(f"unsupported encoding {encoding!r}; accepted: {', '.join(IMAGE_ENCODINGS)}")
    channels, order = IMAGE_ENCODINGS[encoding]
    if pixels.ndim == 3:
        pixels = pixels[None]
    if pixels.ndim != 4 or pixels.shape[-1] != channels:
        raise UnsupportedImage(f"{encoding} needs BxHxWx{channels} pixels, got shape {pixels.shape}")
    x = torch.from_numpy(np.ascontiguousarray(pixels)).permute(0, 3, 1, 2)
    if order is not None:
        x = x[:, list(order)]
    x = x.float().div_(255.0)
    if channels == 1:
        x = x.expand(-1, 3, -1, -1)
    if x.shape[-2:] != (size, size):
        # area averaging: the right filter for downscaling camera frames
        x = F.interpolate(x, size=(size, size), mode="area" if x.shape[-1] >= size else "bilinear")
    return x.contiguous()
