"""Bandwidth probe trains (core/probe_train.py) on a token-bucket link computed in arithmetic,
and the bandwidth estimate they feed, against single payloads that fit the shaper's burst."""
import math

import numpy as np
import pytest

from spinn_ros.core.estimators import LinkEstimator
from spinn_ros.core.probe_train import CONFIRM_S, GROW_AFTER, TRAIN_LENGTH, ProbeTrains, read_train
from spinn_ros.testing.shaped_link import TokenBucketLink, tbf_burst_bytes

RTT_MS = 10.0
S = 4096


@pytest.mark.parametrize("burst_share", [0.0, 0.5, 1.0, 1.5, 1.7])
def test_a_train_reads_the_rate_whatever_burst_up_to_one_and_three_quarter_payloads(burst_share):
    replies = TokenBucketLink(1.0, burst_share * S, RTT_MS).train(0.0, S, TRAIN_LENGTH)
    us_per_bit, too_small = read_train(S, replies, min_gap_ms=1.0)
    assert not too_small and 1 / us_per_bit == pytest.approx(1.0, rel=1e-6)


@pytest.mark.parametrize("burst_share", [1.8, 2.5, 5.0])
def test_a_longer_burst_says_the_payloads_are_too_small(burst_share):
    replies = TokenBucketLink(1.0, burst_share * S, RTT_MS).train(0.0, S, TRAIN_LENGTH)
    assert read_train(S, replies, min_gap_ms=1.0)[1]


def test_gaps_too_short_to_time_say_the_payloads_are_too_small():
    replies = TokenBucketLink(1000.0, 0, RTT_MS).train(0.0, S, TRAIN_LENGTH)     # 33 us apart
    assert read_train(S, replies, min_gap_ms=1.0)[1]


@pytest.mark.parametrize("replies, nbytes", [([1.0, 2.0, 3.0, 4.0], S), ([1.0, 2.0, 3.0, 4.0, math.nan], S),
                                             ([1.0, 2.0, 3.0, 4.0, 5.0], 0)])
def test_a_malformed_train_is_refused_naming_what_a_train_is(replies, nbytes):
    with pytest.raises(ValueError, match="a train is 5 finite arrival times"):
        read_train(nbytes, replies, 1.0)


def test_payload_size_and_pace_keep_the_share():
    trains = ProbeTrains(max_bytes=8192, max_share=0.05, period_s=0.5, floor_bytes=2048, seed=1)
    assert trains.payload_bytes(math.nan) == 8192              # unknown link: the largest (nothing offloaded)
    assert trains.payload_bytes(1.0) == 2048                   # the share's worth (0.6 kB) is under the floor
    assert trains.payload_bytes(10.0) == int(0.05 * 10e6 / 8 * 0.5 / 5)
    assert trains.payload_bytes(100.0) == 8192
    t, sizes = 0.0, []
    for _ in range(50):                                        # at 1 Mbit/s: due when the share allows, no sooner
        nbytes = trains.due(t, 1.0)
        assert trains.due(t + 5 * nbytes * 8 / 0.05e6 - 1e-6, 1.0) is None
        sizes.append(nbytes)
        t += 5 * nbytes * 8 / 0.05e6
    assert 2048 <= min(sizes) and max(sizes) <= 2048 * 1.5 and len(set(sizes)) > 40       # spread at random
    assert trains.due(t, 1.0, offloading=False) is not None    # a drone keeping its frames: every period
    assert trains.due(t + 0.49, 1.0, offloading=False) is None
    t += 0.5
    assert trains.due(t, 100.0) == 8192                        # the largest, unspread
    assert trains.due(t + 0.49, 100.0) is None and trains.due(t + 0.5, 100.0) == 8192      # the period, at most


def test_a_collapse_is_confirmed_by_a_train_at_once_as_big_as_before_within_its_time():
    trains = ProbeTrains(max_bytes=16384, max_share=0.05, period_s=0.5, floor_bytes=2048, seed=1)
    assert trains.due(0.0, 100.0) is not None and trains.due(0.1, 100.0) is None
    trains.confirm(100.0, 50.0)             # a stall? (a rate trains of 2 kB could not read through a burst)
    nbytes = trains.due(0.1, 50.0)
    assert nbytes == 16384                  # as big as before (the largest is never spread past itself)
    assert trains.due(0.59, 50.0) is None and trains.due(0.6, 50.0) is not None       # then the period again
    trains.confirm(100.0, 0.5)              # a collapse to 0.5 Mbit/s: the whole train within CONFIRM_S there
    nbytes = trains.due(0.7, 0.5)
    assert TRAIN_LENGTH * nbytes * 8 / 0.5e6 <= CONFIRM_S and nbytes > 2048
    trains.confirm(100.0, 0.01)             # never under the floor
    assert trains.due(0.8, 0.01) >= 2048


