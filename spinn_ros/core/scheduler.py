"""SPINN's scheduler: a performance model over every plan (split, threshold, mode) and an SLA-driven choice.

:class:`PerformanceModel` turns the device and cloud profiles, the calibration and the
current :class:`Conditions` into predictions for every plan at once (numpy over a
(mode x threshold, split, exit) grid); :class:`Scheduler` filters them by the SLA's hard
constraints, ranks the survivors by its objectives and explains its choice. Baselines
are :data:`STRATEGIES` restricting the same search, so SPINN's plan space contains every
baseline's. The equations are in docs/scheduler.md; this module is pure (no rclpy, no
zenoh, no torch).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field, replace

import numpy as np

from .calibration import PLAIN_NETWORK, Calibration, provisional_accuracy
from .plan import OFFLOAD_FIRST, PLAN_MODES, PROVISIONAL_FIRST, RACE, Plan, check_mode
from .profiler import DEFAULT_ENCODING, ENCODINGS, Profile, ProfileError
from .sla import SLA, Objective

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
    encoding: str = DEFAULT_ENCODING       # the drone's cloud.encoding
    max_in_flight: int = 4                 # the drone's cloud.max_in_flight: beyond it the head answers

    def __post_init__(self):
        checks = {
            "loss_rate": 0 <= self.loss_rate <= 1, "cloud_queue_depth": self.cloud_queue_depth >= 0,
            "cloud_batch_size": self.cloud_batch_size > 0, "device_slowdown": self.device_slowdown > 0,
            "cloud_slowdown": self.cloud_slowdown > 0, "frame_rate_hz": self.frame_rate_hz > 0,
            "deadline_ms": self.deadline_ms > 0, "encoding": self.encoding in ENCODINGS,
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


# ---------------------------------------------------------------------------------
# Performance model
# ---------------------------------------------------------------------------------


def _path_times(stage_ms: np.ndarray, exit_ms: np.ndarray, heads: np.ndarray, exit_stages: np.ndarray,
                on_device: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(to_exit (C, E), to_split (C, S)): time from the input to exit e having answered
    (every earlier head evaluated) and to the split point with the heads before it.
    ``to_exit[c, e] - to_split[c, s]`` is a tail's time from split s to exit e."""
    cum = np.concatenate([[0.0], np.cumsum(stage_ms)])           # cum[s]: stages [0, s)
    head_cost = exit_ms[None, :] * heads                          # (C, E); 0 for heads that do not run
    to_exit = cum[exit_stages + 1][None, :] + np.cumsum(head_cost, axis=1)
    to_split = cum[None, :] + head_cost @ on_device.T.astype(float)
    return to_exit, to_split


def _check_consistent(device: Profile, cloud: Profile | None, cal: Calibration) -> None:
    for p in (device, cloud):
        if p is None:
            continue
        where = f"profile {p.source} ({p.role})"
        if p.model_id != cal.model_id:
            raise ProfileError(f"{where} is for model {p.model_id}, calibration {cal.source} for {cal.model_id}")
        if p.num_stages != cal.num_stages or p.exit_stages != cal.exit_stages:
            raise ProfileError(f"{where}: stages/exits {p.num_stages}/{p.exit_stages} differ from calibration "
                               f"{cal.source}: {cal.num_stages}/{cal.exit_stages}")
    if device.role != "device" or (cloud is not None and cloud.role != "cloud"):
        raise ProfileError("PerformanceModel needs a device profile and a cloud profile (or None)")


