"""Link and cloud estimates from what the drone already measures, and when to re-plan.

Inputs are the drone's results (per offload: bytes on the wire and ``network_ms`` =
round trip minus cloud compute and queueing; a fallback with bytes sent = a failed
or expired offload), small probes (round trips), bandwidth probe trains
(core/probe_train.py), and the cloud's load reports. Outputs are the ``LinkState``
fields and the scheduler's :class:`~spinn_ros.core.prediction.Conditions`.

:class:`ChangeDetector` says when the estimates moved enough to re-plan: relative
thresholds with a floor (tiny values do not flap), hysteresis (a deviation must fall
well below the threshold to reset) and a dwell time (it must last).
"""
from __future__ import annotations

import math
import time
from collections import deque
from dataclasses import dataclass, field
from statistics import median
from typing import Callable

from .probe_train import ProbeTrains

#: spinn_ros/InferenceResult.SOURCE_* (msg/InferenceResult.msg), repeated here to stay ROS-free
SOURCE_DEVICE, SOURCE_CLOUD, SOURCE_DEVICE_FALLBACK = 0, 1, 2
NAN = float("nan")


def _finite(x) -> bool:
    return x is not None and math.isfinite(x)


def _jumped(recent: deque, current: float, factor: float) -> bool:
    """Every one of the last few samples is ``factor`` above (or below) the estimate: the
    quantity itself moved (a handover, a radio fade), it is not noise or a spike."""
    if len(recent) < recent.maxlen or not _finite(current) or current <= 0:
        return False
    return min(recent) > factor * current or max(recent) < current / factor


class RttEstimator:
    """Typical round trip of small payloads: a short median filter drops spikes (one slow
    probe says nothing about the path), then an EWMA smooths. A median, not a minimum:
    the scheduler needs the round trip an offload sees, and the bandwidth estimate
    subtracts it (a min-filter's low bias would read as a slower link)."""

    def __init__(self, window: int = 9, alpha: float = 0.1, jump_window: int = 4, jump_factor: float = 2.0):
        if window < 1 or not 0 < alpha <= 1 or jump_window < 1 or jump_factor <= 1:
            raise ValueError("window, jump_window >= 1, alpha in (0, 1], jump_factor > 1")
        self.alpha, self.jump_factor = alpha, jump_factor
        self._recent: deque[float] = deque(maxlen=window)
        self._last: deque[float] = deque(maxlen=jump_window)
        self.value = NAN
        self.samples = 0

    def update(self, rtt_ms: float) -> float:
        if not _finite(rtt_ms) or rtt_ms < 0:
            return self.value
        self._recent.append(rtt_ms)
        self._last.append(rtt_ms)
        if _jumped(self._last, self.value, self.jump_factor):     # follow a step at once, not at EWMA pace
            self._recent.clear()
            self._recent.extend(self._last)
            self.value = median(self._last)
        typical = median(self._recent)
        self.value = typical if self.samples == 0 else self.value + self.alpha * (typical - self.value)
        self.samples += 1
        return self.value


