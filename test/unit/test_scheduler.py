"""Scheduler: the performance model and the decision on synthetic profiles whose right
answer is known by hand.

The toy network: 3 stages, an exit after each (the last is the final classifier).
Drone: 20 ms per stage + 2 ms per exit head, so exits answer at 22 / 44 / 66 ms.
Cloud: 1 ms per stage + 0.1 ms per head at batch 1 (1.6 / 0.16 at batch 2).
Wire bytes per split: 50 kB (frame), 20 kB, 5 kB. Calibration (rates / accuracy per exit):

    threshold  rates               exit accuracy        overall
    0.5        0.70 0.27 0.03      0.80 0.85 0.90       0.8165
    0.7        0.40 0.30 0.30      0.86 0.88 0.92       0.884
    0.9        0.20 0.20 0.60      0.95 0.93 0.93       0.934
    1.0        0    0    1         -    -    0.94       0.94
"""
import math
from pathlib import Path

import numpy as np
import pytest

from spinn_ros.core.mailbox_wait import mailbox_waits
from spinn_ros.core.performance import PerformanceModel
from spinn_ros.core.plan import Plan
from spinn_ros.core.prediction import Conditions
from spinn_ros.core.profile import ProfileError, synthetic_profile
from spinn_ros.core.progressive import PLAIN_NETWORK
from spinn_ros.core.scheduler import INCUMBENT_MARGIN, STRATEGIES, Scheduler
from spinn_ros.core.sla import parse_sla
from spinn_ros.testing.toy import MODEL_ID, STANDALONE, make_calibration


def make_device(stage_ms=(20, 20, 20), exit_ms=(2, 2, 2), wire_bytes=(50_000, 20_000, 5_000), model_id=MODEL_ID,
                exit_stages=(0, 1, 2)):
    return synthetic_profile("device", model_id=model_id, exit_stages=exit_stages, stage_ms=stage_ms, exit_ms=exit_ms,
                             wire_bytes=wire_bytes)


def make_cloud(stage_ms=(1, 1, 1), exit_ms=(0.1, 0.1, 0.1), model_id=MODEL_ID, exit_stages=(0, 1, 2)):
    return synthetic_profile("cloud", model_id=model_id, exit_stages=exit_stages, stage_ms=stage_ms, exit_ms=exit_ms,
                             batch_scale={1: 1.0, 2: 1.6})


def toy_model() -> PerformanceModel:
    return PerformanceModel(make_device(), make_cloud(), make_calibration())


def sla(constraints=None, objectives=None):
    return parse_sla({"constraints": constraints or {},
                      "objectives": objectives or [{"maximize_accuracy": {"tolerance": 0.001}}, "minimize_latency"]})


FAST = Conditions(bandwidth_mbps=1000.0, rtt_ms=2.0)
SLOW = Conditions(bandwidth_mbps=1.0, rtt_ms=100.0)
OUTAGE = Conditions(bandwidth_mbps=1000.0, rtt_ms=2.0, cloud_alive=False)


# -- the performance model ---------------------------------------------------------------


def mailbox(busy_ms, shares=(1.0,), frame_rate_hz: float = 30.0):
    """The wait in the drone's newest-frame slot when frames keep it busy ``busy_ms`` at ``shares``:
    core/mailbox_wait.py, itself checked against a frame-by-frame simulated mailbox
    (test_mailbox_wait.py). A drone done within the camera period never waits; one always past it
    waits evenly over the period."""
    return mailbox_waits(frame_rate_hz, np.atleast_1d(busy_ms), np.asarray(shares, float))


def wait_p95(busy_ms: float) -> float:
    """The wait's p95 for a drone busy ``busy_ms`` on every frame."""
    mb = mailbox(busy_ms)
    return float(mb.values[np.argmax(np.cumsum(mb.weights) >= 0.95 - 1e-9)])


