"""Link estimators and the change detector on synthetic noisy sequences."""
import math
from types import SimpleNamespace

import numpy as np
import pytest

from spinn_ros.core.estimators import (
    SOURCE_CLOUD,
    SOURCE_DEVICE,
    SOURCE_DEVICE_FALLBACK,
    BandwidthEstimator,
    ChangeDetector,
    LinkEstimator,
    LossEstimator,
    OffloadRate,
    RttEstimator,
    Trigger,
    transfer_ms,
)
from spinn_ros.core.prediction import Conditions
from spinn_ros.core.probe_train import TRAIN_LENGTH

DT = 0.1          # seconds between samples (a 10 Hz monitor)


def noisy(rng, level, n, sigma=0.1, spikes=0.05, spike_factor=4.0):
    """Log-normal noise around ``level`` plus occasional upward spikes (a stalled packet)."""
    x = level * np.exp(rng.normal(0, sigma, n))
    x[rng.random(n) < spikes] *= spike_factor
    return x


def test_rtt_median_filter_ignores_spikes_and_tracks_steps():
    rng = np.random.default_rng(1)
    est = RttEstimator()
    values = [est.update(x) for x in noisy(rng, 40.0, 300)]
    assert max(values[20:]) < 40 * 1.3 and min(values[20:]) > 40 * 0.7     # spikes of 4x never show
    values = [est.update(x) for x in noisy(rng, 100.0, 60, spikes=0)]
    assert values[-1] == pytest.approx(100, rel=0.2)
    assert math.isnan(RttEstimator().value)


def train(rng, mbps, nbytes=50_000, rtt=30.0, sigma=0.2, retransmit=0.0) -> list[float]:
    """Reply times of a probe train of ``nbytes`` payloads at ``mbps``: each gap noisy
    (log-normal ``sigma``), the last one late by ``retransmit`` ms."""
    gaps = nbytes * 8 / (mbps * 1e3) * np.exp(rng.normal(0, sigma, TRAIN_LENGTH))
    replies = rtt + np.cumsum(gaps)
    replies[-1] += retransmit
    return [float(r) for r in replies]


def test_bandwidth_trimmed_mean_is_robust_to_noise_and_outliers():
    rng = np.random.default_rng(2)
    est = LinkEstimator()
    for i in range(200):
        est.on_probe_train(20_000, train(rng, 20.0, 20_000, sigma=0.1, retransmit=300.0 * (i % 17 == 0)))
    assert est.bandwidth.value == pytest.approx(20.0, rel=0.15)
    assert math.isnan(BandwidthEstimator().value)


def test_single_payloads_never_seed_nor_raise_the_estimate():
    """A lone payload reads fast when it fits the shaper's burst: it only ever says the link slowed."""
    est = BandwidthEstimator()
    for _ in range(10):
        est.add_payload(10_000, 30.5, 30.0, 0.0)            # 160 Mbit/s, if it were believed
    assert math.isnan(est.value) and est.samples == 10
    est.add_train(0.1)                                    # 0.1 us per bit: 10 Mbit/s
    for _ in range(10):
        est.add_payload(10_000, 31.0, 30.0, 0.0)
    assert est.value == pytest.approx(10.0) and est.jumps == 0


def test_payloads_restart_the_estimate_on_a_collapse_not_on_a_stall():
    """Slow beyond twice their transfer time plus the margin, in a row: for under ``collapse_s`` it is
    a stall (offloads queued behind a probe train, a retransmission timeout), for longer a collapse."""
    est = BandwidthEstimator()
    est.add_train(0.01)                                     # 100 Mbit/s: 10 kB in 0.8 ms
    for i in range(5):                                      # 5 ms beyond the round trip: under the 20 ms margin
        est.add_payload(10_000, 15.0, 10.0, i * 0.05)
    assert est.jumps == 0
    for i in range(5):                                      # 200 ms late, five in a row, over 0.2 s: a stall
        est.add_payload(10_000, 210.0, 10.0, 1.0 + i * 0.05)
    est.add_payload(10_000, 11.0, 10.0, 1.3)                # and it is over
    assert est.jumps == 0 and est.value == pytest.approx(100.0)
    for i in range(8):                                      # 80 ms per 10 kB (1 Mbit/s) for 0.35 s: a collapse
        est.add_payload(10_000, 90.0, 10.0, 2.0 + i * 0.05)
    assert est.jumps == 1 and est.value == pytest.approx(1.0)
    with pytest.raises(ValueError, match="collapse_s >= 0"):
        BandwidthEstimator(collapse_s=-1)