class BandwidthEstimator:
    """Sustained uplink rate. Its samples are probe trains' dispersions, as time per bit
    (core/probe_train.py): the estimate is the inverse of their trimmed mean over a window
    (the ``trim`` share dropped at each end; averaging times, not rates, keeps the noise
    additive), and restarts from the last few when they all lie ``jump_factor`` away.

    A single payload's round trip (an offload, an expired offload) is no such sample: on a
    shaped link a payload that fits the burst allowance reads several-fold fast, and one
    queued behind others reads slow. It counts only as evidence that the link collapsed (a
    fade, a handover): when payloads in a row, at least ``jump_window`` of them and for at least
    ``collapse_s``, all took ``jump_factor`` times their transfer time at the estimate *plus*
    ``collapse_margin_ms``, the window restarts from them without waiting for a train, and the
    next train's reading replaces them. The margin keeps what is not the link out: on the busy
    2-core test machine the drone's 32 kB frames took 3-13 ms beyond the round trip on a
    100 Mbit/s link (2.6 ms of transfer), and a 2x test alone restarted the estimate every 1-2 s;
    it must stay under what a collapse costs a small payload (6 kB on a 1 Mbit/s link with a 3 kB
    burst: 25 ms). The duration keeps out a stall: offloads queued behind a probe train (65 ms of
    a 25 Mbit/s link carrying 17 Mbit/s of offloads) or a TCP retransmission timeout (200 ms and
    more) are slow three in a row, and each restarted the estimate at 0.2-4 Mbit/s."""

    def __init__(self, window: int = 40, trim: float = 0.2, min_transfer_ms: float = 0.2,
                 jump_window: int = 3, jump_factor: float = 2.0, collapse_margin_ms: float = 10.0,
                 collapse_s: float = 0.3):
        if (window < 1 or not 0 <= trim < 0.5 or min_transfer_ms <= 0 or jump_window < 1 or jump_factor <= 1
                or collapse_margin_ms < 0 or collapse_s < 0):
            raise ValueError("window, jump_window >= 1, trim in [0, 0.5), min_transfer_ms > 0, jump_factor > 1, "
                             "collapse_margin_ms >= 0, collapse_s >= 0")
        self.trim, self.min_transfer_ms, self.jump_factor = trim, min_transfer_ms, jump_factor
        self.collapse_margin_ms, self.collapse_s = collapse_margin_ms, collapse_s
        self._slow_since = math.inf         # when the payloads in a row began to be slow
        self._us_per_bit: deque[float] = deque(maxlen=window)
        self._recent_trains: deque[float] = deque(maxlen=jump_window)
        self._recent_payloads: deque[float] = deque(maxlen=jump_window)     # the last slow ones in a row
        self._from_payloads = False        # the window holds payloads' stopgap, not trains
        self.samples = 0
        self.jumps = 0

    def add_train(self, us_per_bit: float) -> float:
        """A probe train's time per bit (microseconds)."""
        if _finite(us_per_bit) and us_per_bit > 0:
            if self._from_payloads:
                self._us_per_bit.clear()
                self._from_payloads = False
            self._us_per_bit.append(us_per_bit)
            self._recent_trains.append(us_per_bit)
            self.samples += 1
            if _jumped(self._recent_trains, 1.0 / self.value, self.jump_factor):
                self._restart(self._recent_trains)
        return self.value

    def add_payload(self, nbytes: int, network_ms: float, rtt_ms: float, now_s: float) -> float:
        """A single payload of ``nbytes`` that took ``network_ms`` on a link of round trip ``rtt_ms``,
        answered (or given up) at ``now_s`` (seconds, monotonic)."""
        if nbytes > 0 and _finite(network_ms) and _finite(rtt_ms):
            transfer_ms = max(network_ms - rtt_ms, self.min_transfer_ms)
            self.samples += 1
            expected_ms = nbytes * 8 / (self.value * 1e3)
            if not transfer_ms > self.jump_factor * expected_ms + self.collapse_margin_ms:
                self._recent_payloads.clear()          # in a row, or it is a hiccup
                return self.value
            if not self._recent_payloads:
                self._slow_since = now_s
            self._recent_payloads.append(transfer_ms * 1e3 / (nbytes * 8))
            full = len(self._recent_payloads) == self._recent_payloads.maxlen
            if full and now_s - self._slow_since >= self.collapse_s:
                self._restart(self._recent_payloads)
                self._from_payloads = True
        return self.value

    def _restart(self, recent: deque) -> None:
        """The rate moved several-fold: the long window must not wait to turn over."""
        self._us_per_bit.clear()
        self._us_per_bit.extend(recent)
        self._recent_trains.clear()
        self._recent_payloads.clear()
        self.jumps += 1

    @property
    def value(self) -> float:
        """Mbit/s (NaN before the first train)."""
        if not self._us_per_bit:
            return NAN
        times = sorted(self._us_per_bit)
        cut = int(len(times) * self.trim)
        kept = times[cut: len(times) - cut]
        return 1.0 / (sum(kept) / len(kept))         # bits per microsecond = Mbit/s


