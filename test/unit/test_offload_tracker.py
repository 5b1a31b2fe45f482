"""OffloadTracker (core/offload.py): bounded in-flight offloads with deadlines.

Most cases run with ``watchdog=False`` on a fake clock (the tracker's ``clock`` argument),
expiring by calling ``expire_due``; a few check the real watchdog thread with short deadlines."""
from __future__ import annotations

import threading
import time

import pytest

from spinn_ros.core.offload import InFlight, OffloadTracker

MS = 1_000_000


class FakeClock:
    def __init__(self, now_ns: int = 1_000 * MS):
        self.now_ns = now_ns

    def __call__(self) -> int:
        return self.now_ns

    def advance(self, ms: float) -> None:
        self.now_ns += int(ms * MS)


def tracker(max_in_flight: int = 4, expired: list | None = None, clock: FakeClock | None = None) -> OffloadTracker:
    sink = expired if expired is not None else []
    return OffloadTracker(max_in_flight, sink.append, clock=clock or FakeClock(), watchdog=False)


@pytest.mark.parametrize("bad", [0, -1])
def test_max_in_flight_below_one_is_refused(bad):
    with pytest.raises(ValueError, match=f"max_in_flight must be >= 1, got {bad}"):
        OffloadTracker(bad, lambda job: None, watchdog=False)


def test_begin_records_the_request_and_numbers_them_from_one():
    clock = FakeClock()
    t = tracker(clock=clock)
    a = t.begin("frame-a", "ctx-a", deadline_ns=clock() + 100 * MS)
    clock.advance(5)
    b = t.begin("frame-b", "ctx-b", deadline_ns=clock() + 100 * MS)
    assert isinstance(a, InFlight) and (a.request_id, b.request_id) == (1, 2)
    assert (a.frame, a.context, a.sent_ns) == ("frame-a", "ctx-a", 1_000 * MS)
    assert b.sent_ns == 1_005 * MS and b.deadline_ns == 1_105 * MS
    assert t.in_flight == 2 and t.live(1) and t.live(2) and not t.live(3)
    assert t.counters.sent == 2


def test_begin_refuses_beyond_max_in_flight_and_counts_it():
    clock = FakeClock()
    t = tracker(max_in_flight=2, clock=clock)
    jobs = [t.begin(i, None, clock() + 100 * MS) for i in range(2)]
    assert all(jobs) and not t.has_room()
    assert t.begin("third", None, clock() + 100 * MS) is None
    assert t.begin("fourth", None, clock() + 100 * MS) is None
    assert (t.counters.sent, t.counters.skipped_full, t.in_flight) == (2, 2, 2)
    t.finish(jobs[0].request_id, ok=True)                   # a reply frees a place
    assert t.has_room() and t.begin("fifth", None, clock() + 100 * MS) is not None


def test_finish_counts_replies_and_failures_once():
    clock = FakeClock()
    t = tracker(clock=clock)
    ok, bad = (t.begin(i, None, clock() + 100 * MS) for i in range(2))
    assert t.finish(ok.request_id, ok=True) is ok
    assert t.finish(bad.request_id, ok=False) is bad
    assert (t.counters.replied, t.counters.failed, t.in_flight) == (1, 1, 0)
    # a duplicate reply, or one nobody asked for, is neither a reply nor late
    assert t.finish(ok.request_id, ok=True) is None and t.finish(999, ok=True) is None
    assert (t.counters.replied, t.counters.failed, t.counters.late) == (1, 1, 0)


def test_expire_due_expires_only_passed_deadlines_in_deadline_order():
    clock, expired = FakeClock(), []
    t = tracker(expired=expired, clock=clock)
    late_one = t.begin("b", None, clock() + 30 * MS)      # begun first, due last
    early_one = t.begin("a", None, clock() + 10 * MS)
    never = t.begin("c", None, clock() + 1000 * MS)
    assert t.expire_due() == 0 and expired == []
    clock.now_ns = early_one.deadline_ns - 1
    assert t.expire_due() == 0, "1 ns before the first deadline"
    clock.advance(40)
    assert t.expire_due() == 2
    assert [j.frame for j in expired] == ["a", "b"], "expired in deadline order, not begin order"
    assert not t.live(early_one.request_id) and not t.live(late_one.request_id) and t.live(never.request_id)
    assert (t.counters.expired, t.in_flight) == (2, 1)
    assert t.expire_due() == 0, "an expired request expires once"