def test_device_only_latency_is_a_mixture_over_exits():
    p = toy_model().predict(3, 0.5, SLOW)
    assert p.offload_fraction == 0 and p.bytes_per_frame == 0 and p.server_ms_per_frame == 0
    busy = 0.70 * 22 + 0.27 * 44 + 0.03 * 66          # 29.3 ms per frame: 88 % of the camera period
    rates, own = (0.70, 0.27, 0.03), (22, 44, 66)
    waits = mailbox(own, rates)                       # 58 % of frames taken at once, the rest up to 33 ms late
    assert p.mean_latency_ms == pytest.approx(busy + waits.mean) and waits.mean == pytest.approx(5.96, abs=0.01)
    # the p95 over (the wait, independent of this frame's exit)
    pairs = sorted((o + v, r * q) for r, o in zip(rates, own) for v, q in zip(waits.values, waits.weights))
    cum, p95 = 0.0, None
    for lat, weight in pairs:
        cum += weight
        if p95 is None and cum >= 0.95 - 1e-9:
            p95 = lat
    assert p.latency_ms == pytest.approx(p95)
    assert p.accuracy == pytest.approx(0.8165)
    assert p.device_ms_per_frame == pytest.approx(busy)
    # busy 88 % of the time, yet a slow frame replaces camera frames the quick ones cannot win back
    # (the drone idles after them): 3 % of the camera's frames go unanswered
    assert waits.periods_per_frame == pytest.approx(1.03, abs=0.005)
    assert p.throughput_fps == pytest.approx(30 / waits.periods_per_frame) and p.bottleneck == "device"


def test_mailbox_wait_is_none_for_an_idle_drone_and_half_a_period_for_an_always_busy_one():
    m = toy_model()
    idle = m.predict(3, 0.5, Conditions(bandwidth_mbps=1.0, rtt_ms=100.0, frame_rate_hz=1.0))
    assert idle.mean_latency_ms == pytest.approx(29.26)              # every frame done before the next arrives
    busy = m.predict(3, 1.0, Conditions(bandwidth_mbps=1.0, rtt_ms=100.0, frame_rate_hz=100.0))
    # 66 ms a frame against a 10 ms camera: not the 6 ms overrun of one frame, the phase turns
    # by it every frame, so waits spread over the period
    assert busy.mean_latency_ms == pytest.approx(66 + 5.0)
    assert busy.throughput_fps == pytest.approx(1e3 / 66)


def test_offloaded_latency_adds_transfer_rtt_and_cloud_tail():
    p = toy_model().predict(0, 1.0, FAST)          # raw frame, everything answered by the final exit in the cloud
    tx = 50_000 * 8 / 1e6                            # ms at 1000 Mbit/s
    # every frame of a periodic camera sent, each done before the next: no queue on the uplink
    assert p.latency_ms == pytest.approx(tx + 2.0 + 3 * 1.0 + 3 * 0.1)
    assert p.offload_fraction == 1 and p.bytes_per_frame == 50_000 and p.fallback_fraction == 0
    assert p.server_ms_per_frame == pytest.approx(3.3)
    assert p.accuracy == pytest.approx(0.94)


def test_predictions_do_not_depend_on_what_was_predicted_before():
    """The mailbox wait is kept per drone setting (it does not depend on the link): a model that
    predicted for other links and another drone predicts exactly as a fresh one."""
    used = toy_model()
    for cond in (FAST, SLOW, Conditions(bandwidth_mbps=5.0, rtt_ms=20.0, device_slowdown=2.0, frame_rate_hz=60.0)):
        used.predict_all(cond)
    for cond in (SLOW, Conditions(bandwidth_mbps=5.0, rtt_ms=20.0, device_slowdown=3.0, frame_rate_hz=60.0)):
        a, b = used.predict_all(cond), toy_model().predict_all(cond)
        assert all(np.array_equal(a.metrics[k], b.metrics[k], equal_nan=True) for k in a.metrics)
        assert np.array_equal(a.valid, b.valid)


