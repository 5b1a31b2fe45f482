"""The mailbox wait (core/mailbox_wait.py) against a frame-by-frame simulation of the drone's
one-frame mailbox under a periodic camera, written here from the mailbox's rules alone: the
camera delivers frame k at k x T, the drone takes the newest frame that arrived as soon as it is
free (or the next one to arrive), and keeps busy a path's time drawn at random."""
import math

import numpy as np
import pytest

from spinn_ros.core.mailbox_wait import PHASE_STEPS, mailbox_waits


def simulate(busy_ms, shares, frame_rate_hz, frames=40_000, jitter_ms=0.0, seed=0):
    """(waits ms, camera periods per taken frame) of ``frames`` taken frames."""
    rng = np.random.default_rng(seed)
    period = 1e3 / frame_rate_hz
    busy = np.asarray(busy_ms, float)[rng.choice(len(busy_ms), size=frames, p=np.asarray(shares) / sum(shares))]
    busy = busy + rng.normal(0.0, jitter_ms, frames) if jitter_ms else busy
    free_at, last, waits, taken = 0.0, -1, np.empty(frames), np.empty(frames)
    for i in range(frames):
        newest = math.floor(free_at / period)
        if newest > last:                     # frames arrived while busy: the newest wins, the rest are gone
            k, start = newest, free_at
        else:                                 # idle until the next one arrives
            k = last + 1
            start = k * period
        waits[i], taken[i] = start - k * period, k
        free_at, last = start + busy[i], k
    return waits[100:], float(np.mean(np.diff(taken[100:])))


def percentile(values, weights, q):
    order = np.argsort(values)
    cum = np.cumsum(np.asarray(weights)[order])
    return values[order][np.argmax(cum >= q / 100 - 1e-9)]


def test_a_drone_done_within_the_period_never_waits():
    mb = mailbox_waits(30.0, [10.0, 20.0, 33.0], [0.5, 0.3, 0.2])
    assert mb.mean == 0 and mb.weights[0] == 1 and mb.periods_per_frame == 1
    waits, periods = simulate([10.0, 20.0, 33.0], [0.5, 0.3, 0.2], 30.0, frames=2000)
    assert waits.max() == 0 and periods == 1


@pytest.mark.parametrize("busy", [36.0, 66.0, 105.9])
def test_a_drone_always_past_the_period_waits_evenly_over_it_not_its_overrun(busy):
    """The previous frame's overrun (busy mod T) is the wait only right after an idle drone; an
    always-busy drone's phase turns by busy mod T per frame, so the waits spread over [0, T)."""
    period = 1e3 / 60
    mb = mailbox_waits(60.0, [busy], [1.0])
    waits, periods = simulate([busy], [1.0], 60.0, jitter_ms=0.3)
    assert mb.mean == pytest.approx(period / 2) and waits.mean() == pytest.approx(period / 2, abs=0.3)
    assert busy % period != pytest.approx(period / 2, abs=1.0)            # the old answer differs
    assert percentile(mb.values, mb.weights, 95) == pytest.approx(np.percentile(waits, 95), abs=period / PHASE_STEPS)
    assert mb.periods_per_frame == pytest.approx(busy / period) and periods == pytest.approx(busy / period, rel=0.01)


@pytest.mark.parametrize("busy, shares, rate", [
    ((22.0, 44.0, 66.0), (0.70, 0.27, 0.03), 30.0),     # test_scheduler's toy drone at threshold 0.5
    ((9.1, 12.7, 17.3, 24.4), (0.32, 0.28, 0.16, 0.24), 60.0),
    ((7.3, 19.5), (0.9, 0.1), 60.0),
    ((15.0, 18.0), (0.5, 0.5), 60.0),
])
def test_mixed_paths_match_the_simulated_mailbox(busy, shares, rate):
    period = 1e3 / rate
    mb = mailbox_waits(rate, busy, shares)
    waits, periods = simulate(busy, shares, rate, jitter_ms=0.3)
    assert mb.mean == pytest.approx(waits.mean(), abs=0.05 * period)
    assert percentile(mb.values, mb.weights, 95) == pytest.approx(np.percentile(waits, 95), abs=period / PHASE_STEPS)
    # frames taken without a wait (the grid puts a wait within one step of 0 partly on 0)
    assert np.mean(waits < 1e-9) - 0.03 <= mb.weights[0] <= np.mean(waits < period / PHASE_STEPS) + 0.03
    assert mb.periods_per_frame == pytest.approx(periods, rel=0.02)


def test_plans_are_solved_side_by_side_and_a_plan_without_shares_never_waits():
    busy = np.array([[[22.0, 44.0], [66.0, 66.0]], [[5.0, 5.0], [22.0, 44.0]]])         # (2, 2, J=2)
    shares = np.array([[[0.5, 0.5], [1.0, 0.0]], [[0.0, 0.0], [0.5, 0.5]]])
    mb = mailbox_waits(30.0, busy, shares)
    assert mb.weights.shape == (2, 2, PHASE_STEPS + 1) and mb.periods_per_frame.shape == (2, 2)
    assert mb.mean[0, 0] == pytest.approx(mb.mean[1, 1]) and mb.mean[1, 0] == 0
    assert np.allclose(mb.weights.sum(-1), 1.0)
    alone = mailbox_waits(30.0, [22.0, 44.0], [0.5, 0.5])
    assert np.allclose(mb.weights[0, 0], alone.weights)