def test_loss_is_a_windowed_failure_share():
    est = LossEstimator(window=10)
    assert est.value == 0.0
    for ok in [True] * 7 + [False] * 3:
        est.update(ok)
    assert est.value == pytest.approx(0.3)
    for _ in range(10):
        est.update(True)
    assert est.value == 0.0


def test_link_estimator_reads_drone_results_and_builds_conditions():
    link = LinkEstimator()
    link.cloud_alive = True
    for _ in range(5):
        link.on_probe(20.0)
    link.on_probe_train(10_000, [28.0, 36.0, 44.0, 52.0, 60.0])     # 8 ms per 10 kB: 10 Mbit/s
    result = lambda **kw: SimpleNamespace(**{"provisional": False, "offload_bytes": 10_000, "network_ms": 20.0 + 8.0,
                                             "cloud_compute_ms": 3.0, "cloud_queue_ms": 1.0, **kw})
    for _ in range(9):
        link.on_result(result(source=SOURCE_CLOUD))
    link.on_result(result(source=SOURCE_DEVICE_FALLBACK))          # expired offload
    link.on_result(result(source=SOURCE_DEVICE, offload_bytes=0))  # not offloaded: no information
    link.on_result(result(source=SOURCE_CLOUD, provisional=True))  # provisional: ignored
    f = link.link_state_fields()
    assert f["bandwidth_mbps"] == pytest.approx(10_000 * 8 / 8e3) and f["rtt_ms"] == pytest.approx(20.0)
    assert f["loss_rate"] == pytest.approx(1 / 15)                   # 5 probes + 10 offloads (not trains): one failed
    link.on_cloud_load({"queue_depth": 3, "compute_ms": 4.0, "batch_size": 2.0})
    c = link.conditions(deadline_ms=150.0)
    assert isinstance(c, Conditions) and c.deadline_ms == 150.0 and c.cloud_queue_ms == pytest.approx(1.0)
    assert c.cloud_batch_size == 2.0 and c.cloud_queue_depth == 3.0
    link.on_probe(None)
    assert link.loss.value == pytest.approx(2 / 16)
    link.on_probe_train(10_000, [28.0, None, 44.0, 52.0, 60.0])     # a train with a loss: no reading, no loss
    assert link.loss.value == pytest.approx(2 / 16)
    assert link.bandwidth.samples == 1          # the train: offloads flowing for under warm_s are no evidence


def test_offload_rate_counts_the_answered_bytes_of_the_last_window():
    rate = OffloadRate(window_s=1.0)
    assert rate.mbps(0.0) == 0.0
    for i in range(10):
        rate.add(i * 0.1, 12_500)                       # 125 kB over the last second: 1 Mbit/s
    assert rate.mbps(0.95) == pytest.approx(1.0)
    assert rate.mbps(1.55) == pytest.approx(0.4)        # the first six have left the window
    assert rate.mbps(10.0) == 0.0
    with pytest.raises(ValueError):
        OffloadRate(window_s=0)