def test_uplink_queueing_grows_with_how_irregular_the_offloads_are():
    """Kingman's wait ``rho / (1 - rho) x ca2 / 2 x tx``: the offloads are the camera's periodic
    frames thinned by the offload share p, so ``ca2 = 1 - p``. Split 1 at 0.5 on a 10 Mbit/s link:
    the 30 % of frames exit 0 does not answer go (p = 0.3), 20 kB each."""
    cond = Conditions(bandwidth_mbps=10.0, rtt_ms=2.0)
    p = toy_model().predict(1, 0.5, cond)
    tx = 20_000 * 8 / 10e3
    rho = 30 * 0.3 * tx / 1e3
    wait = rho / (1 - rho) * (1 - 0.3) / 2 * tx
    answer = 22 + wait + tx + 2.0 + 1.0 + 0.1                       # exit 1 answers in the cloud
    assert p.offload_fraction == pytest.approx(0.3)
    assert p.mean_latency_ms == pytest.approx(0.7 * 22 + 0.27 * answer + 0.03 * (answer + 1.1), abs=0.01)


def test_the_nodes_pass_through_delays_every_answer_but_not_the_drones_deadline():
    """The profile's hops (tools/hops.py) add to what a consumer sees; the drone's own deadline
    counts from the frame's arrival in the node, so which offloads are late does not change."""
    hop = (3.0, 2.0)
    device = synthetic_profile("device", model_id=MODEL_ID, exit_stages=(0, 1, 2), stage_ms=(20, 20, 20),
                               exit_ms=(2, 2, 2), wire_bytes=(50_000, 20_000, 5_000), hop_ms=hop)
    plain, hopped = toy_model(), PerformanceModel(device, make_cloud(), make_calibration())
    for split, cond in ((3, SLOW), (0, FAST), (1, Conditions(bandwidth_mbps=10.0, rtt_ms=150.0))):
        a, b = plain.predict(split, 0.5, cond), hopped.predict(split, 0.5, cond)
        assert b.latency_ms == pytest.approx(a.latency_ms + 5.0)
        assert b.mean_latency_ms == pytest.approx(a.mean_latency_ms + 5.0)
        assert (b.fallback_fraction, b.accuracy, b.throughput_fps) == pytest.approx(
            (a.fallback_fraction, a.accuracy, a.throughput_fps))
    # on time at the bound: answers within 5 ms of it are late once the hops count
    cond = Conditions(bandwidth_mbps=1000.0, rtt_ms=2.0)
    at = plain.predict(0, 1.0, cond).latency_ms
    assert plain.predict(0, 1.0, cond, on_time_ms=at + 1).on_time_accuracy > \
        hopped.predict(0, 1.0, cond, on_time_ms=at + 1).on_time_accuracy


def test_deadline_caps_offloads_and_costs_the_provisional_accuracy():
    p = toy_model().predict(2, 0.9, SLOW)      # 44 ms head + 40 ms for 5 kB at 1 Mbit/s + queueing + 100 ms RTT > 200
    assert p.fallback_fraction == pytest.approx(0.6)
    assert p.latency_ms == pytest.approx(200.0)
    # the drone is busy 0.2 x 22 + 0.2 x 44 + 0.6 x 44 = 39.6 ms a frame: slower than the camera
    wait = mailbox((22, 44), (0.2, 0.8)).mean   # 20 % answered at exit 0 (22 ms), the rest keep it 44 ms
    assert p.mean_latency_ms == pytest.approx(0.2 * 22 + 0.2 * 44 + 0.4 * wait + 0.6 * 200)
    # provisional answer = exit 1 on the frames it was not sure of, estimated from its standalone accuracy
    prov = (0.85 - 0.4 * 0.94) / 0.6
    assert p.accuracy == pytest.approx(0.2 * 0.95 + 0.2 * 0.93 + 0.6 * prov)