def test_payloads_too_small_three_trains_in_a_row_raise_the_floor_to_twice_their_size():
    trains = ProbeTrains(max_bytes=16384, floor_bytes=2048, seed=2)
    link = TokenBucketLink(1.0, 6000, RTT_MS)          # a 6 kB burst: 2-3 kB payloads are too small
    sizes = []
    for k in range(GROW_AFTER):
        sizes.append(trains.due(10.0 * k, 1.0))
        assert math.isnan(trains.read(sizes[-1], link.train(10_000.0 * k, sizes[-1], TRAIN_LENGTH)))
        assert trains.floor == (2048 if k < GROW_AFTER - 1 else 2 * sizes[-1])
    bigger = trains.due(100.0, 1.0)
    assert 1 / trains.read(bigger, link.train(100_000.0, bigger, TRAIN_LENGTH)) == pytest.approx(1.0)
    trains.reset()
    assert trains.payload_bytes(1.0) == 2048


def test_an_estimate_read_wrongly_low_on_a_fast_link_is_corrected_by_trains_that_grow():
    """A stall taken for a collapse (a 100 Mbit/s link read as 1.2): the confirming train, sized for
    the collapse, fits the fast link's burst and reads nothing; the trains after it must grow through
    the burst and read the link (capped by their time at the wrong estimate, they never did, and a
    drone would stay alone on a fast link)."""
    link = TokenBucketLink(100.0, tbf_burst_bytes(100.0), RTT_MS, packet_bytes=1448)     # a 12.5 kB burst
    trains = ProbeTrains(seed=6)
    trains.reset()
    trains.confirm(72.0, 1.2)
    readings = []
    for k in range(2 * GROW_AFTER + 2):
        nbytes = trains.due(k * 0.5, 1.2, offloading=False)
        readings.append(trains.read(nbytes, link.train(k * 500.0, nbytes, TRAIN_LENGTH)))
    read = [r for r in readings if math.isfinite(r)]
    assert read, f"no train read the fast link: payloads stayed too small for its burst ({readings})"
    assert 1 / read[0] == pytest.approx(100.0, rel=0.3)


def test_one_train_too_small_among_good_ones_grows_nothing():
    """A late reply (a busy computer) can fail the check once; a burst fails it every time."""
    trains = ProbeTrains(floor_bytes=2048, seed=3)
    link = TokenBucketLink(1.0, 0, RTT_MS)
    for k in range(2 * GROW_AFTER):
        replies = link.train(10_000.0 * k, 2048, TRAIN_LENGTH)
        if k % 2:
            replies[0] += 30.0                         # the first reply late: its span looks short
        trains.read(2048, replies)
    assert trains.floor == 2048


def test_at_the_largest_payload_a_reading_is_taken_as_it_is():
    trains = ProbeTrains(max_bytes=4096, floor_bytes=4096)
    replies = TokenBucketLink(1.0, 3 * 4096, RTT_MS).train(0.0, 4096, TRAIN_LENGTH)
    assert math.isfinite(trains.read(4096, replies)) and trains.floor == 4096


def fly(link: TokenBucketLink, estimator: LinkEstimator, seconds: float, rng, offload_bytes: int = 0,
        frame_rate_hz: float = 30.0, jitter_ms: float = 0.3) -> None:
    """``seconds`` of a monitor on ``link``: trains when due, and (with ``offload_bytes``) the drone's
    offloads of that size at the camera rate, each reply timed with up to ``jitter_ms`` of noise."""
    t_ms, next_frame = link._at_ms, link._at_ms
    end = t_ms + seconds * 1e3
    estimator.clock = lambda: t_ms / 1e3
    while t_ms < end:
        if offload_bytes and t_ms >= next_frame:
            reply = link.send(t_ms, offload_bytes) + rng.uniform(0, jitter_ms)
            estimator.on_offload(offload_bytes, reply - t_ms)
            next_frame += 1e3 / frame_rate_hz
        nbytes = estimator.trains.due(t_ms / 1e3, estimator.bandwidth.value)
        if nbytes:
            replies = link.train(t_ms, nbytes, TRAIN_LENGTH, offload_bytes * 8 * frame_rate_hz / 1e6)
            estimator.on_probe_train(nbytes, [r + rng.uniform(0, jitter_ms) for r in replies])
        t_ms += 5.0


@pytest.mark.parametrize("mbps", [1.0, 5.0, 20.0, 100.0])
def test_trains_read_the_emulated_links_rate_through_its_burst_and_packets(mbps):
    """The emulator's bursts, and replies timed to the packet carrying each payload's last byte
    (12 ms at 1 Mbit/s): the random spread of payload sizes averages the packets' error out."""
    rng = np.random.default_rng(1)
    estimator = LinkEstimator(trains=ProbeTrains(seed=1))
    estimator.on_probe(RTT_MS)
    fly(TokenBucketLink(mbps, tbf_burst_bytes(mbps), RTT_MS, packet_bytes=1448), estimator, 60.0, rng)
    assert estimator.bandwidth.value == pytest.approx(mbps, rel=0.1)


