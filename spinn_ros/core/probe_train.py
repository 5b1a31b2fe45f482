"""Bandwidth probe trains: how big, how often, and what the spacing of their arrivals says.

One payload's round trip misreads a shaped link: its first bytes leave at once on the
shaper's burst allowance (a token bucket's, a radio grant's), so a payload that fits the
burst reads as a fast link however slow the link is. Measured on the emulated link (tbf,
1 Mbit/s, 3 kB burst): 4 kB probes read 3-4 Mbit/s, the drone's 3.3 kB split tensors 3.7.

A train of equal payloads sent back to back does not: once the burst is spent, the link
passes one payload per transfer time, so they reach the cloud that far apart whatever the
round trip (packet-train dispersion). With payloads of ``S`` bytes and a burst ``B``,
payload ``j`` arrives ``max(0, j*S - B) / rate`` after the first bytes left (plus the one-way
delay), so arrivals ``j`` to ``k`` are ``(k - j) * S / rate`` apart once ``j*S >= B``.

The arrivals are the cloud's own stamps (its probe replies carry them: docs/wire-format.md),
not the replies' return to the monitor: the replies' spacing adds both computers' scheduling.
Measured at 100 Mbit/s while the drone offloaded: 16 kB payloads arrived 1.0-1.5 ms apart
(1.3 due), their replies came -1 to 7 ms apart.

A train of five reads the span from its second arrival to its fourth (exact for ``B <= 2S``),
not a single gap: each arrival is timed only to the packet that carries its payload's last
byte (TCP fills packets across payloads), so it can be late by up to one packet's time
(12 ms at 1 Mbit/s; measured: single gaps of 24 and 50 ms alternating where 37 was due).
The last payload ends the stream, so its arrival is never late: a span ending there would
read short by half a packet on average (20 % fast at 1 Mbit/s with 2 kB payloads, measured
and in arithmetic); the fifth payload is there to close the stream. Payload sizes vary at
random by up to 50 % from train to train (two payloads then vary by more than a packet), so
the packets' error falls at random and averages out instead of repeating (a 25 % spread
left 4-7 % of bias at 0.5-2 Mbit/s in arithmetic, 50 % under 2 %). The span from the first
arrival to the fourth checks the reading: its mean gap is ``(4 - B/S) / 3`` of the read span's
for ``S < B <= 2S``; under ``FIRST_GAP_SHARE`` (0.75) the burst is over 1.75 payloads and the
reading is dropped. The check is noisy (a packet, a busy computer's late callback), a burst is
not: after ``GROW_AFTER`` such trains in a row the next train's payloads are twice as big
(within the share, which then spaces trains further).
"""
from __future__ import annotations

import math
import random
from collections.abc import Sequence

#: payloads per train: the span from the second arrival to the fourth is read, the first checks
#: it, the fifth closes the stream (see above)
TRAIN_LENGTH = 5
#: the mean gap from the first arrival must be at least this share of the later ones' for the
#: reading to count (then the burst is at most 1.75 payloads: the later span is the link's rate)
FIRST_GAP_SHARE = 0.75
#: trains in a row whose payloads were too small before the payloads grow
GROW_AFTER = 3
#: payload sizes vary at random by up to this share from train to train (see above)
SIZE_SPREAD = 0.5
#: a train confirming a collapse takes at most this long at the collapsed rate (its payloads' random
#: spread included), so that it ends well within a probe timeout (1 s by default) even when the
#: collapse read a few times fast. Measured: after a step from 100 to 1 Mbit/s, the drone's slow
#: payloads put the estimate at 1.5 Mbit/s, and the confirming train, sized 16 kB for 0.5 s at
#: 1.5 Mbit/s without its spread, took over 1 s on the real 1 Mbit/s and timed out; the next train
#: was 3 s away (the 5 % share), so the estimate held 1.46 Mbit/s (CI)
CONFIRM_S = 0.25
NAN = float("nan")


def read_train(nbytes: int, arrival_ms: Sequence[float], min_gap_ms: float) -> tuple[float, bool]:
    """(time per bit in microseconds, NaN when unreadable; whether the payloads were too small)
    from the arrival times (ms, any origin, any order) of ``TRAIN_LENGTH`` payloads of ``nbytes``.
    Too small: the mean gap from the first arrival was short against the read span's (the burst
    outlasted the first payloads), or the read span's under ``min_gap_ms`` (too short to time)."""
    if len(arrival_ms) != TRAIN_LENGTH or nbytes <= 0 or not all(math.isfinite(t) for t in arrival_ms):
        raise ValueError(f"a train is {TRAIN_LENGTH} finite arrival times of a positive payload, "
                         f"got {list(arrival_ms)} for {nbytes} bytes")
    t = sorted(arrival_ms)
    later = (t[3] - t[1]) / 2
    from_first = (t[3] - t[0]) / 3
    too_small = later < min_gap_ms or from_first < FIRST_GAP_SHARE * later
    if later <= 0:
        return NAN, True
    return later * 1e3 / (nbytes * 8), too_small