class OffloadRate:
    """The drone's own offload traffic: the bytes of the offloads answered over the last ``window_s``.
    A probe train shares the link with it and gets what it leaves (on the emulated 25 Mbit/s link,
    with 13 Mbit/s of offloads, trains read 14): the link's rate is the train's plus this."""

    def __init__(self, window_s: float = 1.0):
        if window_s <= 0:
            raise ValueError("window_s must be > 0")
        self.window_s = window_s
        self._answered: deque[tuple[float, int]] = deque()     # (when, bytes)
        self._since = math.inf                                 # when the answers began to flow

    def add(self, now_s: float, nbytes: int) -> None:
        self._forget(now_s)
        if not self._answered:
            self._since = now_s
        self._answered.append((now_s, nbytes))

    def mbps(self, now_s: float) -> float:
        self._forget(now_s)
        return sum(n for _, n in self._answered) * 8 / (self.window_s * 1e6)

    def flowing_s(self, now_s: float) -> float:
        """How long offloads have been answered without a ``window_s`` gap (0: none lately)."""
        self._forget(now_s)
        return now_s - self._since if self._answered else 0.0

    def _forget(self, now_s: float) -> None:
        while self._answered and self._answered[0][0] < now_s - self.window_s:
            self._answered.popleft()


class LossEstimator:
    """Share of failed or expired offloads and lost probes over the last ``window`` outcomes
    (0 with no outcome yet)."""

    def __init__(self, window: int = 50):
        if window < 1:
            raise ValueError("window must be >= 1")
        self._outcomes: deque[bool] = deque(maxlen=window)

    def update(self, ok: bool) -> float:
        self._outcomes.append(bool(ok))
        return self.value

    @property
    def samples(self) -> int:
        return len(self._outcomes)

    @property
    def value(self) -> float:
        return self._outcomes.count(False) / len(self._outcomes) if self._outcomes else 0.0


class Ewma:
    """Exponentially weighted mean (NaN until the first sample)."""

    def __init__(self, alpha: float = 0.2):
        self.alpha, self.value = alpha, NAN

    def update(self, x: float) -> float:
        if _finite(x):
            self.value = x if math.isnan(self.value) else self.value + self.alpha * (x - self.value)
        return self.value


