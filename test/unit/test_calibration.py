"""Calibration file: policy, schema, queries, monotonic sanity, clear errors."""
import json

import numpy as np
import pytest

from spinn_ros.core import calibration as C
from spinn_ros.core.checkpoint import calibration_path, default_checkpoint_path

STAGE_MACS = [10, 20, 30, 40]
EXIT_STAGES = [0, 2, 3]
HEAD_MACS = [1, 2, 3]


def synthetic(n=400, seed=0):
    rng = np.random.default_rng(seed)
    labels = rng.random(n) < 0.4
    # deeper exits are more confident and more often right
    conf = np.stack([0.5 + 0.5 * rng.random(n) ** (1.5 - 0.4 * e) for e in range(3)])
    right = np.stack([rng.random(n) < 0.7 + 0.1 * e for e in range(3)])
    pred = np.where(right, labels[None], ~labels[None])
    calib = C.build_calibration(
        confidences=conf, predictions=pred, labels=labels, steering_errors=rng.random((3, n)) * 0.3,
        exit_stages=EXIT_STAGES, stage_macs=STAGE_MACS, exit_head_macs=HEAD_MACS,
        model_id="abc123", model_name="toy")
    return calib, conf, pred, labels


def test_policy_takes_the_first_confident_exit_and_the_final_always_answers():
    conf = np.array([[0.9, 0.6, 0.6, 0.99],
                     [0.95, 0.8, 0.6, 0.5],
                     [0.5, 0.5, 0.55, 0.5]])
    np.testing.assert_array_equal(C.exit_indices(conf, 0.75), [0, 1, 2, 0])


def test_round_trip_and_queries(tmp_path):
    calib, conf, pred, labels = synthetic()
    path = tmp_path / "toy.calib.json"
    C.save_calibration(path, calib)
    cal = C.load_calibration(path, "abc123")
    assert cal.num_exits == 3 and cal.exit_stages == EXIT_STAGES and cal.num_stages == 4
    t = 0.9
    dist = cal.exit_distribution(t)
    assert sum(dist) == pytest.approx(1.0, abs=1e-5)
    taken = C.exit_indices(conf, t)
    np.testing.assert_allclose(dist, [(taken == e).mean() for e in range(3)], atol=1e-6)
    # overall accuracy equals what the policy really gets
    assert cal.accuracy(None, t) == pytest.approx((pred[taken, np.arange(len(taken))] == labels).mean(), abs=1e-6)
    # split s answers on device the frames whose exit stage < s
    assert cal.device_exit_probability(0, t) == 0.0
    assert cal.device_exit_probability(1, t) == pytest.approx(dist[0], abs=1e-6)
    assert cal.device_exit_probability(3, t) == pytest.approx(dist[0] + dist[1], abs=1e-6)
    assert cal.device_exit_probability(4, t) == pytest.approx(1.0)
    assert cal.accuracy(0, t) is None
    m0 = taken == 0
    assert cal.accuracy(1, t) == pytest.approx((pred[0, m0] == labels[m0]).mean(), abs=1e-6)
    # the stored split table agrees with the helpers
    row = calib["splits"][3]
    assert row["device_exit_probability"][cal.threshold_index(t)] == pytest.approx(cal.device_exit_probability(3, t))


def test_expected_macs_split_adds_up_for_every_split():
    calib, *_ = synthetic()
    cal = C.Calibration(calib, "mem")
    for t in (0.6, 0.95):
        for split in range(cal.num_stages + 1):
            device, cloud = cal.expected_macs_split(split, t)
            assert device + cloud == pytest.approx(cal.expected_macs(t), rel=1e-6)
        assert cal.expected_macs_split(cal.num_stages, t)[1] == 0


def test_thresholds_snap_to_the_grid_and_reject_out_of_range():
    cal = C.Calibration(synthetic()[0], "mem")
    assert cal.thresholds[cal.threshold_index(0.9004)] == 0.9
    with pytest.raises(ValueError, match="outside the calibrated range"):
        cal.threshold_index(0.2)


def assert_monotonic(cal: C.Calibration):
    """Raising the threshold never makes more frames leave at or before any exit."""
    for split in range(cal.num_stages):
        probs = [cal.device_exit_probability(split, t) for t in cal.thresholds]
        assert all(b <= a + 1e-9 for a, b in zip(probs, probs[1:])), f"split {split}: {probs}"
    first = [cal.exit_distribution(t)[0] for t in cal.thresholds]
    assert all(b <= a + 1e-9 for a, b in zip(first, first[1:]))
    macs = [cal.expected_macs(t) for t in cal.thresholds]
    assert all(b >= a - 1e-6 for a, b in zip(macs, macs[1:]))


def test_synthetic_calibration_is_monotonic():
    assert_monotonic(C.Calibration(synthetic()[0], "mem"))


def test_shipped_calibration_matches_the_shipped_checkpoint_and_is_sane():
    from spinn_ros.core.checkpoint import load_checkpoint

    _, meta = load_checkpoint(default_checkpoint_path())
    cal = C.load_calibration(calibration_path(default_checkpoint_path()), meta["model_id"])
    assert cal.data["version"] == C.VERSION and cal.data["num_frames"] >= 1000
    assert_monotonic(cal)
    assert cal.device_exit_probability(cal.num_stages, 0.9) == pytest.approx(1.0)


def test_errors_name_the_file_and_the_problem(tmp_path):
    calib, *_ = synthetic()
    good = tmp_path / "good.calib.json"
    C.save_calibration(good, calib)
    with pytest.raises(C.CalibrationError, match="good.calib.json.*made for model abc123.*other"):
        C.load_calibration(good, "other")
    with pytest.raises(C.CalibrationNotFound, match="missing.calib.json: no such file"):
        C.load_calibration(tmp_path / "missing.calib.json", "abc123")
    cases = {
        "notjson": "{ truncated",
        "wrongformat": json.dumps({"format": "something-else"}),
        "wrongversion": json.dumps(calib | {"version": 99}),
        "badrates": json.dumps(calib | {"per_threshold": [r | {"exit_rate": [0.5, 0.0, 0.0]} for r in calib["per_threshold"]]}),
    }
    expected = {"notjson": "not JSON", "wrongformat": "not a spinn calibration", "wrongversion": "version 99",
                "badrates": "sum to 1"}
    for name, text in cases.items():
        path = tmp_path / f"{name}.json"
        path.write_text(text)
        with pytest.raises(C.CalibrationError, match=f"{name}.json.*{expected[name]}"):
            C.load_calibration(path, "abc123")


def test_temperature_scaling_recovers_an_overconfident_exit():
    import numpy as np

    from spinn_ros.core.calibration import expected_calibration_error, fit_temperature

    rng = np.random.default_rng(0)
    z = rng.normal(0, 2.0, size=20_000)                  # calibrated logits
    y = rng.random(20_000) < 1 / (1 + np.exp(-z))
    over = 1 / (1 + np.exp(-3.0 * z))                    # the same model, 3x overconfident
    t = fit_temperature(over, y)
    assert t == pytest.approx(3.0, rel=0.1)
    calibrated = 1 / (1 + np.exp(-3.0 * z / t))
    conf = lambda p: np.maximum(p, 1 - p)
    ok = lambda p: (p > 0.5) == y
    assert expected_calibration_error(conf(calibrated), ok(calibrated)) < 0.02
    assert expected_calibration_error(conf(over), ok(over)) > 0.05