def test_offloads_that_fit_the_burst_do_not_read_as_a_faster_link():
    """The drone's 3.3 kB split tensors at 30 Hz on a 1 Mbit/s link with a 3 kB burst: each reads
    3-4x fast on its own (this fault flapped the monitor's plan); with trains the estimate holds."""
    rng = np.random.default_rng(2)
    link = TokenBucketLink(1.0, tbf_burst_bytes(1.0), RTT_MS, packet_bytes=1448)
    one = link.send(0.0, 3286) - RTT_MS
    assert 3286 * 8 / (one * 1e3) > 3.0                         # the fault: a lone payload reads > 3 Mbit/s
    estimator = LinkEstimator(trains=ProbeTrains(seed=2))
    estimator.on_probe(RTT_MS)
    fly(link, estimator, 60.0, rng, offload_bytes=3286, frame_rate_hz=10.0)
    assert estimator.bandwidth.value == pytest.approx(1.0, rel=0.15)


def test_offloads_slower_than_the_estimate_restart_it_at_once():
    """A link that falls from 100 to 2 Mbit/s: slow offloads for 0.3 s restart the estimate before
    any train, until the next train."""
    rng = np.random.default_rng(3)
    estimator = LinkEstimator()
    estimator.on_probe(RTT_MS)
    fly(TokenBucketLink(100.0, tbf_burst_bytes(100.0), RTT_MS), estimator, 10.0, rng, offload_bytes=20_000)
    assert estimator.bandwidth.value == pytest.approx(100.0, rel=0.1)
    slow = TokenBucketLink(2.0, tbf_burst_bytes(2.0), RTT_MS)
    jumps = estimator.bandwidth.jumps
    end_s = estimator.clock()
    for k in range(4):                  # slow for 0.3 s: a collapse, not a stall
        estimator.clock = lambda k=k: end_s + k * 0.1
        estimator.on_offload(20_000, slow.send(k * 100.0, 20_000) - k * 100.0)
    assert estimator.bandwidth.jumps == jumps + 1
    assert estimator.bandwidth.value == pytest.approx(2.0, rel=0.3)
    # a train confirms it at once, within CONFIRM_S at the rate the payloads read
    nbytes = estimator.trains.due(end_s + 0.31, estimator.bandwidth.value)
    assert nbytes is not None and nbytes * TRAIN_LENGTH * 8 / (estimator.bandwidth.value * 1e6) <= CONFIRM_S * 1.5
    # a stopgap: the next train's reading replaces it (the drone offloads nothing by then)
    estimator.clock = lambda: 1e3
    estimator.on_probe_train(4096, slow.train(1000.0, 4096, TRAIN_LENGTH))
    assert estimator.bandwidth.value == pytest.approx(2.0, rel=1e-6)


def test_after_a_fall_to_1_mbit_every_train_ends_within_the_probe_timeout_and_reads_it():
    """CI: a link stepped from 100 to 1 Mbit/s while the drone offloaded. Its slow payloads put the
    estimate at 1.5 Mbit/s; the train sent to confirm it was sized for the fast link (16 kB
    payloads, a floor grown there) and outlasted the probe timeout, so no train read the link and
    the estimate held 1.46 for seconds. A several-fold change starts the floor over, and the
    confirming train is sized to end within CONFIRM_S at the collapsed rate."""
    rng = np.random.default_rng(5)
    estimator = LinkEstimator(trains=ProbeTrains(seed=5))
    estimator.on_probe(RTT_MS)
    fast = TokenBucketLink(100.0, tbf_burst_bytes(100.0), RTT_MS)
    fly(fast, estimator, 10.0, rng, offload_bytes=3286, frame_rate_hz=10.0)
    estimator.trains.floor = 16384                  # grown there (a busy machine can fail the burst check)
    slow = TokenBucketLink(1.0, tbf_burst_bytes(1.0), RTT_MS, packet_bytes=1448)
    slow._at_ms = fast._at_ms
    lasted_ms, send_train = [], slow.train

    def timed_train(t_ms, nbytes, count, background_mbps=0.0):
        replies = send_train(t_ms, nbytes, count, background_mbps)
        lasted_ms.append(max(replies))
        return replies

    slow.train = timed_train
    fly(slow, estimator, 4.0, rng, offload_bytes=3286, frame_rate_hz=10.0)
    assert len(lasted_ms) >= 2
    # the first train was sized for the fast link, before anything said it fell; the rest fit the slow one
    assert all(ms <= 1000.0 for ms in lasted_ms[1:]), f"trains lasted {[round(ms) for ms in lasted_ms]} ms"
    assert estimator.bandwidth.value == pytest.approx(1.0, rel=0.3)