@dataclass
class LinkEstimator:
    """All the monitor's estimates, fed from drone results, probes and cloud load reports."""

    rtt: RttEstimator = field(default_factory=RttEstimator)
    bandwidth: BandwidthEstimator = field(default_factory=BandwidthEstimator)
    loss: LossEstimator = field(default_factory=LossEstimator)
    cloud_compute_ms: Ewma = field(default_factory=Ewma)
    cloud_queue_ms: Ewma = field(default_factory=Ewma)
    cloud_queue_depth: Ewma = field(default_factory=Ewma)
    cloud_batch_size: Ewma = field(default_factory=Ewma)
    cloud_slowdown: Ewma = field(default_factory=Ewma)    # the cloud's measured compute / its profile's
    cloud_alive: bool = False
    #: the cloud profile's ms per request for (split, exit index, threshold, batch size), set by the
    #: planner: with it each cloud answer also measures how fast the cloud runs against its profile
    expected_cloud_ms: Callable[[int, int, float, float], float] | None = None
    trains: ProbeTrains = field(default_factory=ProbeTrains)     # bandwidth probes: their size and pace
    offloads: OffloadRate = field(default_factory=OffloadRate)   # the drone's own traffic beside the trains
    clock: Callable[[], float] = time.monotonic
    #: offloads are evidence of a collapse only once they have flowed this long, and as long after a
    #: new plan: the first ones after an idle spell, or after a plan that sends more, ride a connection
    #: paced for less (TCP's slow start, BBR's startup); measured at 100 Mbit/s and 50 ms, 32 kB frames
    #: then took 0.1-0.5 s beyond the round trip, which read as a 0.5-2 Mbit/s link
    warm_s: float = 1.0
    _plan_since: float = field(default=-math.inf, init=False, repr=False)     # when the plan in force began

    # -- inputs -----------------------------------------------------------------------------
    def reset_link(self) -> None:
        """Forget the link measurements (a cloud came back after an outage: what the link did
        before says nothing about it now; until new samples arrive the planner keeps the drone alone)."""
        self.rtt, self.bandwidth, self.loss = RttEstimator(), BandwidthEstimator(), LossEstimator()
        self.offloads = OffloadRate(self.offloads.window_s)
        self.trains.reset()

    def on_probe(self, rtt_ms: float | None) -> None:
        """A small probe's round trip (None: lost)."""
        self.loss.update(rtt_ms is not None)
        if rtt_ms is not None:
            self.rtt.update(rtt_ms)

    def on_probe_train(self, nbytes: int, arrival_ms: list[float | None]) -> None:
        """A bandwidth probe train of payloads of ``nbytes``: when each reached the cloud (ms, the
        cloud's clock; None: lost). A train with a loss gives no reading, and counts as no loss: its
        last payloads may time out behind its first on a link that just collapsed. The reading is
        what the drone's offloads left the train; the link's rate adds their rate back."""
        if all(t is not None for t in arrival_ms):
            us_per_bit = self.trains.read(nbytes, arrival_ms)
            if _finite(us_per_bit) and us_per_bit > 0:
                us_per_bit = 1.0 / (1.0 / us_per_bit + self.offloads.mbps(self.clock()))
            jumps = self.bandwidth.jumps
            self.bandwidth.add_train(us_per_bit)
            if self.bandwidth.jumps != jumps:
                self.trains.reset()         # a link several-fold from the last: the burst it knew is not this one's

    def on_offload(self, wire_bytes: int, network_ms: float, cloud_compute_ms: float = NAN,
                   cloud_queue_ms: float = NAN) -> None:
        """A cloud answer: evidence of a slower link if it was slow (with the current RTT), cloud timings."""
        self.loss.update(True)
        self.offloads.add(self.clock(), wire_bytes)
        self._collapse_evidence(wire_bytes, network_ms)
        self.cloud_compute_ms.update(cloud_compute_ms)
        self.cloud_queue_ms.update(cloud_queue_ms)

    def on_offload_failed(self) -> None:
        """An offload that failed or expired (the drone fell back to its own answer). In the first
        ``warm_s`` of a new plan it is the connection warming to the plan's traffic, not the link's
        loss: counted, it kept offload-first off a 100 Mbit/s, 50 ms link for the rest of the run
        (loss 0.08 put its p95 over the bound; as the loss ebbed, nothing re-planned)."""
        if self.clock() - self._plan_since >= self.warm_s:
            self.loss.update(False)

    def on_result(self, r) -> None:
        """A ``spinn_ros/InferenceResult`` (or anything with its fields)."""
        if r.provisional or r.offload_bytes <= 0:
            return
        if r.source == SOURCE_CLOUD:
            self.on_offload(r.offload_bytes, r.network_ms, r.cloud_compute_ms, r.cloud_queue_ms)
            self._measure_cloud_speed(r)
        elif r.source == SOURCE_DEVICE_FALLBACK:
            self.on_offload_failed()
            if _finite(self.rtt.value) and r.network_ms > 2 * self.rtt.value:
                # given up at its deadline after more than two round trips: it needed at least this
                # long, so the link delivers at most this rate; a collapsing link shows at once,
                # not only when an offload finally succeeds
                self._collapse_evidence(r.offload_bytes, r.network_ms)

    def on_new_plan(self) -> None:
        """A new plan is in force: what its offloads meet at first is the connection's state."""
        self._plan_since = self.clock()

    def _collapse_evidence(self, nbytes: int, network_ms: float) -> None:
        """A payload's round trip, for BandwidthEstimator.add_payload once the offloads are warm."""
        now = self.clock()
        if self.offloads.flowing_s(now) >= self.warm_s and now - self._plan_since >= self.warm_s:
            before, jumps = self.bandwidth.value, self.bandwidth.jumps
            self.bandwidth.add_payload(nbytes, network_ms, self.rtt.value, now)
            if self.bandwidth.jumps != jumps:
                self.trains.reset()
                self.trains.confirm(before, self.bandwidth.value)    # a train at once: a stall, or a collapse?

    def _measure_cloud_speed(self, r) -> None:
        if self.expected_cloud_ms is None or not r.cloud_compute_ms > 0:
            return
        batch = self.cloud_batch_size.value
        expected = self.expected_cloud_ms(int(r.split_point), int(r.exit_index), float(r.exit_threshold),
                                          max(batch, 1.0) if _finite(batch) else 1.0)
        if _finite(expected) and expected > 0:
            self.cloud_slowdown.update(r.cloud_compute_ms / expected)

    def on_cloud_load(self, load: dict) -> None:
        """The cloud's load report (``TailServer.load()``: queue_depth, compute_ms, batch_size)."""
        self.cloud_queue_depth.update(load.get("queue_depth", NAN))
        if load.get("batch_size", 0) > 0:     # 0: nothing served recently
            self.cloud_compute_ms.update(load.get("compute_ms", NAN))
            self.cloud_batch_size.update(load["batch_size"])

    # -- outputs ----------------------------------------------------------------------------
    def link_state_fields(self) -> dict:
        """``spinn_ros/LinkState`` fields (the monitor adds the header)."""
        nan0 = lambda x: 0.0 if math.isnan(x) else float(x)
        return {"bandwidth_mbps": float(self.bandwidth.value), "rtt_ms": float(self.rtt.value),
                "loss_rate": float(self.loss.value),
                "cloud_alive": self.cloud_alive, "cloud_queue_depth": nan0(self.cloud_queue_depth.value),
                "cloud_compute_ms": nan0(self.cloud_compute_ms.value),
                "cloud_batch_size": nan0(self.cloud_batch_size.value),
                "samples": self.rtt.samples + self.bandwidth.samples}

    def conditions(self, **settings):
        """Scheduler conditions now; ``settings``: frame_rate_hz, deadline_ms, encoding, device_slowdown, ..."""
        from .prediction import Conditions

        queue_ms, slowdown = self.cloud_queue_ms.value, self.cloud_slowdown.value
        return Conditions.from_link_state(_Fields(self.link_state_fields()),
                                          cloud_queue_ms=None if math.isnan(queue_ms) else queue_ms,
                                          cloud_slowdown=min(max(slowdown, 0.1), 100.0) if _finite(slowdown) else 1.0,
                                          **settings)

    def change_values(self) -> dict:
        """What :class:`ChangeDetector` watches."""
        f = self.link_state_fields()
        f["transfer_ms"] = transfer_ms(f["bandwidth_mbps"])
        return {k: f[k] for k in ("transfer_ms", "rtt_ms", "loss_rate", "cloud_alive", "cloud_queue_depth",
                                  "cloud_compute_ms")}


