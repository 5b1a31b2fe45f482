"""On-time accuracy and staleness (core/on_time.py), by hand."""
import math

import pytest

from spinn_ros.core.on_time import Answered, CameraFrame, score_commands

DEADLINE_S = 0.1


def test_the_latest_own_answer_within_the_deadline_is_the_command():
    frames = [CameraFrame(1, 0.0, True), CameraFrame(2, 0.033, False), CameraFrame(3, 0.066, False)]
    answers = [
        Answered(1, 0.02, False), Answered(1, 0.08, True),      # provisional wrong, final right in time: right
        Answered(2, 0.05, False), Answered(2, 0.20, True),      # provisional right, final wrong but late: right
        # frame 3: no answer of its own; at its deadline (0.166) frame 1's final (True) is in force: wrong
    ]
    s = score_commands(frames, answers, DEADLINE_S)
    assert s.on_time_accuracy == pytest.approx(2 / 3) and s.own_on_time_share == pytest.approx(2 / 3)
    # at each arrival: nothing yet (frame 1), frame 1's answer (33 ms old), frame 2's (33 ms old)
    assert s.staleness_p95_ms == pytest.approx(33.0)


def test_a_frame_with_no_answer_in_force_is_wrong_and_no_frames_is_nan():
    s = score_commands([CameraFrame("a", 0.0, False)], [Answered("a", 0.5, False)], DEADLINE_S)
    assert s.on_time_accuracy == 0.0 and math.isnan(s.staleness_p95_ms)
    assert math.isnan(score_commands([], [], DEADLINE_S).on_time_accuracy)