def test_loss_costs_the_deadline_and_device_accuracy():
    lossy = Conditions(bandwidth_mbps=1000.0, rtt_ms=2.0, loss_rate=0.5)
    p = toy_model().predict(1, 0.9, lossy)
    assert p.fallback_fraction == pytest.approx(0.5 * 0.8)
    ok = toy_model().predict(1, 0.9, FAST)
    assert p.accuracy < ok.accuracy and p.mean_latency_ms > ok.mean_latency_ms
    assert p.latency_ms == pytest.approx(200.0)       # 40 % of frames wait for the deadline


def test_no_device_exit_falls_back_by_computing_the_tail_on_the_drone():
    uncapped = Conditions(bandwidth_mbps=1.0, rtt_ms=100.0, max_in_flight=64)
    p = toy_model().predict(0, 1.0, uncapped)          # 400 ms to send the frame: always late, no provisional answer
    assert p.fallback_fraction == 1
    assert p.latency_ms == pytest.approx(200 + 66)
    assert p.accuracy == pytest.approx(0.94)          # the drone computes the same answer, late


def test_the_in_flight_cap_refuses_offloads_and_the_head_answers_them():
    """At 30 Hz with every offload out until the 200 ms deadline, 6 would be in flight: the cap of 4
    lets 2/3 of the frames out, and the first exit answers the rest at once (no tail on the drone)."""
    p = toy_model().predict(0, 1.0, SLOW)
    assert p.offload_fraction == pytest.approx(2 / 3) and p.fallback_fraction == 1
    assert p.accuracy == pytest.approx(2 / 3 * 0.94 + 1 / 3 * STANDALONE[0])
    assert p.bytes_per_frame == pytest.approx(2 / 3 * 50_000)
    roomy = toy_model().predict(0, 1.0, Conditions(bandwidth_mbps=1.0, rtt_ms=100.0, max_in_flight=6))
    assert roomy.offload_fraction == 1 and roomy.accuracy == pytest.approx(0.94)


def test_no_exits_column_skips_the_intermediate_heads():
    m = toy_model()
    plain, exits = m.predict(3, PLAIN_NETWORK, SLOW), m.predict(3, 1.0, SLOW)
    assert plain.latency_ms == pytest.approx(62 + wait_p95(62))
    assert exits.latency_ms == pytest.approx(66 + wait_p95(66))
    assert plain.accuracy == pytest.approx(0.94)


def test_slowdown_and_batching_scale_the_right_side():
    m = toy_model()
    base = m.predict(3, 1.0, SLOW)
    slow = m.predict(3, 1.0, Conditions(bandwidth_mbps=1.0, rtt_ms=50.0, device_slowdown=2.0))
    assert slow.latency_ms - wait_p95(132) == pytest.approx(2 * (base.latency_ms - wait_p95(66)))
    b1 = m.predict(1, 1.0, FAST)
    b2 = m.predict(1, 1.0, Conditions(bandwidth_mbps=1000.0, rtt_ms=2.0, cloud_batch_size=2))
    assert b2.server_ms_per_frame == pytest.approx(b1.server_ms_per_frame * 1.6 / 2)


def test_profiles_of_another_model_are_refused():
    with pytest.raises(ProfileError, match="other"):
        PerformanceModel(make_device(model_id="other"), make_cloud(), make_calibration())


def test_conditions_validate_and_read_link_state():
    with pytest.raises(ValueError, match="loss_rate"):
        Conditions(bandwidth_mbps=1, rtt_ms=1, loss_rate=2)

    class LinkState:
        bandwidth_mbps, rtt_ms, loss_rate, cloud_alive = 12.0, 30.0, 0.1, True
        cloud_queue_depth, cloud_compute_ms, cloud_batch_size = 2.0, 0.0, 0.0

    c = Conditions.from_link_state(LinkState(), deadline_ms=150.0)
    assert (c.bandwidth_mbps, c.cloud_compute_ms, c.cloud_batch_size, c.deadline_ms) == (12.0, None, 1.0, 150.0)


# -- decisions --------------------------------------------------------------------------


def decide(cond, strategy="spinn", **kw):
    return Scheduler(toy_model(), sla(**kw), strategy).decide(cond)


