"""The profiles the SPINN scheduler plans with: their format, finding and reading them.

``spinn profile`` (spinn_ros/tools/profile.py) measures them: a *device* profile the way the
drone runs the head, a *cloud* profile per batch size with the cloud's threads. Both
reference the model's calibration (path + model id). One versioned JSON per model, host and
role: ``profiles/<model_id>-<host>-<role>.json`` for the ``torch`` backend,
``...-<role>-<backend>.json`` for another (``--backend onnxruntime``): the header records
the backend, and a profile of one backend is refused where another runs. Times are stored
as measured, with ``time_scale`` (``--slowdown``) applied by the reader: see
:class:`Profile`.
"""
from __future__ import annotations

import json
import platform
import re
from pathlib import Path
from typing import Sequence

import numpy as np

from .backend import DEFAULT_BACKEND
from .encodings import WIRE_ENCODINGS
from .file_header import check_header

FORMAT = "spinn-profile"
VERSION = 1
ROLES = ("device", "cloud")
DEFAULT_BATCH_SIZES = (1, 2, 4, 8)
REFERENCE_HOST = "reference"          # host name of the committed default profiles
STATS = ("median", "p90", "mean")
#: the device section's optional per-frame pass-through times (Profile.hop_ms)
HOPS = "hops"
#: wire encodings, named as the drone's ``cloud.encoding`` parameter


class ProfileError(ValueError):
    """A profile that cannot be used; the message names the file and the problem."""


class ProfileNotFound(ProfileError, FileNotFoundError):
    pass


# ---------------------------------------------------------------------------------
# Names and places
# ---------------------------------------------------------------------------------


def host_name() -> str:
    """This machine's name, safe inside a file name."""
    return re.sub(r"[^A-Za-z0-9_.]+", "_", platform.node() or "unknown")


def profiles_root(root=None) -> Path:
    """``root``, or the package's profiles/ (checkout or installed share directory)."""
    from .resources import profiles_dir

    return Path(root) if root else profiles_dir()


def default_profile_path(model_id: str, role: str, host: str | None = None, root=None,
                         backend: str = DEFAULT_BACKEND) -> Path:
    suffix = "" if backend == DEFAULT_BACKEND else f"-{backend}"      # torch profiles keep their names
    return profiles_root(root) / f"{model_id}-{host or host_name()}-{role}{suffix}.json"


def find_profile(model_id: str, role: str, host: str | None = None, root=None,
                 backend: str = DEFAULT_BACKEND) -> Path:
    """This host's profile, else the committed reference one; ProfileNotFound names both."""
    tried = [default_profile_path(model_id, role, h, root, backend) for h in (host, REFERENCE_HOST)]
    for path in tried:
        if path.is_file():
            return path
    raise ProfileNotFound(f"no {role} profile for model {model_id} on backend {backend}: tried "
                          f"{', '.join(map(str, tried))} (run 'spinn profile --role {role} --backend {backend}')")


# ---------------------------------------------------------------------------------
# Reading
# ---------------------------------------------------------------------------------


class Profile:
    """A loaded profile. Time getters return numpy arrays in ms, already multiplied by
    ``time_scale`` (the ``--slowdown`` the profile was recorded with)."""

    def __init__(self, data: dict, source: str):
        self.data = data
        self.source = source
        self.role: str = data["role"]
        self.model_id: str = data["model_id"]
        self.num_stages: int = data["num_stages"]
        self.exit_stages: list[int] = list(data["exit_stages"])
        self.time_scale: float = float(data["settings"].get("time_scale", 1.0))
        self.calibration: dict | None = data.get("calibration")
        self.backend: str = data.get("backend", DEFAULT_BACKEND)     # profiles from before backends: torch
        self._section = data[self.role]

    def _ms(self, entry: dict, stat: str) -> np.ndarray:
        return np.asarray(entry[stat], dtype=float) * self.time_scale

    # device role
    def preprocess_ms(self, stat: str = "median") -> float:
        return float(self._ms(self._section["preprocess_ms"], stat))

    def stage_ms(self, stat: str = "median", batch: int | None = None) -> np.ndarray:
        """Per stage (device: batch 1; cloud: the given profiled batch size)."""
        return self._ms(self._by_batch("stage_ms", batch), stat)

    def exit_ms(self, stat: str = "median", batch: int | None = None) -> np.ndarray:
        """Per exit head, including decoding its output."""
        return self._ms(self._by_batch("exit_ms", batch), stat)

    def encode_ms(self, encoding: str, stat: str = "median") -> np.ndarray:
        """Per split 0..N-1: building the request on the drone."""
        return self._ms(self._encoding("encode_ms", encoding), stat)

    def wire_bytes(self, encoding: str, stat: str = "median") -> np.ndarray:
        """Per split 0..N-1: bytes of the request frame on the wire."""
        return np.asarray(self._encoding("bytes", encoding)[stat], dtype=float)

    @property
    def has_hops(self) -> bool:
        return HOPS in self._section

    def hop_ms(self, stat: str = "median") -> tuple[float, float]:
        """(in, out) ms every answer pays in the drone node besides the model (tools/hops.py):
        the camera frame's DDS hop and hand-off before the head, publishing and the result's
        DDS hop after it; (0, 0) for a profile measured without them. Not scaled by
        ``time_scale``: an emulated slower drone pads its model, not its middleware."""
        hops = self._section.get(HOPS)
        if hops is None:
            return 0.0, 0.0
        return float(hops["in_ms"][stat]), float(hops["out_ms"][stat])

    # cloud role
    @property
    def batch_sizes(self) -> list[int]:
        return list(self._section["batch_sizes"])

    def batch_overhead_ms(self, batch: int, stat: str = "median") -> np.ndarray:
        """Per split 0..N-1: whole tail minus the sum of its stages and exit heads."""
        return self._ms(self._by_batch("batch_overhead_ms", batch), stat)

    def decode_ms(self, encoding: str, stat: str = "median") -> np.ndarray:
        return self._ms(self._encoding("decode_ms", encoding), stat)

    def _by_batch(self, key: str, batch: int | None) -> dict:
        if self.role == "device":
            return self._section[key]
        if batch is None or str(batch) not in self._section[key]:
            raise ValueError(f"profile {self.source}: batch size {batch} not profiled ({self.batch_sizes})")
        return self._section[key][str(batch)]

    def _encoding(self, key: str, encoding: str) -> dict:
        table = self._section[key]
        if encoding not in table:
            raise ValueError(f"profile {self.source}: encoding {encoding!r} not profiled ({', '.join(table)})")
        return table[encoding]