def test_a_train_beside_the_drones_offloads_reads_the_link_with_them_added_back():
    """A train gets what the drone's offloads leave it (measured: trains read 14 Mbit/s on a 25
    Mbit/s link carrying 13 Mbit/s of offloads); the link's rate is the two together."""
    now = [100.0]
    link = LinkEstimator(clock=lambda: now[0])
    link.on_probe(10.0)
    for i in range(20):                               # 20 answered 25 kB offloads in the last second: 4 Mbit/s
        now[0] = 100.0 + i * 0.05
        link.on_result(SimpleNamespace(provisional=False, offload_bytes=25_000, network_ms=10.0 + 5.0,
                                       source=SOURCE_CLOUD, cloud_compute_ms=3.0, cloud_queue_ms=0.0))
    link.on_probe_train(10_000, [28.0, 36.0, 44.0, 52.0, 60.0])     # the train alone: 10 Mbit/s
    assert link.bandwidth.value == pytest.approx(14.0)
    now[0] += 5.0                                                     # the drone stopped offloading
    link.on_probe_train(10_000, [28.0, 36.0, 44.0, 52.0, 60.0])
    assert link.bandwidth.value == pytest.approx(2 / (1 / 14 + 1 / 10))     # mean time per bit of the two


def test_offloads_failing_while_a_new_plan_warms_up_are_not_the_links_loss():
    now = [0.0]
    link = LinkEstimator(clock=lambda: now[0])
    link.on_new_plan()
    now[0] = 0.5                                   # half a second into the plan: the connection warming up
    link.on_offload_failed()
    assert link.loss.samples == 0
    now[0] = 1.0                                   # warm_s on: a failure is the link's
    link.on_offload_failed()
    assert link.loss.samples == 1 and link.loss.value == 1.0


def test_cloud_answers_measure_the_clouds_speed_against_its_profile():
    """Each cloud answer's compute against what the cloud profile says for its tail (split -> the
    exit that answered, its share of the batch the cloud reports): the planner's cloud slowdown."""
    link = LinkEstimator()
    profile = {(1, 2): 2.0, (0, 2): 3.0}                      # ms per request at batch 1
    link.expected_cloud_ms = lambda split, exit_index, threshold, batch: profile[split, exit_index] / batch
    assert link.conditions().cloud_slowdown == 1.0                 # nothing measured: as profiled
    answer = lambda split, ms: SimpleNamespace(provisional=False, source=SOURCE_CLOUD, offload_bytes=5_000,
                                               network_ms=10.0, cloud_compute_ms=ms, cloud_queue_ms=0.0,
                                               split_point=split, exit_index=2, exit_threshold=0.8)
    for _ in range(30):
        link.on_result(answer(1, 4.4))
        link.on_result(answer(0, 6.6))
    assert link.conditions().cloud_slowdown == pytest.approx(2.2)
    link.on_cloud_load({"queue_depth": 0, "compute_ms": 1.0, "batch_size": 2.0})     # batches of 2: half the share
    for _ in range(30):
        link.on_result(answer(1, 2.2))
    assert link.conditions().cloud_slowdown == pytest.approx(2.2)
    link.on_result(answer(1, 0.0))                                                    # no compute reported: no sample
    assert link.conditions().cloud_slowdown == pytest.approx(2.2)


def test_the_performance_model_gives_the_clouds_share_per_request():
    from spinn_ros.core.performance import PerformanceModel
    from spinn_ros.core.profile import synthetic_profile
    from spinn_ros.testing.toy import MODEL_ID, make_calibration

    device = synthetic_profile("device", model_id=MODEL_ID, exit_stages=(0, 1, 2), stage_ms=(20, 20, 20),
                               exit_ms=(2, 2, 2), wire_bytes=(50_000, 20_000, 5_000))
    cloud = synthetic_profile("cloud", model_id=MODEL_ID, exit_stages=(0, 1, 2), stage_ms=(1, 1, 1),
                              exit_ms=(0.1, 0.1, 0.1), batch_scale={1: 1.0, 2: 1.6})
    m = PerformanceModel(device, cloud, make_calibration())
    assert m.cloud_ms_per_request(1, 2, 0.8) == pytest.approx(2.2)             # stages 1, 2 and their heads
    assert m.cloud_ms_per_request(0, 2, float("inf")) == pytest.approx(3.1)    # plain network: the final head only
    assert m.cloud_ms_per_request(1, 2, 0.8, batch=2) == pytest.approx(2.2 * 1.6 / 2)
    assert math.isnan(m.cloud_ms_per_request(2, 0, 0.8))                      # exit 0 is on the drone at split 2


