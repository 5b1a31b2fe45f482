"""The names of the wire encodings of a split activation, ``<dtype>-<codec>``: the drone's
``cloud.encoding``, the monitor's ``encoding`` and the profile's columns. Kept apart from
codec.py (which maps them onto the wire's enums) so the planner imports no torch."""
from __future__ import annotations

WIRE_ENCODINGS = tuple(f"{d}-{c}" for d in ("f32", "f16", "u8") for c in ("none", "lz4", "zstd"))
DEFAULT_WIRE_ENCODING = "u8-lz4"