class PerformanceModel:
    """Predicts latency, accuracy, throughput, bytes and server cost for every plan."""

    def __init__(self, device: Profile, cloud: Profile | None, calibration: Calibration, *, stat: str = "median"):
        _check_consistent(device, cloud, calibration)
        self.device, self.cloud, self.cal, self.stat = device, cloud, calibration, stat
        self.num_stages = n = calibration.num_stages
        self.splits = np.arange(n + 1)
        self.thresholds = np.array([*calibration.thresholds, PLAIN_NETWORK])
        self.exit_stages = np.array(calibration.exit_stages)
        self.on_device = self.exit_stages[None, :] < self.splits[:, None]            # (S, E)
        self.rates, self.exit_acc, self.heads = self._exit_tables()                  # (C, E) each
        self.prov_acc = self._provisional_accuracy()                                 # (C, S), NaN: none
        self.sent_rates, self.sent_acc = self._sent_tables()                         # (C, S, E) each
        self.first_exit_acc = self._first_exit_accuracy()
        self.stale_acc = _stale_accuracy(calibration)
        self.dev_to_exit, self.dev_to_split = _path_times(
            device.stage_ms(stat), device.exit_ms(stat), self.heads, self.exit_stages, self.on_device)
        self.preprocess_ms = device.preprocess_ms(stat)
        self.batch_sizes = np.array(cloud.batch_sizes if cloud else [1], dtype=float)
        # (B, C, S, E); with no cloud profile nothing offloads (every split but N is invalid)
        self.cloud_tail = self._cloud_tails() if cloud else np.zeros((1, len(self.rates), n + 1, self.rates.shape[1]))
        self._wire_cache: dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]] = {}

    # -- tables that do not depend on conditions -------------------------------------------
    def _exit_tables(self):
        cal, num_exits = self.cal, len(self.exit_stages)
        rows = [cal.row(t) for t in cal.thresholds]
        rates = [r["exit_rate"] for r in rows] + [[0.0] * (num_exits - 1) + [1.0]]
        final_acc = cal.exits[-1].get("standalone_accuracy")
        if final_acc is None:          # the plain network answers like the final exit at the highest threshold
            final_acc = rows[-1]["exit_accuracy"][-1] or 0.0
        accs = [[a or 0.0 for a in r["exit_accuracy"]] for r in rows] + [[0.0] * (num_exits - 1) + [final_acc]]
        heads = np.ones((len(rows) + 1, num_exits), dtype=bool)
        heads[-1, :-1] = False         # the plain network runs only the final classifier
        return np.array(rates, dtype=float), np.array(accs, dtype=float), heads

    def _provisional_accuracy(self) -> np.ndarray:
        out = np.full((len(self.thresholds), self.num_stages + 1), np.nan)
        for c, t in enumerate(self.cal.thresholds):          # the plain network has no provisional answer
            for s in self.splits:
                a = provisional_accuracy(self.cal, int(s), t)
                out[c, s] = np.nan if a is None else a
        return out

    def _sent_tables(self) -> tuple[np.ndarray, np.ndarray]:
        """(rates, accuracy) (C, S, E) when the request leaves before any device exit runs: the
        cloud's exits (those at or after the split) answer, so frames that would have left at an
        exit before the split answer at the first exit after it. Exact with no exit before the
        split; otherwise their accuracy there is taken as the earlier exit's (a lower bound when
        deeper exits are better)."""
        C, E = self.rates.shape
        rates = np.zeros((C, self.num_stages + 1, E))
        acc = np.zeros_like(rates)
        for s in range(self.num_stages):
            j = int(np.argmax(self.exit_stages >= s))          # the first exit in the cloud
            folded = self.rates[:, : j + 1].sum(1)
            rates[:, s, j:] = self.rates[:, j:]
            rates[:, s, j] = folded
            acc[:, s, j:] = self.exit_acc[:, j:]
            with np.errstate(divide="ignore", invalid="ignore"):
                acc[:, s, j] = np.where(folded > 0, (self.rates[:, : j + 1] * self.exit_acc[:, : j + 1]).sum(1)
                                        / folded, self.exit_acc[:, j])
        rates[:, -1] = self.rates              # at split N nothing is sent: the device alone (mode invalid)
        acc[:, -1] = self.exit_acc
        return rates, acc

    def _first_exit_accuracy(self) -> float:
        """The race's provisional answer: the first exit on every frame."""
        standalone = self.cal.exits[0].get("standalone_accuracy")
        return float(standalone if standalone is not None else self.exit_acc[0, 0])

    def _cloud_tails(self) -> np.ndarray:
        """(B, C, S, E): cloud time from split s until exit e answers, per profiled batch size."""
        tails = []
        for b in self.cloud.batch_sizes:
            to_exit, to_split = _path_times(self.cloud.stage_ms(self.stat, b), self.cloud.exit_ms(self.stat, b),
                                            self.heads, self.exit_stages, self.on_device)
            overhead = np.append(self.cloud.batch_overhead_ms(b, self.stat), 0.0)      # no tail at split N
            tails.append(to_exit[:, None, :] - to_split[:, :, None] + overhead[None, :, None])
        return np.stack(tails)

    def _wire(self, encoding: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(bytes, encode ms, decode ms) per split; 0 at split N (nothing to send)."""
        if encoding not in self._wire_cache:
            zero = lambda a: np.append(np.asarray(a, dtype=float), 0.0)
            decode = self.cloud.decode_ms(encoding, self.stat) if self.cloud else np.zeros(self.num_stages)
            self._wire_cache[encoding] = (zero(self.device.wire_bytes(encoding)),
                                          zero(self.device.encode_ms(encoding, self.stat)), zero(decode))
        return self._wire_cache[encoding]

    def _cloud_tail_at(self, batch: float) -> np.ndarray:
        """Tail times at a (possibly fractional) batch size: linear between profiled sizes."""
        b = float(np.clip(batch, self.batch_sizes[0], self.batch_sizes[-1]))
        i = int(np.clip(np.searchsorted(self.batch_sizes, b) - 1, 0, len(self.batch_sizes) - 1))
        if i == len(self.batch_sizes) - 1:
            return self.cloud_tail[i]
        w = (b - self.batch_sizes[i]) / (self.batch_sizes[i + 1] - self.batch_sizes[i])
        return (1 - w) * self.cloud_tail[i] + w * self.cloud_tail[i + 1]

    # -- predictions ------------------------------------------------------------------------
    def predict_all(self, cond: Conditions, percentile: float = 95.0, on_time_ms: float | None = None,
                    ) -> PredictionTable:
        """Every plan's prediction under ``cond`` (see docs/scheduler.md for the equations);
        ``on_time_ms``: the deadline on-time accuracy is judged at (default: the drone's).
        Arrays are (row = mode x threshold column, split S[, exit E])."""
        on_time_ms = cond.deadline_ms if on_time_ms is None else on_time_ms
        parts = [self._predict_mode(cond, mode, percentile, on_time_ms) for mode in PLAN_MODES]
        stack = lambda key: np.concatenate([p[key] for p in parts])               # noqa: E731
        C = len(self.thresholds)
        return PredictionTable(
            thresholds=np.tile(self.thresholds, len(PLAN_MODES)), modes=np.repeat(np.arange(len(PLAN_MODES)), C),
            num_stages=self.num_stages, percentile=percentile, valid=stack("valid"), bottleneck=stack("bottleneck"),
            holds_device_answer=stack("holds"), metrics={m: stack(m) for m in METRICS})

    def _mode_inputs(self, mode: str, k: float, enc_ms: np.ndarray):
        """What differs between modes, per (C, S): (rates (C, S, E), exit accuracy (C, S, E), drone time
        until the request leaves, drone time after it for the provisional answer, its accuracy (NaN: none))."""
        C, S = len(self.thresholds), self.num_stages + 1
        if mode == PROVISIONAL_FIRST:
            rates = np.broadcast_to(self.rates[:, None, :], (C, S, len(self.exit_stages)))
            return (rates, np.broadcast_to(self.exit_acc[:, None, :], rates.shape), k * self.dev_to_split + k * enc_ms,
                    np.zeros((C, S)), self.prov_acc)
        plain_head = k * self.dev_to_split[-1] + k * enc_ms                     # stages only, no exit head
        before = np.broadcast_to(plain_head, (C, S))
        if mode == OFFLOAD_FIRST:
            return self.sent_rates, self.sent_acc, before, np.zeros((C, S)), np.full((C, S), np.nan)
        # race: on to the first exit (if the split comes before it) and its head, after sending
        after = np.broadcast_to(self._first_exit_work(k), (C, S))
        return self.sent_rates, self.sent_acc, before, after, np.full((C, S), self.first_exit_acc)

    def _first_exit_work(self, k: float) -> np.ndarray:
        """(S,): drone ms from the split's activation to the first exit's answer (its stages, if the
        split comes before it, and its head)."""
        cum = np.concatenate([[0.0], np.cumsum(self.device.stage_ms(self.stat))])
        return k * (np.maximum(cum[int(self.exit_stages[0]) + 1] - cum, 0.0) + self.device.exit_ms(self.stat)[0])

    def _predict_mode(self, cond: Conditions, mode: str, percentile: float, on_time_ms: float) -> dict:
        k, usable = cond.device_slowdown, cond.link_usable and self.cloud is not None
        nbytes, enc_ms, dec_ms = self._wire(cond.encoding)
        R, exit_acc, before_send, after_send, prov_acc = self._mode_inputs(mode, k, enc_ms)
        on_dev = self.on_device[None]                                      # (1, S, E)
        R_dev, R_cloud = R * on_dev, R * ~on_dev                           # (C, S, E)
        p_off = R_cloud.sum(-1)                                            # (C, S)
        pre = self.preprocess_ms * k
        busy_dev = pre + k * self.dev_to_exit[:, None, :]                     # (C, 1, E): answered at exit e
        busy_off = pre + before_send + after_send                            # (C, S): offloaded
        busy = (R_dev * busy_dev).sum(-1) + p_off * busy_off
        start = _mailbox_wait(cond.frame_rate_hz, busy_dev, R_dev, busy_off, p_off) + pre   # (C, S): head starts
        dev_exit_lat = start[..., None] + k * self.dev_to_exit[:, None, :]   # answered by a device exit
        sent_at = start + before_send                                        # the request leaves the drone
        has_prov = ~np.isnan(prov_acc)                                       # (C, S)
        prov_at = np.where(has_prov, sent_at + after_send - (k * enc_ms if mode == PROVISIONAL_FIRST else 0),
                           np.inf)

        tx, link_wait = _uplink(cond, usable, nbytes, busy, p_off)
        tail, share, queue = self._cloud_side(cond, R_cloud, p_off)
        answer_at = (sent_at + link_wait + queue)[..., None] + (tx + cond.rtt_ms + dec_ms)[None, :, None] + tail

        # the deadline: a late or lost offload answers with the provisional answer at the deadline
        # (once it exists) or, with none, the drone computes the tail then
        loss = cond.loss_rate if usable else 1.0
        tail_on_device = k * (self.dev_to_exit[:, None, :] - self.dev_to_split[:, :, None])
        fallback_work = np.where(has_prov[..., None], 0.0, tail_on_device)
        fallback_lat = np.maximum(cond.deadline_ms, np.where(has_prov, prov_at, sent_at))[..., None] + fallback_work
        late = answer_at > cond.deadline_ms
        p_fb = loss + (1 - loss) * late                                             # per cloud exit

        # the in-flight cap: beyond it the head answers at once (the provisional answer, else the first exit's)
        admitted = _admitted_share(cond, busy, p_off, R_cloud, answer_at, sent_at, loss)
        R_cloud, R_refused = R_cloud * admitted[..., None], R_cloud * (1 - admitted[..., None])
        prov = np.nan_to_num(prov_acc)[..., None]
        refused_lat = np.broadcast_to(np.where(has_prov, prov_at, sent_at + self._first_exit_work(k))[..., None],
                                      R_refused.shape)
        refused_acc = np.broadcast_to(np.where(has_prov[..., None], prov, self.first_exit_acc), R_refused.shape)

        # latency: a mixture over (exit, delivered | lost | refused)
        w = np.concatenate([R_dev + R_cloud * (1 - loss), R_cloud * loss, R_refused], axis=-1)
        delivered_lat = np.where(on_dev, dev_exit_lat, np.where(late, fallback_lat, answer_at))
        lat = np.concatenate([delivered_lat, fallback_lat, refused_lat], axis=-1)

        # accuracy: the calibrated answer, except the provisional one where a fallback uses it
        fallback_acc = np.where(has_prov[..., None], prov, exit_acc)
        accuracy = ((R_dev * exit_acc).sum(-1) + (R_cloud * (exit_acc - p_fb * (exit_acc - fallback_acc))).sum(-1)
                    + (R_refused * refused_acc).sum(-1))
        final_acc = np.concatenate([np.where(on_dev | ~late, exit_acc, fallback_acc), fallback_acc, refused_acc],
                                   axis=-1)

        device_ms = busy + (R_cloud * p_fb * fallback_work).sum(-1)
        bytes_pf = p_off * admitted * nbytes[None, :]
        server_ms = (R_cloud * (1 - loss) * (share + dec_ms[None, :, None])).sum(-1)
        fps = _throughput_bounds(cond, usable, device_ms, bytes_pf, server_ms)
        with np.errstate(divide="ignore"):
            processed = np.minimum(1.0, 1e3 / (device_ms * cond.frame_rate_hz))  # the rest: dropped in the mailbox
        on_time = self._on_time_accuracy(lat, final_acc, w, prov_at, prov, on_time_ms, processed)
        valid, holds = self._valid_and_holding(mode, usable)
        return {"valid": valid, "bottleneck": fps.argmin(0), "holds": holds,
                "latency_ms": _mixture_percentile(lat, w, percentile), "mean_latency_ms": (w * lat).sum(-1),
                "accuracy": accuracy, "on_time_accuracy": on_time, "throughput_fps": fps.min(0),
                "offload_fraction": p_off * admitted, "fallback_fraction": (R_cloud * p_fb + R_refused).sum(-1),
                "bytes_per_frame": bytes_pf, "server_ms_per_frame": server_ms, "device_ms_per_frame": device_ms}

    def _valid_and_holding(self, mode: str, usable: bool) -> tuple[np.ndarray, np.ndarray]:
        """(the plans of ``mode`` the drone can run now, those that hold a device answer without
        the network), (C, S). Each plan is counted once: provisional-first needs a device exit before
        its split (else it is offload-first) and exit heads (the plain network is offload-first); at
        split N every mode is the drone alone, counted as provisional-first."""
        C, n = len(self.thresholds), self.num_stages
        offloads = (self.splits < n) & usable
        if mode == PROVISIONAL_FIRST:
            valid = np.broadcast_to((self.splits == n) | offloads & (self.splits > self.exit_stages[0]), (C, n + 1))
            valid = valid.copy()
            valid[-1, :n] = False
            return valid, valid.copy()
        valid = np.broadcast_to(offloads, (C, n + 1)).copy()
        return valid, valid & (mode == RACE)

    def _on_time_accuracy(self, lat, final_acc, w, prov_at, prov, on_time_ms: float, processed) -> np.ndarray:
        """Share of camera frames whose own answer in force at ``on_time_ms`` is right: the final
        answer when it is out by then, else the provisional one when it is, else (and for the
        frames the busy drone never took) an answer of another frame, right at the stale rate."""
        prov_in_time = (prov_at <= on_time_ms)[..., None]
        fallback = np.where(prov_in_time, prov, self.stale_acc)
        per_answer = np.where(lat <= on_time_ms, final_acc, fallback)
        return processed * (w * per_answer).sum(-1) + (1 - processed) * self.stale_acc

    def _cloud_side(self, cond: Conditions, R_cloud: np.ndarray, p_off: np.ndarray):
        """(tail (C, S, E), per-frame server share (C, S, E), queueing (C, S)): the batch runs the
        tail to the exit that answers; the queue holds ``depth`` requests of measured (or
        predicted) compute each, unless its wait was measured directly."""
        tail = self._cloud_tail_at(cond.cloud_batch_size) * cond.cloud_slowdown
        share = tail / max(cond.cloud_batch_size, 1.0)
        if cond.cloud_queue_ms is not None:
            return tail, share, np.full(p_off.shape, cond.cloud_queue_ms)
        if cond.cloud_compute_ms is not None:
            return tail, share, np.full(p_off.shape, cond.cloud_queue_depth * cond.cloud_compute_ms)
        with np.errstate(divide="ignore", invalid="ignore"):
            per_request = np.where(p_off > 0, (R_cloud * share).sum(-1) / p_off, 0.0)
        return tail, share, cond.cloud_queue_depth * per_request

    def column(self, threshold: float) -> int:
        """Threshold -> column (snapped to the calibration grid; PLAIN_NETWORK is the last)."""
        return len(self.thresholds) - 1 if threshold == PLAIN_NETWORK else self.cal.threshold_index(threshold)

    def predict(self, split: int, threshold: float, cond: Conditions, percentile: float = 95.0,
                mode: str = PROVISIONAL_FIRST, on_time_ms: float | None = None) -> Prediction:
        if not isinstance(split, (int, np.integer)) or not 0 <= split <= self.num_stages:
            raise ValueError(f"split must be an integer in [0, {self.num_stages}], got {split!r}")
        table = self.predict_all(cond, percentile, on_time_ms)
        return table.prediction(table.row(check_mode(mode), self.column(threshold)), int(split))


def _admitted_share(cond: Conditions, busy, p_off, R_cloud, answer_at, sent_at, loss: float) -> np.ndarray:
    """(C, S): the share of offloads the drone's in-flight cap lets out. An offload holds a slot
    from leaving until its answer or its deadline; by Little's law the offloads out at once
    average their rate x that time, and those beyond the cap are refused."""
    with np.errstate(divide="ignore", invalid="ignore"):
        done_at = (1 - loss) * np.minimum(answer_at, cond.deadline_ms) + loss * cond.deadline_ms
        held_ms = np.where(p_off > 0, (R_cloud * done_at).sum(-1) / p_off - sent_at, 0.0)
        out = np.minimum(cond.frame_rate_hz, 1e3 / busy) * p_off * held_ms / 1e3
        return np.where(out > cond.max_in_flight, cond.max_in_flight / out, 1.0)


def _stale_accuracy(cal: Calibration) -> float:
    """How often an answer for another, unrelated frame is right: the chance two draws from
    the class balance agree (a camera's consecutive frames agree more often: a lower bound)."""
    frac = cal.data.get("collision_fraction")
    return 0.5 if frac is None else frac * frac + (1 - frac) * (1 - frac)


def _mailbox_wait(frame_rate_hz: float, busy_dev: np.ndarray, w_dev: np.ndarray, busy_off: np.ndarray,
                  w_off: np.ndarray) -> np.ndarray:
    """Mean ms a processed frame waits in the drone's one-frame mailbox (KEEP_LAST 1, newest wins).

    The camera is periodic, not random: a frame that keeps the drone busy ``b`` ms, shorter than
    the camera period ``T``, is done before the next frame arrives, which then waits nothing;
    one longer than ``T`` leaves the newest frame waiting ``b mod T`` (the frames before it were
    replaced). So the wait is that overrun, averaged over how long the previous frame kept the
    drone busy: per device exit (``busy_dev``, rates ``w_dev``, (C, S, E)) and offloaded
    (``busy_off``, share ``w_off``, (C, S)). (A random-arrival formula, rho x b / 2, predicted
    mean latencies 35-45 % high at 80-95 % load: test_monitor.)"""
    period = 1e3 / frame_rate_hz

    def overrun(b):
        return np.where(b > period, np.mod(b, period), 0.0)

    return (w_dev * overrun(busy_dev)).sum(-1) + w_off * overrun(busy_off)


def _uplink(cond: Conditions, usable: bool, nbytes: np.ndarray, busy: np.ndarray, p_off: np.ndarray):
    """(transfer ms per split, queueing ms (C, S)): M/D/1 waiting at the offered offload rate,
    the drone's frame rate (camera- or compute-bound) times the offload share; a saturated
    (or unusable) link never delivers."""
    with np.errstate(divide="ignore", invalid="ignore"):
        if usable:
            tx = np.where(nbytes > 0, nbytes * 8 / (cond.bandwidth_mbps * 1e3), 0.0)
        else:
            tx = np.full_like(nbytes, np.inf)
        rho = np.minimum(cond.frame_rate_hz, 1e3 / busy) * p_off * tx[None, :] / 1e3
        return tx, np.where(rho < 1, rho / (2 * (1 - rho)) * tx[None, :], np.inf)


def _throughput_bounds(cond: Conditions, usable: bool, device_ms, bytes_pf, server_ms) -> np.ndarray:
    """Frames per second each of camera, drone compute, uplink and server allows (BOTTLENECKS order)."""
    mbps = cond.bandwidth_mbps if usable else 0.0
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.stack([np.full_like(device_ms, cond.frame_rate_hz), 1e3 / device_ms,
                         np.where(bytes_pf > 0, mbps * 1e6 / 8 / bytes_pf, np.inf),
                         np.where(server_ms > 0, 1e3 / server_ms, np.inf)])


def _mixture_percentile(values: np.ndarray, weights: np.ndarray, percentile: float) -> np.ndarray:
    """Per row of the last axis: the smallest value whose cumulative weight reaches q."""
    order = np.argsort(values, axis=-1)
    cum = np.cumsum(np.take_along_axis(weights, order, -1), axis=-1)
    idx = np.argmax(cum >= percentile / 100.0 * cum[..., -1:] - 1e-9, axis=-1)
    return np.take_along_axis(np.take_along_axis(values, order, -1), idx[..., None], -1)[..., 0]


# ---------------------------------------------------------------------------------
# Strategies: SPINN and the baselines restrict the same search
# ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Strategy:
    name: str
    description: str
    early_exits: tuple[bool, ...]          # (True,): calibrated thresholds; (False,): the plain network
    splits: str                            # "all", "device" (split N) or "cloud" (split 0)
    modes: tuple[str, ...]                 # plan modes (core/plan.py)
    objectives: tuple[Objective, ...] | None = None    # None: the SLA's

    def mask(self, table: PredictionTable) -> np.ndarray:
        n = table.num_stages
        plain = np.isinf(table.thresholds)
        rows = np.isin(table.modes, [PLAN_MODES.index(m) for m in self.modes])
        rows &= np.isin(~plain, self.early_exits)
        cols = {"all": np.ones(n + 1, bool), "device": np.arange(n + 1) == n,
                "cloud": np.arange(n + 1) == 0}[self.splits]
        return rows[:, None] & cols[None, :]


STRATEGIES: dict[str, Strategy] = {s.name: s for s in (
    Strategy("spinn", "split, exit threshold and plan mode co-optimised for the SLA: every baseline's plans "
             "and more", (True, False), "all", PLAN_MODES),
    Strategy("device_only", "the whole network on the drone, no early exits", (False,), "device",
             (PROVISIONAL_FIRST,)),
    Strategy("cloud_only", "the raw frame to the cloud, the whole network there", (False,), "cloud", (OFFLOAD_FIRST,)),
    Strategy("neurosurgeon", "the split with the lowest latency, no early exits", (False,), "all",
             (OFFLOAD_FIRST, PROVISIONAL_FIRST), (Objective("minimize_latency"),)),
    Strategy("branchynet", "early exits on the drone only, the threshold best for the SLA", (True,), "device",
             (PROVISIONAL_FIRST,)),
)}


# ---------------------------------------------------------------------------------
# Decisions
# ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Decision:
    strategy: str
    prediction: Prediction
    feasible: bool                         # every hard constraint met (False: the safest plan)
    reason: str
    decided_by: str                        # the objective (or tie-break) that settled it
    binding: tuple[str, ...]               # constraints without which another plan would win

    split = property(lambda self: self.prediction.split)
    threshold = property(lambda self: self.prediction.threshold)
    mode = property(lambda self: self.prediction.mode)
    offload = property(lambda self: self.prediction.offload)
    plan = property(lambda self: self.prediction.plan)

    def plan_fields(self) -> dict:
        """``spinn_ros/SplitPlan`` fields (the monitor adds header, plan_id, model_id).
        The plain network's threshold is infinite: the drone and the cloud skip the exit heads."""
        p = self.prediction
        return {"split_point": p.split, "exit_threshold": p.threshold, "mode": p.mode, "offload": p.offload,
                "predicted_latency_ms": p.latency_ms, "predicted_mean_latency_ms": p.mean_latency_ms,
                "predicted_accuracy": p.accuracy, "predicted_on_time_accuracy": p.on_time_accuracy,
                "predicted_throughput_fps": p.throughput_fps,
                "predicted_offload_fraction": p.offload_fraction, "predicted_bytes_per_frame": p.bytes_per_frame,
                "predicted_server_ms_per_frame": p.server_ms_per_frame, "feasible": self.feasible,
                "reason": self.reason}


def _fmt(metric: str, v: float) -> str:
    return {"accuracy": f"{v:.4f}", "on_time_accuracy": f"{v:.4f}", "throughput_fps": f"{v:.1f} fps",
            "bytes_per_frame": f"{v:.0f} B", "server_ms_per_frame": f"{v:.2f} ms",
            "latency_ms": f"{v:.1f} ms"}.get(metric, f"{v:.3g}")


def _bands(table: PredictionTable, rows: np.ndarray, splits: np.ndarray, objectives):
    """The ranking's stages: per objective (obj, best value in the maximising sense, the plans within
    its tolerance of the best), each stage starting from the plans the last one kept."""
    for obj in objectives:
        spec = obj.spec
        v = spec.sense * table[spec.metric][rows, splits]
        best = float(v.max())
        keep = v >= best - obj.band(best) - 1e-12
        rows, splits = rows[keep], splits[keep]
        yield obj, best, rows, splits


def _where(split: int, n: int) -> str:
    if split == n:
        return "all on the drone"
    return "raw frame to the cloud" if split == 0 else f"stages [0, {split}) on the drone, the rest in the cloud"


#: how much better (relative) another plan must be, on an objective without a tolerance, to replace the plan in force
INCUMBENT_MARGIN = 0.05


class Scheduler:
    """Chooses a plan for the current conditions: ``Scheduler(model, sla).decide(conditions)``."""

    def __init__(self, model: PerformanceModel, sla: SLA, strategy: str = "spinn"):
        if strategy not in STRATEGIES:
            raise ValueError(f"unknown strategy {strategy!r}; choose one of {', '.join(STRATEGIES)}")
        self.model, self.sla, self.strategy = model, sla, STRATEGIES[strategy]
        self.objectives = self.strategy.objectives or sla.objectives

    def predict(self, split: int, threshold: float, cond: Conditions, mode: str = PROVISIONAL_FIRST) -> Prediction:
        return self.model.predict(split, threshold, cond, self.sla.percentile, mode, self.sla.on_time_ms)

    def violations(self, p: Prediction) -> list[str]:
        """The SLA constraints a prediction breaks (e.g. to judge the plan in force)."""
        return [b.label for b in self.sla.bounds if not b.ok(getattr(p, b.metric))]

    def decide(self, cond: Conditions, incumbent: Plan | None = None) -> Decision:
        """The plan for ``cond``. ``incumbent``, the plan in force, stays while it meets the SLA
        and stays in every objective's band of the ranking (within the objective's tolerance of
        that stage's best, INCUMBENT_MARGIN of it where the objective has none): noise in the link
        estimates then cannot flip the drone between plans the SLA calls equal. ``binding`` stays
        that of the plan the ranking alone would pick."""
        table = self.model.predict_all(cond, self.sla.percentile, self.sla.on_time_ms)
        cand = self.strategy.mask(table) & table.valid
        if self.sla.hold_device_answer:      # control never waits on the network
            cand &= table.holds_device_answer
        oks = [b.ok(table[b.metric]) for b in self.sla.bounds]
        feasible = cand & np.logical_and.reduce(oks) if oks else cand
        if not feasible.any():
            return self._safest(table, cand, oks)
        idx, decided_by = self._rank(table, feasible, self.objectives)
        binding = tuple(self._binding(table, cand, oks, idx))
        held = table.locate(incumbent) if incumbent is not None else None
        if held is not None and held != idx and self._holds(table, feasible, held):
            idx, decided_by = held, f"the plan in force (within every objective's tolerance of {decided_by})"
        c, s = idx
        p = table.prediction(c, s)
        reason = (f"{self.strategy.name}: split {s} ({_where(s, table.num_stages)}), {self._threshold_text(p)}, "
                  f"{p.mode}; "
                  f"{int(feasible.sum())}/{int(cand.sum())} plans meet the SLA; decided by {decided_by}; "
                  f"binding: {', '.join(binding) or 'none'}")
        return Decision(self.strategy.name, p, True, reason, decided_by, binding)

    # -- ranking ----------------------------------------------------------------------------
    def _rank(self, table: PredictionTable, mask: np.ndarray, objectives) -> tuple[tuple[int, int], str]:
        """Lexicographic with tolerances: each objective keeps the plans within its band of
        the best, the next decides among them; a deterministic tie-break ends it."""
        rows, splits = np.nonzero(mask)
        steps = []
        for obj, best, rows_kept, splits_kept in _bands(table, rows, splits, objectives):
            if len(rows) == 1:
                break
            spec = obj.spec
            steps.append(f"{obj.name} ({_fmt(spec.metric, spec.sense * best)}"
                         + (f", {len(rows_kept)} tied)" if len(rows_kept) > 1 else ")"))
            rows, splits = rows_kept, splits_kept
        if len(rows) > 1:
            # tie-break: lower mean latency, then less offloading (deeper split), then the earlier mode
            # (PLAN_MODES order: the device answers first), then the higher threshold
            column = rows % (len(table.thresholds) // len(PLAN_MODES))
            order = np.lexsort((-column, table.modes[rows], -splits, table["mean_latency_ms"][rows, splits]))
            rows, splits = rows[order[:1]], splits[order[:1]]
            steps.append("tie-break (mean latency, deeper split, mode, higher threshold)")
        return (int(rows[0]), int(splits[0])), " then ".join(steps) or "the only candidate"

    def _holds(self, table: PredictionTable, feasible: np.ndarray, held: tuple[int, int]) -> bool:
        """The plan in force would stay in every objective's band of the ranking: within the
        objective's tolerance of each stage's best (INCUMBENT_MARGIN of it where it has none)."""
        if not feasible[held]:
            return False
        rows, splits = np.nonzero(feasible)
        for obj, best, _, _ in _bands(table, rows, splits, self.objectives):
            spec = obj.spec
            if spec.sense * table[spec.metric][held] < best - (obj.band(best) or INCUMBENT_MARGIN * abs(best)) - 1e-12:
                return False
        return True

    def _binding(self, table, cand, oks, idx):
        """Constraints without which the ranking would pick another plan."""
        for i, bound in enumerate(self.sla.bounds):
            others = [ok for j, ok in enumerate(oks) if j != i]
            relaxed = cand & np.logical_and.reduce(others) if others else cand
            if self._rank(table, relaxed, self.objectives)[0] != idx:
                yield f"{bound.label} (predicted {_fmt(bound.metric, float(table[bound.metric][idx]))})"

    def _safest(self, table: PredictionTable, cand: np.ndarray, oks) -> Decision:
        """Nothing meets the SLA: the device answers alone, at the threshold that best meets
        the latency bound (the most accurate that meets it, else the fastest)."""
        n = table.num_stages
        device = cand.copy()
        device[:, :n] = False
        if not device.any():                 # e.g. cloud-only: the drone runs the same network alone
            device = replace(self.strategy, splits="device", modes=(PROVISIONAL_FIRST,)).mask(table) & table.valid
        latency = [ok for b, ok in zip(self.sla.bounds, oks) if b.metric == "latency_ms"]
        meets = device & latency[0] if latency else device
        if meets.any():
            idx, _ = self._rank(table, meets, self.sla.objectives)
            how = "meets the latency bound"
        else:
            idx, _ = self._rank(table, device, (Objective("minimize_latency"),))
            how = "the lowest latency, the bound is out of reach"
        c, s = idx
        p = table.prediction(c, s)
        met = ", ".join(f"{b.label}: {int((cand & ok).sum())}/{int(cand.sum())}" for b, ok in zip(self.sla.bounds, oks))
        reason = (f"{self.strategy.name}: no plan meets the SLA (plans meeting each constraint: {met or 'none'}); "
                  f"safest: {_where(s, n)}, {self._threshold_text(p)} ({how}; "
                  f"p{table.percentile:g} {p.latency_ms:.1f} ms, accuracy {p.accuracy:.4f})")
        return Decision(self.strategy.name, p, False, reason, "safest plan", ())

    @staticmethod
    def _threshold_text(p: Prediction) -> str:
        return f"threshold {p.threshold:g}" if p.early_exits else "no early exits"