class ProbeTrains:
    """The monitor's bandwidth probes: a train is due every ``period_s`` at most and, while the
    drone offloads, never more often than keeps trains within ``max_share`` of the estimated
    bandwidth (its offloads would queue behind them; a drone that keeps its frames loses nothing
    to a train, and an estimate read low while offloads filled the link recovers at once). Each
    payload is the share's worth over a period split over the train, at least the floor
    (``floor_bytes`` to start with), at most ``max_bytes``, then spread at random. ``GROW_AFTER``
    trains in a row whose payloads were too small make the floor twice their size; at
    ``max_bytes`` a reading is taken as it is (the best there is). A new link, or a rate
    several-fold from the last, starts the floor over (``reset``): the burst it was grown for
    belongs to the link before, and a floor grown on a fast link made trains that outlasted the
    probe timeout once it was slow. Nothing else caps a grown floor: growing is how trains read
    through a burst, and an estimate read wrongly low (a stall taken for a collapse) is corrected
    only by trains that do (capped by their time at a 1.2 Mbit/s estimate, 5 kB payloads never read
    through a 100 Mbit/s link's 12.5 kB burst: test_probe_train.py)."""

    def __init__(self, max_bytes: int = 16384, max_share: float = 0.05, period_s: float = 0.5,
                 floor_bytes: int = 4096, min_gap_ms: float = 1.0, seed: int | None = None):
        if not 0 < floor_bytes <= max_bytes or not 0 < max_share <= 1 or period_s <= 0 or min_gap_ms <= 0:
            raise ValueError("0 < floor_bytes <= max_bytes, max_share in (0, 1], period_s > 0, min_gap_ms > 0")
        self.max_bytes, self.max_share, self.period_s = max_bytes, max_share, period_s
        self.floor_bytes, self.min_gap_ms = floor_bytes, min_gap_ms
        self.floor = floor_bytes
        self._too_small = 0                 # trains in a row whose payloads were too small
        self._next_s = -math.inf
        self._confirm_bytes: int | None = None    # a train to confirm a collapse, of payloads this big
        self._rng = random.Random(seed)

    def reset(self) -> None:
        """A new link (the cloud came back, the rate moved several-fold): its burst is not known."""
        self.floor, self._too_small = self.floor_bytes, 0

    def payload_bytes(self, mbps: float) -> int:
        """The payload size before its random spread (the largest while the rate is unknown: the
        drone offloads nothing then, so nothing waits behind the train)."""
        if not (math.isfinite(mbps) and mbps > 0):
            return self.max_bytes
        share = self.max_share * mbps * 1e6 / 8 * self.period_s / TRAIN_LENGTH
        return int(min(self.max_bytes, max(self.floor, share)))

    def confirm(self, before_mbps: float, now_mbps: float) -> None:
        """The drone's payloads say the link collapsed from ``before_mbps`` to ``now_mbps``: the next
        train goes at once, as big as trains were before, within ``CONFIRM_S`` at the new rate. One
        sized for the payloads' reading alone would fit the burst of the link it may still be (a
        stall, not a collapse: live, a link's reconfiguration), be dropped as too small three times
        over before growing, and keep a wrong plan for 4-5 s; one sized for the old rate alone
        would outlast the probe timeout on a link that did collapse, and read nothing."""
        self._next_s = -math.inf
        self._confirm_bytes = int(max(self.floor, min(self.payload_bytes(before_mbps), _within_confirm_s(now_mbps))))

    def due(self, now_s: float, mbps: float, offloading: bool = True) -> int | None:
        """The payload size of a train to send now (and books it), or None: not yet."""
        if now_s < self._next_s:
            return None
        confirming, self._confirm_bytes = self._confirm_bytes, None
        base = confirming or self.payload_bytes(mbps)
        nbytes = min(self.max_bytes, int(base * (1 + self._rng.uniform(0, SIZE_SPREAD))))
        gap_s = self.period_s
        if offloading and math.isfinite(mbps) and mbps > 0 and not confirming:   # paced for the rate it found
            gap_s = max(gap_s, TRAIN_LENGTH * nbytes * 8 / (self.max_share * mbps * 1e6))
        self._next_s = now_s + gap_s
        return nbytes

    def read(self, nbytes: int, arrival_ms: Sequence[float]) -> float:
        """A train's time per bit in microseconds (NaN: unreadable, its payloads were too small)."""
        us_per_bit, too_small = read_train(nbytes, arrival_ms, self.min_gap_ms)
        if not too_small or nbytes >= self.max_bytes:
            self._too_small = 0
            return us_per_bit
        self._too_small += 1
        if self._too_small >= GROW_AFTER:
            self.floor, self._too_small = min(self.max_bytes, 2 * nbytes), 0
        return NAN


def _within_confirm_s(mbps: float) -> float:
    """The largest payload (before its spread) whose train ends in ``CONFIRM_S`` at ``mbps`` (inf: unknown)."""
    if not (math.isfinite(mbps) and mbps > 0):
        return math.inf
    return mbps * 1e6 / 8 * CONFIRM_S / (TRAIN_LENGTH * (1 + SIZE_SPREAD))