def test_on_expire_sees_the_request_already_gone():
    """The callback runs after the request left the books, so it may start a new one (the place is free)."""
    clock = FakeClock()
    seen = []

    def on_expire(job):
        seen.append((t.live(job.request_id), t.in_flight, t.has_room()))
        seen.append(t.begin("retry", None, clock() + 100 * MS))

    t = OffloadTracker(1, on_expire, clock=clock, watchdog=False)
    t.begin("first", None, clock() + 10 * MS)
    clock.advance(20)
    assert t.expire_due() == 1
    assert seen[0] == (False, 0, True) and seen[1] is not None and seen[1].frame == "retry"


def test_a_reply_after_its_deadline_is_late_and_discarded():
    clock, expired = FakeClock(), []
    t = tracker(expired=expired, clock=clock)
    job = t.begin("f", None, clock() + 10 * MS)
    clock.advance(11)
    t.expire_due()
    assert t.finish(job.request_id, ok=True) is None, "the device already answered this frame"
    assert (t.counters.late, t.counters.replied, t.counters.expired) == (1, 0, 1)
    assert t.finish(job.request_id, ok=False) is None and t.counters.late == 2 and t.counters.failed == 0


def test_a_request_answered_in_time_never_expires():
    clock, expired = FakeClock(), []
    t = tracker(expired=expired, clock=clock)
    job = t.begin("f", None, clock() + 10 * MS)
    assert t.finish(job.request_id, ok=True) is job
    clock.advance(1000)
    assert t.expire_due() == 0 and expired == [] and t.counters.expired == 0


def test_close_hands_back_what_is_still_in_flight():
    clock, expired = FakeClock(), []
    t = tracker(expired=expired, clock=clock)
    a = t.begin("a", None, clock() + 10 * MS)
    b = t.begin("b", None, clock() + 20 * MS)
    t.finish(a.request_id, ok=True)
    left = t.close()
    assert left == [b] and t.in_flight == 0 and not t.live(b.request_id)
    clock.advance(100)
    assert t.expire_due() == 0 and expired == [], "the node finishes what close() returned: no second answer"


# -- the watchdog thread (real clock, short deadlines) ------------------------------------
def test_the_watchdog_expires_a_request_on_time():
    fired = threading.Event()
    got = []
    t = OffloadTracker(2, lambda job: (got.append((job, time.monotonic_ns())), fired.set()))
    try:
        job = t.begin("f", None, time.monotonic_ns() + 50 * MS)
        assert fired.wait(10.0), "the watchdog did not expire the request"
        expired_job, at_ns = got[0]
        assert expired_job is job and at_ns >= job.deadline_ns, "expired before its deadline"
        assert t.counters.expired == 1 and not t.live(job.request_id)
    finally:
        t.close()


def test_a_new_earlier_deadline_wakes_the_watchdog():
    """The watchdog sleeps until the earliest deadline it knows; a later begin() with an earlier
    deadline must wake it, or that request would wait for the far one."""
    fired = threading.Event()
    got = []
    t = OffloadTracker(4, lambda job: (got.append(job.frame), fired.set()))
    try:
        t.begin("far", None, time.monotonic_ns() + 60_000 * MS)
        time.sleep(0.05)                                    # the watchdog now waits ~60 s
        start = time.monotonic()
        t.begin("near", None, time.monotonic_ns() + 20 * MS)
        assert fired.wait(10.0) and got == ["near"]
        assert time.monotonic() - start < 10.0, "the near request waited for the far one"
    finally:
        left = t.close()
    assert [j.frame for j in left] == ["far"]


def watchdogs() -> set[threading.Thread]:
    return {th for th in threading.enumerate() if th.name == "spinn-offload-deadlines"}


def test_close_stops_a_waiting_watchdog_promptly():
    before = watchdogs()
    t = OffloadTracker(1, lambda job: None)
    assert len(watchdogs() - before) == 1
    t.begin("far", None, time.monotonic_ns() + 60_000 * MS)
    time.sleep(0.02)
    start = time.monotonic()
    t.close()
    assert time.monotonic() - start < 10.0, "close waited for the 60 s deadline"     # room for a loaded machine
    assert watchdogs() - before == set(), "the watchdog thread is still running"


@pytest.mark.filterwarnings("ignore::pytest.PytestUnhandledThreadExceptionWarning")
def test_a_failing_on_expire_does_not_stop_later_expiries():
    fired = threading.Event()
    calls = []

    def on_expire(job):
        calls.append(job.frame)
        if job.frame == "first":
            raise RuntimeError("publisher gone")
        fired.set()

    t = OffloadTracker(4, on_expire)
    try:
        t.begin("first", None, time.monotonic_ns() + 10 * MS)
        t.begin("second", None, time.monotonic_ns() + 60 * MS)
        assert fired.wait(10.0), f"expired only {calls}"
    finally:
        t.close()