def test_fast_link_sends_the_raw_frame_first():
    """Only the full model (threshold 1.0) reaches the best accuracy, and on the drone it takes
    66 ms (+ 32.7 in the mailbox: 66 mod 33.3): over the 40 ms bound. Offloading after stage 0,
    provisional-first, answers at 22 (busy 22 of 33 ms: done before the next frame, no wait)
    + 0.16 (20 kB at 1 Gbit/s) + 2 (RTT) + 2.2 (two cloud stages and heads) = 26.4 ms; the raw frame
    sent first (the cloud-only baseline's plan)
    answers at ~6 ms, and with the SLA's permission SPINN takes it, as the plain network (the final
    exit answers all the same, and no other exit head costs time)."""
    cons = {"latency_ms": {"max": 40, "percentile": 95}}
    assert toy_model().predict(1, 1.0, FAST).latency_ms == pytest.approx(26.4, abs=0.1)
    d = decide(FAST, constraints=cons)
    assert d.feasible and (d.split, d.mode, d.threshold) == (0, "offload-first", PLAIN_NETWORK)
    assert d.prediction.latency_ms < 10 and "decided by maximize_accuracy" in d.reason
    cloud_only = decide(FAST, "cloud_only", constraints=cons)
    assert (cloud_only.split, cloud_only.offload) == (0, True) and cloud_only.prediction.latency_ms < 10


def test_slow_link_keeps_everything_on_the_drone():
    d = decide(SLOW, constraints={"latency_ms": {"max": 100}})      # the plain network: exit heads cost time
    assert d.feasible and (d.split, d.threshold, d.offload) == (3, PLAIN_NETWORK, False)


def test_outage_means_device_only_even_on_a_fast_link():
    d = decide(OUTAGE, constraints={"latency_ms": {"max": 100}})
    assert d.feasible and d.split == 3 and not d.offload


def test_tight_latency_bound_lowers_the_threshold():
    loose = decide(SLOW, constraints={"latency_ms": {"max": 100}})
    tight = decide(SLOW, constraints={"latency_ms": {"max": 70}})      # 0.5: 64.8 ms; 0.7: 91.0 ms
    assert tight.feasible and tight.threshold == 0.5 < loose.threshold
    assert tight.prediction.latency_ms <= 70
    assert any("latency" in b for b in tight.binding) and "binding: p95 latency <= 70 ms" in tight.reason


def test_min_accuracy_is_respected_by_a_latency_objective():
    free = decide(SLOW, "branchynet", objectives=["minimize_latency"])
    held = decide(SLOW, "branchynet", constraints={"min_accuracy": 0.93}, objectives=["minimize_latency"])
    assert free.threshold == 0.5
    assert held.feasible and held.prediction.accuracy >= 0.93 and held.threshold == 0.9
    assert held.binding and "accuracy >= 0.93" in held.binding[0]


def test_tolerance_lets_the_next_objective_decide():
    # 0.934 vs 0.94 accuracy: within 0.01 they tie and latency picks threshold 0.9 (mean 48.4 vs 66 ms)
    strict = decide(SLOW, "branchynet", objectives=["maximize_accuracy", "minimize_latency"])
    tolerant = decide(SLOW, "branchynet", objectives=[{"maximize_accuracy": {"tolerance": 0.01}},
                                                      "minimize_latency"])
    assert strict.threshold == 1.0 and tolerant.threshold == 0.9
    assert "2 tied" in tolerant.decided_by


def test_infeasible_sla_picks_the_safest_plan_and_says_so():
    d = decide(FAST, constraints={"min_accuracy": 0.99, "latency_ms": {"max": 50}})
    assert not d.feasible and d.split == 3 and not d.offload
    assert d.threshold == 0.5                          # the only device plan within 50 ms
    assert "no plan meets the SLA" in d.reason and "accuracy >= 0.99: 0/" in d.reason
    out_of_reach = decide(FAST, constraints={"latency_ms": {"max": 1}})
    assert not out_of_reach.feasible and out_of_reach.split == 3 and out_of_reach.threshold == 0.5


