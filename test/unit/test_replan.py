"""The monitor's re-plan rules (core/replan.py) on a fake clock, with the shipped model's planner.

With these drone settings (those of test_monitor) the planner offloads at split 2 on a fast
link (100 Mbit/s, 10-40 ms), at split 1 with a 60 ms round trip, only the 3 kB activation at split 4
at 1 Mbit/s, and keeps every frame on the drone at 100 ms (past the drone's 90 ms deadline) or with
the cloud down.
"""
import math

import pytest

from spinn_ros.core.estimators import DEFAULT_TRIGGERS, LossEstimator, transfer_ms
from spinn_ros.core.probe_train import TRAIN_LENGTH
from spinn_ros.core.replan import Replanner

PERIOD_S = 0.1                  # the monitor's control period
PROBES = 10                     # round-trip probes answered per period
BULK = 16384                    # bandwidth probe train payloads, bytes (the monitor's largest)
SETTINGS = {"frame_rate_hz": 30.0, "deadline_ms": 90.0, "encoding": "u8-lz4", "device_slowdown": 25.0,
            "max_in_flight": 4}
RTT = DEFAULT_TRIGGERS["rtt_ms"]


class Loop:
    """A replanner driven as the monitor node drives it, on a fake clock: each control period the
    probes answered meanwhile, then one step."""

    def __init__(self, planner, min_samples: int = 3, refresh_s: float = 5.0):
        self.replanner = Replanner(planner, min_samples, refresh_s=refresh_s)
        self.settings = dict(SETTINGS)                          # the drone's, as the monitor's parameters say
        self.ticks = 0
        self.plans: list[tuple[float, str, object]] = []      # (time, why, decision) of each plan put in force

    @property
    def now(self) -> float:
        return self.ticks * PERIOD_S

    def run(self, seconds: float, rtt_ms: float | None = None, mbps: float | None = None) -> list:
        """``seconds`` of control on a steady link (round trips of ``rtt_ms``, a probe train per period
        at ``mbps``; None: no such probes); the plans put in force meanwhile."""
        start = len(self.plans)
        for _ in range(round(seconds / PERIOD_S)):
            for _ in range(PROBES if rtt_ms is not None else 0):
                self.replanner.on_probe(rtt_ms)
            if mbps is not None:
                self.replanner.on_probe_train(BULK, [rtt_ms + k * BULK * 8 / (mbps * 1e3)
                                                     for k in range(1, TRAIN_LENGTH + 1)])
            new = self.replanner.step(self.now, **self.settings)
            if new is not None:
                decision, why, _ = new
                self.plans.append((round(self.now, 6), why, decision))
            self.ticks += 1
        return self.plans[start:]


def flying(planner, rtt_ms: float = 10.0, mbps: float = 100.0, min_samples: int = 3, refresh_s: float = 5.0) -> Loop:
    """Started, then the cloud up and the link measured for 2 s."""
    loop = Loop(planner, min_samples, refresh_s)
    loop.run(PERIOD_S)
    loop.replanner.on_clouds({"cloud"})
    loop.run(2.0, rtt_ms, mbps)
    return loop


def where(decision) -> tuple[int, bool]:
    return decision.split, decision.offload


def test_the_first_step_plans_and_a_steady_link_keeps_the_plan(planner):
    loop = flying(planner)
    assert [(t, why, where(d)) for t, why, d in loop.plans] == [
        (0.0, "start", (7, False)),                  # the drone alone until the cloud is seen
        (0.1, "cloud appeared", (2, True))]
    assert loop.run(5.0, 10.0, 100.0) == []
    assert (loop.replanner.plan_id, loop.replanner.plan_changes) == (2, 1)
    assert loop.replanner.plan is loop.plans[-1][2]


@pytest.mark.parametrize("base_ms, to_ms, blip_s, dwell_s, split", [
    (40.0, 60.0, 0.5, RTT.dwell_s, 1),            # +50 %: the slow tier
    (10.0, 100.0, 0.1, RTT.fast_dwell_s, 7),      # x10: the fast tier
])
def test_a_lasting_change_replans_after_the_dwell_and_a_blip_does_not(planner, base_ms, to_ms, blip_s, dwell_s,
                                                                       split):
    loop = flying(planner, base_ms)
    assert loop.run(blip_s, to_ms) == []            # a blip shorter than the dwell ...
    assert loop.run(3.0, base_ms) == []             # ... is forgotten
    t_step = loop.now
    [(t, why, decision)] = loop.run(3.0, to_ms)
    assert why == "changed: rtt_ms" and where(decision) == (split, split < 7)
    assert dwell_s <= t - t_step <= dwell_s + 3 * PERIOD_S, t - t_step
    assert loop.replanner.plan_id == 3


def test_the_cloud_vanishing_and_appearing_force_a_replan_and_appearing_resets_the_link(planner):
    loop = flying(planner)
    loop.replanner.on_clouds(set())
    [(t, why, decision)] = loop.run(PERIOD_S, 10.0)
    assert why == "cloud vanished" and where(decision) == (7, False)
    loop.replanner.on_clouds({"cloud"})
    fields = loop.replanner.link_state_fields()
    assert fields["samples"] == 0 and math.isnan(fields["bandwidth_mbps"]) and math.isnan(fields["rtt_ms"])
    [(_, why, decision)] = loop.run(PERIOD_S, 10.0, 100.0)
    assert why == "cloud appeared" and where(decision) == (2, True)
    loop.replanner.on_clouds({"cloud", "another"})           # still up: nothing to re-plan
    assert loop.run(1.0, 10.0, 100.0) == []
    assert (loop.replanner.plan_id, loop.replanner.plan_changes) == (4, 3)