#: the payload the change detector judges bandwidth by: about one offloaded split tensor
REFERENCE_PAYLOAD_BYTES = 16_000


def transfer_ms(bandwidth_mbps: float, nbytes: int = REFERENCE_PAYLOAD_BYTES) -> float:
    """Time a typical offload spends on the wire. Re-planning watches this rather than the
    rate: 100 and 400 Mbit/s differ by 4x but both move a split tensor in about a
    millisecond (no decision changes, and such rates cannot be measured with small payloads
    anyway), while 10 and 5 Mbit/s differ by 13 ms a frame."""
    return nbytes * 8 / (bandwidth_mbps * 1e3) if _finite(bandwidth_mbps) and bandwidth_mbps > 0 else NAN


class _Fields:
    def __init__(self, d: dict):
        self.__dict__.update(d)


# ---------------------------------------------------------------------------------
# Change detection
# ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Trigger:
    """A metric counts as changed when ``|x - ref| / max(|ref|, floor) > rel`` for ``dwell_s``;
    the dwell clock resets only once the deviation falls below ``release * rel``.

    A second, faster tier (``fast_rel`` for ``fast_dwell_s``, same release rule) catches
    large steps, such as a link dropping to a fraction of its rate, within a fraction of
    a second; moderate drifts still need the full dwell, so noise does not flap."""

    rel: float
    floor: float
    dwell_s: float = 1.0
    release: float = 0.5
    fast_rel: float | None = None
    fast_dwell_s: float = 0.25

    def tiers(self) -> list[tuple[float, float, float]]:
        """(relative threshold, dwell, release) of each tier; the fast tier's deviation must
        hold above its threshold throughout (no hysteresis), or a moderate change lingering
        near it would count as a large one."""
        fast = [(self.fast_rel, self.fast_dwell_s, 1.0)] if self.fast_rel else []
        return [(self.rel, self.dwell_s, self.release)] + fast

    def deviation(self, value: float, ref: float) -> float:
        if math.isnan(ref):
            return math.inf if not math.isnan(value) else 0.0     # the first estimate is news
        return abs(value - ref) / max(abs(ref), self.floor)