def test_baselines_return_their_fixed_plans():
    cons = {"latency_ms": {"max": 500}}
    assert (decide(FAST, "device_only", constraints=cons).split, decide(FAST, "device_only").threshold) == (3, PLAIN_NETWORK)
    cloud = decide(FAST, "cloud_only", constraints=cons)
    assert (cloud.split, cloud.threshold, cloud.offload) == (0, PLAIN_NETWORK, True)
    assert decide(FAST, "neurosurgeon").split == 0     # the lowest latency on a fast link
    assert decide(SLOW, "neurosurgeon").split == 3
    bx = decide(SLOW, "branchynet", constraints={"latency_ms": {"max": 50}})
    assert (bx.split, bx.threshold) == (3, 0.5)
    assert decide(OUTAGE, "cloud_only").split == 3     # no cloud: the drone runs the plain network
    assert decide(FAST, "cloud_only").plan_fields()["exit_threshold"] == PLAIN_NETWORK


def test_plan_fields_match_split_plan_msg():
    fields = decide(FAST).plan_fields()
    msg = (Path(__file__).resolve().parents[2] / "msg" / "SplitPlan.msg").read_text()
    declared = {line.split()[1] for line in msg.splitlines() if line.strip() and not line.startswith("#")}
    assert set(fields) <= declared
    assert declared - set(fields) == {"header", "plan_id", "model_id"}


def test_unknown_strategy_is_refused():
    with pytest.raises(ValueError, match="neurosurgeon"):
        Scheduler(toy_model(), sla(), "nope")
    assert set(STRATEGIES) == {"spinn", "device_only", "cloud_only", "neurosurgeon", "branchynet"}
    assert math.isinf(PLAIN_NETWORK)


def test_provisional_accuracy_table_is_exact_and_read_back():
    from spinn_ros.core.calibration import PROVISIONAL_KEY, provisional_accuracy, provisional_accuracy_table

    # 4 frames, exits at stages 0 and 2 of 3; at threshold 0.8 frames 0 and 1 leave at exit 0
    conf = np.array([[0.9, 0.85, 0.6, 0.7], [0.5, 0.5, 0.9, 0.6]])
    pred = np.array([[1, 0, 1, 0], [1, 0, 0, 0]], bool)
    labels = np.array([1, 0, 0, 1], bool)
    table = provisional_accuracy_table(confidences=conf, predictions=pred, labels=labels, exit_stages=[0, 2],
                                       num_stages=3, thresholds=[0.8, 1.0])
    assert [row["split"] for row in table] == [0, 1, 2, 3]
    assert table[0]["accuracy"] == [None, None]           # no device exit: nothing provisional
    # split 1: exit 0 is the provisional answer for frames 2 and 3 (0.8) or all four (1.0)
    assert table[1]["accuracy"] == [0.0, 0.5] and table[2] == {"split": 2, "accuracy": [0.0, 0.5]}
    assert table[3]["accuracy"] == [None, None]           # the final exit is on the drone: no offload
    cal = make_calibration(thresholds=[0.8, 1.0], rates=[[0.5, 0.0, 0.5], [0, 0, 1]],
                           exit_acc=[[1, None, 0.5], [None, None, 0.5]])
    cal.data[PROVISIONAL_KEY] = [{"split": s, "accuracy": [0.123, 0.456]} for s in range(4)]
    assert provisional_accuracy(cal, 1, 0.8) == 0.123 and provisional_accuracy(cal, 2, 1.0) == 0.456
    assert provisional_accuracy(cal, 0, 0.8) is None and provisional_accuracy(cal, 3, 0.8) is None


# -- plan modes: every baseline is a restriction of SPINN's plan space ---------------------------

GRID = [Conditions(bandwidth_mbps=bw, rtt_ms=rtt) for bw in (1, 2, 5, 10, 20, 50, 100) for rtt in (10, 50, 100)]


