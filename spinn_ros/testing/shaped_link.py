"""A shaped uplink in arithmetic, for the estimators' tests: a token bucket as tc's tbf runs it.

Tokens (bytes) accrue at the link's rate up to ``burst_bytes``; payloads leave in order, each
as soon as the link is free, at line rate while tokens last and at the token rate after; a
reply comes back ``rtt_ms`` after the payload's last byte left. With ``packet_bytes``, a
train's payloads are one byte stream cut into packets (as TCP cuts it), so a payload is
through only when the packet carrying its last byte is. A train shares the link with the
``background_mbps`` of other traffic (the drone's offloads) sent meanwhile: after the
burst, its bytes pass at what that leaves.
"""
from __future__ import annotations

import math

from ..linkemu.link import tbf_burst_bytes

__all__ = ["TokenBucketLink", "tbf_burst_bytes"]


class TokenBucketLink:
    def __init__(self, mbps: float, burst_bytes: float, rtt_ms: float, packet_bytes: int | None = None):
        self.bytes_per_ms = mbps * 1e3 / 8
        self.burst, self.rtt_ms, self.packet_bytes = float(burst_bytes), rtt_ms, packet_bytes
        self._tokens, self._at_ms = float(burst_bytes), 0.0     # tokens at the time the link was last free

    def _start(self, t_ms: float) -> tuple[float, float]:
        """When a payload handed over at ``t_ms`` starts to leave, and the tokens then."""
        start = max(t_ms, self._at_ms)
        return start, min(self.burst, self._tokens + (start - self._at_ms) * self.bytes_per_ms)

    def send(self, t_ms: float, nbytes: int) -> float:
        """The reply time of a payload of ``nbytes`` handed to the link at ``t_ms`` (in send order)."""
        start, tokens = self._start(t_ms)
        done = start + max(0.0, nbytes - tokens) / self.bytes_per_ms
        self._tokens, self._at_ms = max(0.0, tokens - nbytes), done
        return done + self.rtt_ms

    def train(self, t_ms: float, nbytes: int, count: int, background_mbps: float = 0.0) -> list[float]:
        """Reply times of ``count`` payloads sent back to back at ``t_ms``, from ``t_ms``."""
        start, tokens = self._start(t_ms)
        total = count * nbytes
        through = [j * nbytes for j in range(1, count + 1)]
        if self.packet_bytes:
            through = [min(math.ceil(b / self.packet_bytes) * self.packet_bytes, total) for b in through]
        share = max(self.bytes_per_ms - background_mbps * 1e3 / 8, 0.05 * self.bytes_per_ms)
        self._tokens = max(0.0, tokens - total)
        self._at_ms = start + max(0.0, total - tokens) / share
        return [start + max(0.0, b - tokens) / share + self.rtt_ms - t_ms for b in through]
