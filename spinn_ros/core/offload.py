"""Bookkeeping for the drone's offloads: bounded in-flight requests with deadlines.

The drone engine asks :meth:`OffloadTracker.begin` before offloading (None when too
many are in flight, so the device answers instead), hands each reply to
:meth:`finish`, and ``on_expire`` is called for every request whose deadline passes
first, so every frame gets its final answer on time: by a watchdog thread, or (with
``watchdog=False`` and a fake clock, in tests) by whoever calls :meth:`expire_due`.
A reply that arrives after its request expired is *late*: counted and discarded.
"""
from __future__ import annotations

import heapq
import itertools
import logging
import math
import threading
import time
from collections import deque
from dataclasses import dataclass
from typing import Any, Callable

log = logging.getLogger(__name__)


@dataclass
class InFlight:
    request_id: int
    frame: Any                     # the node's frame record (stamp, header, ...)
    context: Any                   # what the node needs to finish the frame (policy, provisional answer, ...)
    deadline_ns: int               # time.monotonic_ns() by which a final answer must be out
    sent_ns: int                   # time.monotonic_ns() when the request left
    wire_bytes: int = 0


@dataclass
class OffloadCounters:
    sent: int = 0
    replied: int = 0
    late: int = 0                  # reply after the deadline: discarded
    failed: int = 0                # error reply, transport failure
    expired: int = 0               # deadline passed without a reply
    skipped_full: int = 0          # not offloaded: max in flight
    skipped_no_cloud: int = 0      # not offloaded: no cloud alive
    skipped_late: int = 0          # not offloaded: the head left too little of the frame's budget
    expire_errors: int = 0         # on_expire raised (logged; the watchdog went on)


class OffloadTracker:
    def __init__(self, max_in_flight: int, on_expire: Callable[[InFlight], None], *,
                 clock: Callable[[], int] = time.monotonic_ns, watchdog: bool = True):
        if max_in_flight < 1:
            raise ValueError(f"max_in_flight must be >= 1, got {max_in_flight}")
        self.max_in_flight = max_in_flight
        self.counters = OffloadCounters()
        self._on_expire = on_expire
        self._ids = itertools.count(1)
        self._live: dict[int, InFlight] = {}
        self._heap: list[tuple[int, int]] = []          # (deadline, request id)
        self._expired_ids: deque[int] = deque(maxlen=1024)
        self._cond = threading.Condition()
        self._closed = False
        self._clock = clock
        self._watch = None
        if watchdog:
            self._watch = threading.Thread(target=self._watchdog, name="spinn-offload-deadlines", daemon=True)
            self._watch.start()

    @property
    def in_flight(self) -> int:
        return len(self._live)

    def live(self, request_id: int) -> bool:
        """Still waiting for its reply (not answered, failed or expired yet)."""
        return request_id in self._live

    def has_room(self) -> bool:
        return len(self._live) < self.max_in_flight

    def begin(self, frame, context, deadline_ns: int) -> InFlight | None:
        with self._cond:
            if len(self._live) >= self.max_in_flight:
                self.counters.skipped_full += 1
                return None
            job = InFlight(next(self._ids), frame, context, deadline_ns, self._clock())
            self._live[job.request_id] = job
            heapq.heappush(self._heap, (deadline_ns, job.request_id))
            self.counters.sent += 1
            self._cond.notify()
            return job

    def finish(self, request_id: int, ok: bool) -> InFlight | None:
        """The request's record if it was still waiting; None for a late or unknown reply."""
        with self._cond:
            job = self._live.pop(request_id, None)
            if job is None:
                if request_id in self._expired_ids:
                    self.counters.late += 1
                return None
            if ok:
                self.counters.replied += 1
            else:
                self.counters.failed += 1
            return job

    def _pop_due(self) -> tuple[InFlight | None, float]:
        """(the live request whose deadline passed, or None; seconds until the next deadline).
        Call with the lock held."""
        while self._heap:
            deadline, rid = self._heap[0]
            wait_s = (deadline - self._clock()) / 1e9
            if wait_s > 0:
                return None, wait_s
            heapq.heappop(self._heap)
            job = self._live.pop(rid, None)
            if job is not None:
                self.counters.expired += 1
                self._expired_ids.append(rid)
                return job, 0.0
        return None, math.inf

    def expire_due(self) -> int:
        """Expire every request whose deadline has passed (``on_expire`` for each); how many."""
        n = 0
        while True:
            with self._cond:
                job, _ = self._pop_due()
            if job is None:
                return n
            n += 1
            self._on_expire(job)

    def _watchdog(self) -> None:
        while True:
            with self._cond:
                while not self._closed and not self._heap:
                    self._cond.wait()
                if self._closed:
                    return
                job, wait_s = self._pop_due()
                if job is None:
                    if math.isfinite(wait_s):
                        self._cond.wait(wait_s)
                    continue
            try:
                self._on_expire(job)
            except Exception:  # noqa: BLE001 - one frame's failure must not end every later deadline
                self.counters.expire_errors += 1
                log.exception("expiring offload %d failed; the deadline watchdog goes on", job.request_id)

    def close(self) -> list[InFlight]:
        """Stop the watchdog; returns what was still in flight (the node finishes those frames)."""
        with self._cond:
            self._closed = True
            left = list(self._live.values())
            self._live.clear()
            self._cond.notify_all()
        if self._watch is not None:
            self._watch.join(timeout=2.0)
        return left