@pytest.mark.parametrize("which", ["toy", "shipped"])
def test_predicted_spinn_is_never_worse_than_the_best_baseline(which, request):
    """On the SLA's first objective (on-time accuracy, within its tolerance) at every bandwidth x RTT,
    and SPINN meets the SLA wherever a baseline does: its search contains every baseline's plans."""
    from spinn_ros.core.sla import load_sla

    model = toy_model() if which == "toy" else request.getfixturevalue("planner").model
    sla_ = load_sla()
    first = sla_.objectives[0]
    assert first.name == "maximize_on_time_accuracy", "the default SLA ranks on-time accuracy first"
    for cond in GRID:
        cond = Conditions(bandwidth_mbps=cond.bandwidth_mbps, rtt_ms=cond.rtt_ms, deadline_ms=sla_.on_time_ms)
        spinn = Scheduler(model, sla_).decide(cond)
        for name in set(STRATEGIES) - {"spinn"}:
            base = Scheduler(model, sla_, name).decide(cond)
            where = f"{which}: {cond.bandwidth_mbps} Mbit/s, {cond.rtt_ms} ms: {name} {base.reason}; {spinn.reason}"
            if base.feasible:
                assert spinn.feasible, where
                assert (spinn.prediction.on_time_accuracy
                        >= base.prediction.on_time_accuracy - first.band(base.prediction.on_time_accuracy)), where


def test_the_plan_space_holds_every_baseline():
    table = toy_model().predict_all(FAST)
    spinn = STRATEGIES["spinn"].mask(table)
    for name, strategy in STRATEGIES.items():
        assert not (strategy.mask(table) & ~spinn).any(), f"{name} has plans SPINN cannot choose"


def test_holding_a_device_answer_is_an_sla_setting():
    """Required, SPINN never leaves control waiting on the network: a provisional-first plan with a
    device exit before its split, a race, or the drone alone; on a fast link the race wins (the raw
    frame answers in ~6 ms and exit 0 holds an answer meanwhile). Not required, the raw frame alone."""
    for bound in (10, 30, 60, 100):
        for cond in (FAST, SLOW, Conditions(bandwidth_mbps=50.0, rtt_ms=10.0)):
            d = decide(cond, constraints={"latency_ms": {"max": bound}, "hold_device_answer": True})
            assert d.mode == "race" or (d.mode == "provisional-first" and d.split >= 1), d.reason
    held = decide(FAST, constraints={"latency_ms": {"max": 40}, "hold_device_answer": True})
    free = decide(FAST, constraints={"latency_ms": {"max": 40}})
    assert (held.split, held.mode) == (0, "race") and (free.split, free.mode) == (0, "offload-first")
    assert held.prediction.accuracy == free.prediction.accuracy == pytest.approx(0.94)
    assert free.plan_fields()["mode"] == "offload-first"


def test_a_plan_whose_every_offload_lands_after_the_deadline_is_not_run():
    """Round trips past the drone's 200 ms deadline: every offload falls back, so no plan may send
    one (it would cost link, server and in-flight slots for nothing); with 150 ms some land in time."""
    never = toy_model().predict_all(Conditions(bandwidth_mbps=1000.0, rtt_ms=250.0))
    assert not never.valid[:, :3].any() and never.valid[:, 3].any()
    assert not decide(Conditions(bandwidth_mbps=1000.0, rtt_ms=250.0)).offload
    assert toy_model().predict_all(Conditions(bandwidth_mbps=1000.0, rtt_ms=150.0)).valid[:, :3].any()