#: defaults: 30 % on transfer time and RTT (both below 5 ms count as 5: a few ms never
#: change a plan), 5 points of loss, each for 1 s; a doubling of transfer time or RTT or
#: 15 points of loss within 0.25 s (a new plan within a second of a real step); cloud
#: liveliness at once (Zenoh's lease already debounces it)
DEFAULT_TRIGGERS: dict[str, Trigger] = {
    "transfer_ms": Trigger(0.3, 5.0, fast_rel=1.0),
    "rtt_ms": Trigger(0.3, 5.0, fast_rel=1.0),
    "loss_rate": Trigger(1.0, 0.05, fast_rel=3.0),
    "cloud_alive": Trigger(0.5, 1.0, dwell_s=0.0),
    "cloud_queue_depth": Trigger(1.0, 2.0),
    "cloud_compute_ms": Trigger(0.5, 1.0),
}


class ChangeDetector:
    """``update(now_s, values)`` -> the metrics that changed for long enough (empty: keep
    the plan). When it reports, the current values become the new reference."""

    def __init__(self, triggers: dict[str, Trigger] | None = None):
        self.triggers = dict(DEFAULT_TRIGGERS if triggers is None else triggers)
        self.reference: dict[str, float] = {}
        self._since: dict[tuple[str, int], float | None] = {}

    def rebase(self, values: dict) -> None:
        """Make ``values`` the reference (call after any re-plan) and restart every dwell clock."""
        self.reference = {k: float(values[k]) for k in self.triggers if k in values}
        self._since = {}

    def update(self, now_s: float, values: dict) -> list[str]:
        if not self.reference:
            self.rebase(values)
            return sorted(self.reference)          # no plan yet: everything is news
        fired = []
        for key, trig in self.triggers.items():
            if key not in values or math.isnan(float(values[key])):
                continue                           # no information: hold the clock as it is
            d = trig.deviation(float(values[key]), self.reference.get(key, NAN))
            if any(self._dwelt(key, tier, d, rel, dwell, release, now_s)
                   for tier, (rel, dwell, release) in enumerate(trig.tiers())):
                fired.append(key)
        if fired:   # a missing or NaN value keeps its old reference
            known = {k: v for k, v in values.items() if not math.isnan(float(v))}
            self.rebase({**self.reference, **known})
        return fired

    def _dwelt(self, key: str, tier: int, deviation: float, rel: float, dwell_s: float, release: float,
               now_s: float) -> bool:
        """Advance one tier's dwell clock; True once the deviation has lasted ``dwell_s``."""
        clock = (key, tier)
        if deviation > rel:
            if self._since.get(clock) is None:
                self._since[clock] = now_s
        elif deviation <= release * rel:
            self._since[clock] = None
        since = self._since.get(clock)
        return since is not None and now_s - since >= dwell_s
