"""Step times (core/step_times.py): durations between a frame's marks, by step, as percentiles."""
import pytest

from spinn_ros.core.step_times import STEPS, TOTAL, StepTimes

MS = 1_000_000


def test_each_step_is_the_gap_between_consecutive_marks():
    t = StepTimes()
    for k in range(1, 4):           # steps of k, 2k, 3k, 4k, 5k ms
        t.record([0, k * MS, 3 * k * MS, 6 * k * MS, 10 * k * MS, 15 * k * MS])
    p = t.percentiles((50,))
    assert [p[f"step_{name}_p50_ms"] for name in STEPS] == pytest.approx([2, 4, 6, 8, 10])
    assert p[f"step_{TOTAL}_p50_ms"] == pytest.approx(2 + 4 + 6 + 8)        # to the command


def test_the_whole_span_ends_at_the_command_published_before_the_result():
    assert STEPS.index("command_publish") < STEPS.index("result_publish")      # control does not wait for it
    t = StepTimes()
    t.record([0, MS, 2 * MS, 3 * MS, 4 * MS, 9 * MS])
    assert t.percentiles((50,))[f"step_{TOTAL}_p50_ms"] == pytest.approx(4)


def test_a_frame_without_a_command_counts_its_other_steps_but_not_the_whole_span():
    t = StepTimes()
    t.record([0, MS, 2 * MS, 3 * MS, None, 5 * MS])
    p = t.percentiles((50,))
    assert "step_command_publish_p50_ms" not in p and "step_result_publish_p50_ms" not in p
    assert f"step_{TOTAL}_p50_ms" not in p and p["step_head_p50_ms"] == pytest.approx(1)


def test_the_window_keeps_the_latest_frames_and_bad_input_is_refused():
    t = StepTimes(window=2)
    for gap in (100, 1, 3):
        t.record([0, gap * MS])
    assert t.percentiles((50, 95))["step_slot_wait_p50_ms"] == pytest.approx(2)
    with pytest.raises(ValueError, match="at most 6 marks"):
        t.record(list(range(7)))
    with pytest.raises(ValueError, match="window"):
        StepTimes(window=0)
    assert StepTimes().percentiles() == {}