def test_below_min_samples_link_changes_are_ignored_but_forced_reasons_replan(planner):
    loop = flying(planner, min_samples=1000)
    assert [why for _, why, _ in loop.plans] == ["start", "cloud appeared"]
    assert loop.run(3.0, 100.0) == []                   # re-plans with min_samples 3 (test above)
    assert loop.replanner.detector.reference == {}      # the detector never saw the estimates
    loop.replanner.on_clouds(set())
    [(_, why, decision)] = loop.run(PERIOD_S, 100.0)
    assert why == "cloud vanished" and where(decision) == (7, False)


def test_a_decision_like_the_plan_in_force_is_not_published(planner):
    loop = flying(planner)
    assert loop.run(3.0, 16.0) == []                    # +60 %: the detector fires, the planner keeps split 2
    assert loop.replanner.detector.reference["rtt_ms"] == pytest.approx(16.0, abs=1.0)
    assert (loop.replanner.plan_id, loop.replanner.plan_changes) == (2, 1)
    assert where(loop.replanner.plan) == (2, True)


@pytest.mark.parametrize("to_mbps, plans, reference_mbps", [
    (1.0, [(0.2, "bandwidth stepped to 1.0 Mbit/s", (4, True))], 1.0),    # 16 kB: 1.3 -> 128 ms, past the fast tier
    (400.0, [], 100.0),                                                    # 1.3 -> 0.3 ms: within the 5 ms floor
])
def test_a_bandwidth_step_replans_at_once_only_past_the_fast_tier(planner, to_mbps, plans, reference_mbps):
    loop = flying(planner)
    jumps = loop.replanner.estimator.bandwidth.jumps
    t_step = loop.now
    new = loop.run(3 * PERIOD_S, 10.0, to_mbps)                  # three trains, all several-fold off
    assert loop.replanner.estimator.bandwidth.jumps > jumps       # the estimator restarted either way
    assert [(round(t - t_step, 6), why, where(d)) for t, why, d in new] == plans
    # a re-plan makes the estimates the detector's reference at once: no second re-plan for the same step
    assert loop.replanner.detector.reference["transfer_ms"] == pytest.approx(transfer_ms(reference_mbps))
    assert loop.run(3.0, 10.0, to_mbps) == []


def test_new_drone_settings_replan_at_the_next_step(planner):
    """The monitor's parameters changed at run time (a faster drone): the next step re-plans for them,
    with the reason; the same settings again publish nothing."""
    loop = flying(planner)
    loop.settings["device_slowdown"] = 1.0
    assert loop.run(1.0, 10.0, 100.0) == []             # nobody said the settings changed
    loop.replanner.force("parameters changed: device_slowdown")
    [(_, why, decision)] = loop.run(PERIOD_S, 10.0, 100.0)
    assert why == "parameters changed: device_slowdown" and where(decision) != (2, True)
    loop.replanner.force("parameters changed: device_slowdown")
    assert loop.run(PERIOD_S, 10.0, 100.0) == []


def test_a_plan_made_for_another_drone_is_published_again_with_the_new_drones_predictions(planner):
    """The drone's settings arrived after the first plan (the monitor fetches them from the drone) and
    keep the plan: it is handed back anyway, predicted for the drone now known; not a plan change."""
    loop = flying(planner)
    before, changes, plan_id = loop.replanner.plan, loop.replanner.plan_changes, loop.replanner.plan_id
    loop.settings["device_slowdown"] = 26.0                      # a little slower than the 25 planned for
    loop.replanner.force("drone parameters changed: emulate.slowdown=26.0", republish=True)
    [(_, why, decision)] = loop.run(PERIOD_S, 10.0, 100.0)
    assert why.startswith("drone parameters changed") and decision.plan == before.plan
    assert decision.prediction.latency_ms > before.prediction.latency_ms, "predicted for the slower drone"
    assert (loop.replanner.plan_id, loop.replanner.plan_changes) == (plan_id + 1, changes)
    assert loop.run(1.0, 10.0, 100.0) == [], "once"


@pytest.mark.parametrize("refresh_s", [0.0, 5.0])
def test_a_change_the_detector_misses_is_planned_for_at_the_next_refresh(planner, refresh_s):
    """The detector is deaf to some changes (a loss that ebbs by less than its threshold after one that
    rose past it; the cloud's measured speed): a re-plan every ``refresh_s`` still finds them, and only
    a plan clearly better than the one in force replaces it (a steady link re-plans to the same plan,
    which is not published)."""
    loop = flying(planner, refresh_s=refresh_s)
    assert loop.run(6.0, 10.0, 100.0) == []                      # refreshed, the same plan: not published
    r = loop.replanner
    r.estimator.loss = LossEstimator()
    for i in range(50):                                        # 40 % of offloads lost, unseen by the detector
        r.estimator.loss.update(i % 5 >= 2)
    r.detector.rebase(r.estimator.change_values())
    plans = loop.run(6.0)                                      # no probes: the estimates stay as they are
    if not refresh_s:
        assert plans == []
    else:
        (t, why, decision), = plans
        assert why == "refresh (5 s without a change)" and where(decision) != (2, True)
        assert t - 8.1 <= 5.0 + 1e-9                             # within refresh_s of the last decision


def test_refresh_must_not_be_negative(planner):
    with pytest.raises(ValueError, match="refresh_s must be >= 0"):
        Replanner(planner, refresh_s=-1.0)