def _validate(data, source: str, expected_model_id: str | None, role: str | None,
              backend: str | None = None) -> None:
    def fail(msg):
        raise ProfileError(f"profile {source}: {msg}")

    check_header(data, fail, fmt=FORMAT, version=VERSION, kind="profile", expected_model_id=expected_model_id,
                 required=("model_id", "role", "num_stages", "exit_stages", "settings"),
                 remedy="re-profile with 'spinn profile'", version_remedy=" (re-profile with 'spinn profile')")
    if data["role"] not in ROLES or (role is not None and data["role"] != role):
        fail(f"role {data['role']!r}, expected {role or ' or '.join(ROLES)}")
    measured_on = data.get("backend", DEFAULT_BACKEND)
    if backend is not None and measured_on != backend:
        fail(f"measured on backend {measured_on!r}, but {backend!r} runs: its times do not hold there "
             f"(re-profile with 'spinn profile --role {data['role']} --backend {backend}')")
    section, n = data.get(data["role"]), data["num_stages"]
    if not isinstance(section, dict):
        fail(f"missing the {data['role']!r} section")
    per_batch = [section.get("stage_ms", {}).get(str(b)) for b in section.get("batch_sizes", [])]
    stages = [section.get("stage_ms")] if data["role"] == "device" else per_batch
    if not stages or any(not isinstance(s, dict) or any(len(s.get(k, ())) != n for k in STATS) for s in stages):
        fail(f"stage_ms must hold {', '.join(STATS)} lists of {n} stages")
    hops = section.get(HOPS)
    if hops is not None and not (isinstance(hops, dict) and all(
            isinstance(hops.get(d), dict) and all(_non_negative(hops[d].get(k)) for k in STATS)
            for d in ("in_ms", "out_ms"))):
        fail(f"{HOPS} must hold in_ms and out_ms, each with {', '.join(STATS)} ms >= 0")


def _non_negative(x) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and x >= 0


def load_profile(path, expected_model_id: str | None, role: str | None = None, backend: str | None = None) -> Profile:
    """Read and validate a profile; another model's (or role's, or backend's) profile is refused."""
    path = Path(path)
    if not path.is_file():
        raise ProfileNotFound(f"profile {path}: no such file (run 'spinn profile')")
    try:
        data = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ProfileError(f"profile {path}: unreadable or not JSON ({e})") from e
    _validate(data, str(path), expected_model_id, role, backend)
    return Profile(data, str(path))


def save_profile(path, profile: dict) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(profile, indent=1) + "\n")
    tmp.replace(path)


def synthetic_profile(role: str, *, model_id: str, exit_stages: Sequence[int], stage_ms: Sequence[float],
                      exit_ms: Sequence[float], wire_bytes: Sequence[float] | None = None, preprocess_ms: float = 0.0,
                      batch_scale: dict[int, float] | None = None, hop_ms: tuple[float, float] | None = None,
                      ) -> Profile:
    """A profile from given times instead of measurements (tests, benchmarks, what-if studies):
    every statistic equals the value, every encoding the same; cloud times at batch b are
    the batch-1 times times ``batch_scale[b]``; encode, decode and batch overhead are 0;
    ``hop_ms``: the device's (in, out) pass-through (None: none measured)."""
    n = len(stage_ms)
    const = lambda values: {k: [float(v) for v in values] for k in STATS}
    if role == "device":
        section = {"preprocess_ms": {k: float(preprocess_ms) for k in STATS}, "stage_ms": const(stage_ms),
                   "exit_ms": const(exit_ms), "encode_ms": {e: const([0.0] * n) for e in WIRE_ENCODINGS},
                   "bytes": {e: {k: [float(b) for b in wire_bytes] for k in ("median", "mean", "max")}
                             for e in WIRE_ENCODINGS}}
        if hop_ms is not None:
            section[HOPS] = {d: {k: float(v) for k in STATS} for d, v in zip(("in_ms", "out_ms"), hop_ms)}
    else:
        scale = batch_scale or {1: 1.0}
        section = {"batch_sizes": sorted(scale),
                   "stage_ms": {str(b): const([x * f for x in stage_ms]) for b, f in scale.items()},
                   "exit_ms": {str(b): const([x * f for x in exit_ms]) for b, f in scale.items()},
                   "batch_overhead_ms": {str(b): const([0.0] * n) for b in scale},
                   "decode_ms": {e: const([0.0] * n) for e in WIRE_ENCODINGS}}
    data = {"format": FORMAT, "version": VERSION, "role": role, "model_id": model_id, "num_stages": n,
            "exit_stages": list(exit_stages), "settings": {"time_scale": 1.0}, "calibration": None, role: section}
    _validate(data, f"synthetic {role} profile", model_id, role)
    return Profile(data, f"synthetic-{role}")