transfer_ms_of = np.vectorize(transfer_ms)   # per sample of a rate series


def _run(detector, series, start=0):
    """Feed {name: values} sample by sample; return the sample indices at which it fired."""
    n = len(next(iter(series.values())))
    return [i for i in range(n) if detector.update((start + i) * DT, {k: v[i] for k, v in series.items()})]


def test_noise_never_triggers_a_replan():
    """Unsmoothed noise with outliers around the plan's reference (the monitor plans on
    smoothed estimates, so its reference is close to the truth) never re-plans."""
    rng = np.random.default_rng(3)
    det = ChangeDetector()
    det.rebase({"transfer_ms": transfer_ms(10.0), "rtt_ms": 40.0, "loss_rate": 0.01, "cloud_alive": 1.0})
    n = 3000
    fired = _run(det, {"transfer_ms": transfer_ms_of(noisy(rng, 10.0, n, sigma=0.08, spikes=0.02, spike_factor=0.3)),
                       "rtt_ms": noisy(rng, 40.0, n, sigma=0.08, spikes=0.02),
                       "loss_rate": np.clip(rng.normal(0.01, 0.01, n), 0, 1),
                       "cloud_alive": np.ones(n)})
    assert fired == []


def test_noise_through_the_estimators_never_triggers():
    rng = np.random.default_rng(4)
    link, det = LinkEstimator(), ChangeDetector()
    link.cloud_alive = True
    fired = []
    for i in range(2050):
        link.on_probe(float(noisy(rng, 40.0, 1)[0]))
        # a train of 50 kB payloads: 40 ms gaps, 20 % noise, retransmissions
        link.on_probe_train(50_000, train(rng, 10.0, retransmit=300.0 * (rng.random() < 0.03)))
        # the monitor plans once the windows are full (LinkState.samples), not on the first sample
        if i >= 50 and det.update(i * DT, link.change_values()):
            fired.append(i)
    assert fired == [50]
    assert link.bandwidth.value == pytest.approx(10.0, rel=0.15)


@pytest.mark.parametrize("factor, dwell_s", [(0.7, 1.0), (1.6, 1.0), (0.02, 0.25), (0.4, 0.25)])
def test_a_bandwidth_step_is_detected_within_its_dwell(factor, dwell_s):
    """Moderate steps wait the full dwell; large ones (a link falling to 2 % or 40 % of its
    rate) take the fast tier, so a new plan can follow within a second."""
    rng = np.random.default_rng(5)
    det = ChangeDetector()
    before = noisy(rng, 10.0, 200, sigma=0.05, spikes=0)
    after = noisy(rng, 10.0 * factor, 200, sigma=0.05, spikes=0)
    fired = _run(det, {"transfer_ms": transfer_ms_of(np.concatenate([before, after]))})
    dwell_samples = round(dwell_s / DT)
    assert fired[0] == 0 and len(fired) == 2
    assert 200 + dwell_samples - 1 <= fired[1] <= 200 + dwell_samples + 2
    assert det.reference["transfer_ms"] == pytest.approx(transfer_ms(10.0 * factor), rel=0.2)


def test_fast_links_do_not_replan_on_unmeasurable_rate_changes():
    """100 -> 400 Mbit/s moves a split tensor 1.3 ms -> 0.3 ms: nothing a plan depends on."""
    det = ChangeDetector()
    det.update(0.0, {"transfer_ms": transfer_ms(100.0)})
    assert _run(det, {"transfer_ms": [transfer_ms(400.0)] * 50}, start=1) == []