def test_offload_first_and_race_predictions_by_hand():
    """Split 1 on the fast link, threshold 1.0 (only the final exit answers): the request leaves
    after stage 0 with no exit head (20 ms), the cloud answers 0.16 (20 kB) + 2 (RTT) + 2.2 ms later;
    the race also runs exit 0's head after sending (2 ms of drone time, answer at 22 ms)."""
    m = toy_model()
    of = m.predict(1, 1.0, FAST, mode="offload-first")
    race = m.predict(1, 1.0, FAST, mode="race")
    assert of.offload_fraction == race.offload_fraction == 1.0
    assert of.device_ms_per_frame == pytest.approx(20) and race.device_ms_per_frame == pytest.approx(22)
    # busy 20 / 22 ms of the 33 ms camera period: no frame waits
    assert of.mean_latency_ms == pytest.approx(20 + 0.16 + 2 + 2.2, abs=0.01)
    assert race.mean_latency_ms == pytest.approx(20 + 0.16 + 2 + 2.2, abs=0.01)
    assert of.accuracy == race.accuracy == pytest.approx(0.94)
    # a link too slow for the deadline: offload-first computes the tail on the drone, the race keeps exit 0's answer
    slow = Conditions(bandwidth_mbps=0.5, rtt_ms=100.0, max_in_flight=64)
    assert m.predict(1, 1.0, slow, mode="race").accuracy == pytest.approx(STANDALONE[0])
    assert m.predict(1, 1.0, slow, mode="offload-first").accuracy == pytest.approx(0.94)


def test_the_plan_in_force_stays_while_the_sla_calls_it_equal():
    """Accuracy within 0.01 ties 0.9 (0.934) and 1.0 (0.94): the tie-break picks 0.9, but 1.0 in force
    stays (no flip on noise); 0.5 (0.8165) in force is replaced; 1.0 in force breaking a new 60 ms bound
    (66 ms on the drone) is replaced."""
    s = Scheduler(toy_model(), sla(objectives=[{"maximize_accuracy": {"tolerance": 0.01}}]), "branchynet")
    fresh = s.decide(SLOW)
    assert fresh.threshold == 0.9
    kept = s.decide(SLOW, incumbent=Plan(3, 1.0, fresh.mode, offload=False))
    assert kept.threshold == 1.0 and kept.decided_by.startswith("the plan in force")
    assert s.decide(SLOW, incumbent=Plan(3, 0.5, fresh.mode, offload=False)).threshold == 0.9
    bounded = Scheduler(toy_model(), sla(constraints={"latency_ms": {"max": 60}},
                                         objectives=[{"maximize_accuracy": {"tolerance": 0.01}}]), "branchynet")
    assert bounded.decide(SLOW, incumbent=Plan(3, 1.0, fresh.mode, offload=False)).threshold != 1.0


def test_without_a_tolerance_the_plan_in_force_yields_only_past_the_incumbent_margin():
    """minimize_latency has no tolerance: a plan in force within INCUMBENT_MARGIN of the fastest stays,
    one further off is replaced by the fastest. On a 20 Mbit/s, 20 ms link the drone alone answers at
    47.2 ms (p95) and offloading plans at 47.9-58 ms."""
    mid = Conditions(bandwidth_mbps=20.0, rtt_ms=20.0)
    s = Scheduler(toy_model(), sla(objectives=["minimize_latency"]))
    table = s.model.predict_all(mid, s.sla.percentile, s.sla.on_time_ms)
    best = s.decide(mid)
    lat = table["latency_ms"]
    rows, splits = np.nonzero(table.valid & np.isfinite(lat))
    near = [(r, c) for r, c in zip(rows, splits)
            if best.prediction.latency_ms < lat[r, c] <= (1 + INCUMBENT_MARGIN) * best.prediction.latency_ms]
    far = [(r, c) for r, c in zip(rows, splits) if lat[r, c] > (1 + 2 * INCUMBENT_MARGIN) * best.prediction.latency_ms]
    assert near and far, "the toy has plans on both sides of the margin"
    for (r, c), stays in ((near[0], True), (far[0], False)):
        p = table.prediction(r, c)
        d = s.decide(mid, incumbent=p.plan)
        assert (d.plan == p.plan) is stays, (p, d.reason)
    assert s.decide(mid, incumbent=table.prediction(*near[0]).plan).decided_by.startswith("the plan in force")
