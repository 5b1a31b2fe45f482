"""LatestSlot (core/frame_slot.py): the camera callback's one-frame mailbox. Newest frame wins
(replaced ones are counted as dropped), urgent work is never dropped and goes first, and the
worker's take() wakes on put and on close."""
from __future__ import annotations

import threading
import time

from spinn_ros.core.frame_slot import LatestSlot


def test_take_returns_the_waiting_frame_once():
    slot = LatestSlot()
    assert slot.put("f1") is False, "nothing was waiting: nothing replaced"
    assert slot.take(timeout=0) == "f1"
    assert slot.take(timeout=0) is None, "take removes the frame"
    assert slot.dropped == 0


def test_the_newest_frame_wins_and_replaced_ones_count_as_dropped():
    slot = LatestSlot()
    slot.put("f1")
    assert slot.put("f2") is True and slot.put("f3") is True
    assert slot.dropped == 2
    assert slot.take(timeout=0) == "f3"
    assert slot.put("f4") is False, "after a take nothing waits: f4 replaces nothing"
    assert slot.dropped == 2


def test_urgent_work_goes_first_in_order_and_is_never_dropped():
    slot = LatestSlot()
    slot.put("frame")
    for i in range(3):
        slot.put_urgent(f"u{i}")
    slot.put("newer frame")                               # replaces "frame", not any urgent work
    assert [slot.take(timeout=0) for _ in range(5)] == ["u0", "u1", "u2", "newer frame", None]
    assert slot.dropped == 1


def test_put_never_blocks():
    """The camera callback must return at once, however many frames it pushes."""
    slot = LatestSlot()
    start = time.perf_counter()
    for i in range(10_000):
        slot.put(i)
    assert time.perf_counter() - start < 1.0
    assert slot.dropped == 9_999 and slot.take(timeout=0) == 9_999


def test_take_times_out_with_none():
    slot = LatestSlot()
    start = time.monotonic()
    assert slot.take(timeout=0.05) is None
    assert time.monotonic() - start >= 0.04


def run_take(slot: LatestSlot, timeout: float | None) -> tuple[threading.Thread, list]:
    out: list = []
    th = threading.Thread(target=lambda: out.append((slot.take(timeout), time.monotonic())), daemon=True)
    th.start()
    return th, out


def test_a_blocked_take_wakes_on_put():
    slot = LatestSlot()
    th, out = run_take(slot, timeout=5.0)
    time.sleep(0.05)
    sent = time.monotonic()
    slot.put("frame")
    th.join(2.0)
    assert out and out[0][0] == "frame" and out[0][1] - sent < 1.0


def test_a_blocked_take_wakes_on_urgent_work():
    slot = LatestSlot()
    th, out = run_take(slot, timeout=5.0)
    time.sleep(0.05)
    slot.put_urgent("finish frame 7 on the device")
    th.join(2.0)
    assert out and out[0][0] == "finish frame 7 on the device"


def test_close_wakes_a_blocked_take_and_later_takes_do_not_block():
    slot = LatestSlot()
    th, out = run_take(slot, timeout=None)                # would wait forever without close()
    time.sleep(0.05)
    closed = time.monotonic()
    slot.close()
    th.join(2.0)
    assert not th.is_alive() and out[0][0] is None and out[0][1] - closed < 1.0
    th, out = run_take(slot, timeout=None)
    th.join(1.0)
    assert not th.is_alive() and out[0][0] is None, "take(None) after close returns at once"


def test_every_frame_is_either_taken_once_or_counted_dropped():
    """A camera thread racing the worker: no frame is lost uncounted, none is taken twice, and
    frames are taken in the order they were put."""
    slot, n = LatestSlot(), 5_000
    taken: list[int] = []
    done = threading.Event()

    def worker():
        while True:
            item = slot.take(timeout=0.01)
            if item is not None:
                taken.append(item)
            elif done.is_set():
                return

    th = threading.Thread(target=worker, daemon=True)
    th.start()
    for i in range(n):
        slot.put(i)
        if i % 100 == 0:
            time.sleep(0.0005)                            # let the worker in now and then
    done.set()
    th.join(5.0)
    assert not th.is_alive()
    assert len(taken) + slot.dropped == n
    assert taken == sorted(set(taken)), "taken twice or out of order"
    assert taken[-1] == n - 1, "the newest frame is never the one dropped"