def test_hysteresis_keeps_counting_near_the_threshold():
    det = ChangeDetector({"x": Trigger(rel=0.3, floor=1.0, dwell_s=1.0, release=0.5)})
    det.update(0.0, {"x": 10.0})
    # alternate 35 % and 25 % above the reference: the clock started at 35 % is not reset by 25 %
    seq = [13.5 if i % 2 == 0 else 12.5 for i in range(12)]
    fired = _run(det, {"x": seq}, start=1)
    assert fired == [10]
    # dipping below release (15 %) resets it
    det = ChangeDetector({"x": Trigger(rel=0.3, floor=1.0, dwell_s=1.0, release=0.5)})
    det.update(0.0, {"x": 10.0})
    assert _run(det, {"x": [13.5 if i % 3 else 10.5 for i in range(30)]}, start=1) == []


def test_outage_is_reported_at_once_and_nan_holds():
    det = ChangeDetector()
    det.update(0.0, {"cloud_alive": 1.0, "rtt_ms": 30.0})
    assert det.update(0.1, {"cloud_alive": 0.0, "rtt_ms": float("nan")}) == ["cloud_alive"]
    assert det.reference["rtt_ms"] == 30.0
    assert det.update(0.2, {"cloud_alive": 0.0, "rtt_ms": 31.0}) == []


def test_small_absolute_changes_of_small_values_do_not_flap():
    det = ChangeDetector()
    det.update(0.0, {"rtt_ms": 0.5})
    assert _run(det, {"rtt_ms": [1.5] * 50}, start=1) == []      # +1 ms on a 5 ms floor: 20 %


@pytest.mark.parametrize("what", ["rtt", "bandwidth"])
def test_steps_through_the_estimators_are_detected_within_a_few_seconds(what):
    rng = np.random.default_rng(6)
    link, det = LinkEstimator(), ChangeDetector()
    link.cloud_alive = True
    fired = []
    for i in range(400):
        after = i >= 200
        rtt_level = 120.0 if after and what == "rtt" else 40.0
        mbps = 5.0 if after and what == "bandwidth" else 10.0
        link.on_probe(float(noisy(rng, rtt_level, 1, sigma=0.05)[0]))
        link.on_probe_train(50_000, train(rng, mbps, rtt=float(noisy(rng, rtt_level, 1, sigma=0.05, spikes=0)[0])))
        if i >= 50 and det.update(i * DT, link.change_values()):
            fired.append(i)
    # a 2x bandwidth step turns the window over in stages: at most one settling re-plan
    assert fired[0] == 50 and len(fired) in (2, 3), fired
    assert 200 < fired[1] <= 200 + 40                              # within 4 s at 10 Hz
    final = link.link_state_fields()
    if what == "rtt":
        assert final["rtt_ms"] == pytest.approx(120, rel=0.1)
    else:
        assert final["bandwidth_mbps"] == pytest.approx(5.0, rel=0.15)


def test_a_collapsing_link_is_followed_and_detected_within_a_second():
    """100 -> 2 Mbit/s through the estimators, a train per 0.5 s and one offload per 0.1 s: the
    slow offloads restart the bandwidth window and the fast tier fires well within 1 s."""
    rng = np.random.default_rng(7)
    now = [0.0]
    link, det = LinkEstimator(clock=lambda: now[0]), ChangeDetector()
    link.cloud_alive = True
    fired = []
    for i in range(300):
        now[0] = i * DT
        mbps = 2.0 if i >= 200 else 100.0
        link.on_probe(float(noisy(rng, 10.0, 1, sigma=0.05)[0]))
        if i % 5 == 0:         # a train gets what the offloads (10 kB per 0.1 s: 0.8 Mbit/s) leave it
            link.on_probe_train(32_768, train(rng, mbps - 0.8, 32_768, rtt=10.0, sigma=0.1))
        link.on_offload(10_000, 10.0 + 10_000 * 8 / (mbps * 1e3) * np.exp(rng.normal(0, 0.1)))
        if i >= 50 and det.update(i * DT, link.change_values()):
            fired.append(i)
    assert fired[0] == 50 and fired[1] > 200
    assert fired[1] - 200 <= 9, f"detected {(fired[1] - 200) * DT:.1f} s after the step"
    assert link.bandwidth.value == pytest.approx(2.0, rel=0.2) and link.bandwidth.jumps >= 1
