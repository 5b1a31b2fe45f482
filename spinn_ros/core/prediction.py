"""The performance model's input and output: the :class:`Conditions` the monitor measures, and
the :class:`Prediction` of one plan / the :class:`PredictionTable` of every plan under them."""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from .calibration import PLAIN_NETWORK
from .encodings import DEFAULT_WIRE_ENCODING, WIRE_ENCODINGS
from .plan import PLAN_MODES, Plan

BOTTLENECKS = ("camera", "device", "link", "server")


@dataclass(frozen=True)
class Conditions:
    """What the monitor knows now about the link, the cloud and the drone."""

    bandwidth_mbps: float                  # uplink goodput; NaN or <= 0: no usable link
    rtt_ms: float                          # small-payload round trip; NaN: unknown (no usable link)
    loss_rate: float = 0.0                 # share of offloads lost or failed, 0..1
    cloud_alive: bool = True
    cloud_queue_depth: float = 0.0         # requests waiting in the cloud
    cloud_compute_ms: float | None = None  # measured mean tail compute per request (None: from the profile)
    cloud_queue_ms: float | None = None    # measured mean queueing (None: depth x per-request compute)
    cloud_batch_size: float = 1.0          # mean batch the cloud runs (interpolated between profiled sizes)
    device_slowdown: float = 1.0           # drone compute vs its profile (thermal throttling, other load)
    cloud_slowdown: float = 1.0
    frame_rate_hz: float = 30.0            # camera rate: the most frames there are to answer
    deadline_ms: float = 200.0             # the drone's cloud.deadline_ms: it falls back after this
    encoding: str = DEFAULT_WIRE_ENCODING       # the drone's cloud.encoding
    max_in_flight: int = 4                 # the drone's cloud.max_in_flight: beyond it the head answers

    def __post_init__(self):
        checks = {
            "loss_rate": 0 <= self.loss_rate <= 1, "cloud_queue_depth": self.cloud_queue_depth >= 0,
            "cloud_batch_size": self.cloud_batch_size > 0, "device_slowdown": self.device_slowdown > 0,
            "cloud_slowdown": self.cloud_slowdown > 0, "frame_rate_hz": self.frame_rate_hz > 0,
            "deadline_ms": self.deadline_ms > 0, "encoding": self.encoding in WIRE_ENCODINGS,
            "max_in_flight": self.max_in_flight >= 1,
        }
        bad = [k for k, ok in checks.items() if not ok]
        if bad:
            raise ValueError("invalid conditions: " + ", ".join(f"{k}={getattr(self, k)!r}" for k in bad))

    @property
    def link_usable(self) -> bool:
        return self.cloud_alive and self.bandwidth_mbps > 0 and math.isfinite(self.rtt_ms) and self.rtt_ms >= 0

    @classmethod
    def from_link_state(cls, msg, **settings) -> "Conditions":
        """From a ``spinn_ros/LinkState`` (or anything with its fields) plus drone settings
        (``frame_rate_hz``, ``deadline_ms``, ``encoding``, ``device_slowdown``, ...)."""
        def measured(x):          # LinkState uses 0 / NaN for "no measurement yet"
            return float(x) if x is not None and math.isfinite(x) and x > 0 else None

        return cls(bandwidth_mbps=float(msg.bandwidth_mbps), rtt_ms=float(msg.rtt_ms),
                   loss_rate=min(max(float(msg.loss_rate), 0.0), 1.0) if math.isfinite(msg.loss_rate) else 0.0,
                   cloud_alive=bool(msg.cloud_alive), cloud_queue_depth=measured(msg.cloud_queue_depth) or 0.0,
                   cloud_compute_ms=measured(msg.cloud_compute_ms),
                   cloud_batch_size=max(1.0, measured(msg.cloud_batch_size) or 1.0), **settings)


@dataclass(frozen=True)
class Prediction:
    split: int
    threshold: float                       # PLAIN_NETWORK: the plain network
    mode: str                              # a plan mode (core/plan.py)
    offload: bool                          # the plan lets the drone request the tail
    latency_ms: float                      # at ``percentile``
    percentile: float
    mean_latency_ms: float
    accuracy: float                        # collision accuracy, fallbacks included
    on_time_accuracy: float                # camera frames whose answer in force at the SLA deadline is right
    throughput_fps: float
    bottleneck: str                        # one of BOTTLENECKS
    offload_fraction: float                # frames sent to the cloud
    fallback_fraction: float               # frames whose offload is lost or late
    bytes_per_frame: float                 # mean uplink bytes per camera frame
    server_ms_per_frame: float             # mean cloud compute per camera frame
    device_ms_per_frame: float             # mean drone compute per camera frame

    @property
    def early_exits(self) -> bool:
        return self.threshold != PLAIN_NETWORK

    @property
    def plan(self) -> Plan:
        return Plan(self.split, self.threshold, self.mode, offload=self.offload)


METRICS = ("latency_ms", "mean_latency_ms", "accuracy", "on_time_accuracy", "throughput_fps", "offload_fraction",
           "fallback_fraction", "bytes_per_frame", "server_ms_per_frame", "device_ms_per_frame")


@dataclass
class PredictionTable:
    """Every metric as a (row, split) array; a row is a (mode, threshold column) pair, mode-major
    in PLAN_MODES order, the plain network (PLAIN_NETWORK) last within each mode."""

    thresholds: np.ndarray                 # per row
    modes: np.ndarray                      # per row, index into PLAN_MODES
    num_stages: int
    percentile: float
    valid: np.ndarray                      # plans the drone can run now (offloading needs a live cloud)
    bottleneck: np.ndarray                 # index into BOTTLENECKS
    holds_device_answer: np.ndarray        # the drone has an answer without waiting on the network
    metrics: dict[str, np.ndarray] = field(default_factory=dict)

    def __getitem__(self, name: str) -> np.ndarray:
        return self.metrics[name]

    @property
    def shape(self) -> tuple[int, int]:
        return self.valid.shape

    def row(self, mode: str, col: int) -> int:
        return PLAN_MODES.index(mode) * (len(self.thresholds) // len(PLAN_MODES)) + col

    def locate(self, plan: Plan) -> tuple[int, int] | None:
        """A plan's (row, split) in this table; None if the table has no such plan."""
        if plan.mode not in PLAN_MODES or not 0 <= plan.split < self.shape[1]:
            return None
        rows = np.nonzero((self.modes == PLAN_MODES.index(plan.mode))
                          & np.isclose(self.thresholds, plan.threshold, rtol=0, atol=1e-9))[0]
        return (int(rows[0]), int(plan.split)) if len(rows) else None

    def prediction(self, row: int, split: int) -> Prediction:
        return Prediction(split=int(split), threshold=float(self.thresholds[row]),
                          mode=PLAN_MODES[int(self.modes[row])], offload=split < self.num_stages,
                          percentile=self.percentile, bottleneck=BOTTLENECKS[int(self.bottleneck[row, split])],
                          **{m: float(self.metrics[m][row, split]) for m in METRICS})
