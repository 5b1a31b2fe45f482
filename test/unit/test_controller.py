"""The controller (pure, no ROS): its stale-answer safety (the commanded forward speed follows
the age of the answer it acts on, on a fake clock: camera stamps and "now" in ns) and the
guard on the goal's pull. The basic mapping: test_controller_mapping below."""
from __future__ import annotations

import math

import pytest

from spinn_ros.core.controller import ControllerConfig, DroNetController, age_factor

CFG = ControllerConfig(max_forward_speed=2.0, speed_alpha=1.0, yaw_alpha=1.0, slow_age_s=0.2, max_age_s=0.6)
MS = 1_000_000


class FakeCamera:
    """Frames every 50 ms of a fake clock; each is answered ``delay_ms`` after its stamp."""

    def __init__(self, ctl: DroNetController):
        self.ctl, self.stamp_ns = ctl, 0

    def answer(self, p: float, delay_ms: float, steering: float = 0.0):
        self.stamp_ns += 50 * MS
        now_ns = self.stamp_ns + int(delay_ms * MS)
        cmd = self.ctl.update(p, steering, self.stamp_ns, age_s=(now_ns - self.stamp_ns) / 1e9)
        if cmd.reason != "stale":
            self.ctl.commanded(now_ns, cmd.yaw_rate)    # as the drone node reports what it sent
        return cmd


def test_fresh_answers_fly_at_the_filtered_speed():
    cam = FakeCamera(DroNetController(CFG))
    cmd = cam.answer(0.0, delay_ms=20)
    assert (cmd.forward_speed, cmd.reason) == (2.0, "track")
    assert cam.answer(0.0, delay_ms=200).forward_speed == 2.0, "up to slow_age_s: no slowing"


def test_speed_falls_linearly_with_age_then_hovers():
    speeds = [FakeCamera(DroNetController(CFG)).answer(0.0, delay_ms=d).forward_speed
              for d in (200, 300, 400, 500, 590)]
    assert speeds == pytest.approx([2.0, 1.5, 1.0, 0.5, 0.05])
    for delay in (600, 900, 5000):
        cmd = FakeCamera(DroNetController(CFG)).answer(0.0, delay_ms=delay, steering=0.8)
        assert (cmd.forward_speed, cmd.yaw_rate, cmd.reason) == (0.0, 0.0, "hover"), f"{delay} ms old"


def test_age_never_speeds_up_a_stop_and_fresh_answers_recover():
    ctl = DroNetController(CFG)
    cam = FakeCamera(ctl)
    assert cam.answer(0.95, delay_ms=50).reason == "stop"
    assert cam.answer(0.95, delay_ms=900).forward_speed == 0.0
    assert cam.answer(0.0, delay_ms=700).reason == "hover"     # too old to act on
    assert cam.answer(0.0, delay_ms=30).forward_speed == 2.0, "a fresh answer flies again at once"


def test_age_scales_the_command_not_the_filter():
    """An old answer still informs the low-pass filter; only what is commanded now is scaled."""
    cfg = ControllerConfig(max_forward_speed=1.0, speed_alpha=0.5, slow_age_s=0.1, max_age_s=0.3)
    aged, fresh = DroNetController(cfg), DroNetController(cfg)
    for i in range(1, 6):
        aged.update(0.2, 0.0, i, age_s=0.2)
        fresh.update(0.2, 0.0, i, age_s=0.0)
    assert aged.update(0.2, 0.0, 6).forward_speed == pytest.approx(fresh.update(0.2, 0.0, 6).forward_speed)


def test_age_factor_bounds_and_config_checks():
    assert age_factor(-1.0, CFG) == 1.0 and age_factor(0.2, CFG) == 1.0
    assert age_factor(0.4, CFG) == pytest.approx(0.5) and age_factor(0.6, CFG) == 0.0 == age_factor(9, CFG)
    with pytest.raises(ValueError, match="max_age_s"):
        ControllerConfig(slow_age_s=0.5, max_age_s=0.5)
    with pytest.raises(ValueError, match="slow_age_s"):
        ControllerConfig(slow_age_s=-0.1)


def test_an_old_answer_while_turning_slows_by_the_turn_since_its_frame():
    """Answers 250 ms old while yawing at 1 rad/s: the drone has turned 0.25 rad since each frame
    (commanded all along), so it flies at (0.3 - 0.25) / (0.3 - 0.05) = 20 %."""
    cfg = ControllerConfig(max_forward_speed=1.0, max_yaw_rate=1.0, speed_alpha=1.0, yaw_alpha=1.0,
                           slow_age_s=0.5, max_age_s=1.0, turn_slow_rad=0.05, turn_max_rad=0.3)
    turning = FakeCamera(DroNetController(cfg))
    speeds = [turning.answer(0.0, delay_ms=250, steering=-1.0).forward_speed for _ in range(20)]
    assert speeds[0] == 1.0, "nothing commanded before the first frame: no turn"
    assert speeds[-1] == pytest.approx(0.2) and turning.ctl.turned_since(0, 10**12) > 0
    fresh = FakeCamera(DroNetController(cfg))
    assert [fresh.answer(0.0, delay_ms=20, steering=-1.0).forward_speed for _ in range(20)][-1] == 1.0
    straight = FakeCamera(DroNetController(cfg))
    assert [straight.answer(0.0, delay_ms=250).forward_speed for _ in range(20)][-1] == 1.0, "old, not turning"
    ctl = turning.ctl
    ctl.hover()
    assert ctl.turned_since(0, 10**12) == 0.0, "a hover holds still"


GOAL = ControllerConfig(max_forward_speed=1.0, speed_alpha=1.0, max_yaw_rate=1.0, yaw_alpha=1.0, goal_gain=1.0,
                        goal_clearance_m=1.5)


def test_the_goal_pulls_only_once_the_last_metres_flown_were_clear():
    """After something close ahead (p >= 0.5) the goal may turn the drone only once it has flown
    goal_clearance_m on (commanded speed x time between frames); turning in place counts nothing."""
    ctl = DroNetController(GOAL)
    for t in (0, 500, 1000):    # stopped in front of something, for a while: nothing flown
        assert ctl.update(0.95, 0.0, t * MS, heading_error=0.5).reason == "stop"
    # clear from 1.5 s on, flying at 1 m/s: 1.5 m later (3.5 s) the stop frames are forgotten
    yaws = [ctl.update(0.0, 0.0, t * MS, heading_error=0.5).yaw_rate for t in (1500, 2000, 2500, 3000, 3500)]
    assert yaws == pytest.approx([0.0, 0.0, 0.0, 0.0, 0.5])
    assert ctl.update(0.2, 0.0, 4000 * MS, heading_error=0.5).yaw_rate == pytest.approx(0.3), "p = 0.2: some pull"
    ctl = DroNetController(GOAL)
    ctl.update(0.8, 0.0, 1, heading_error=0.5, provisional=True)
    assert ctl.update(0.0, 0.0, 1, heading_error=0.5).yaw_rate == pytest.approx(0.5), \
        "a refined answer replaces its frame's provisional p"


def test_a_hovering_drone_remembers_what_it_stopped_for_without_its_log_growing():
    ctl = DroNetController(GOAL)
    assert ctl.update(0.95, 0.0, 0, heading_error=0.5).reason == "stop"
    for i in range(1, 10_000):              # ~11 min of frames at 15 Hz, stopped: nothing flown
        assert ctl.update(0.95 if i % 2 else 0.92, 0.0, i * 67 * MS, heading_error=0.5).reason == "stop"
    last = 10_000 * 67 * MS
    ctl.update(0.8, 0.0, last, heading_error=0.5, provisional=True)
    assert ctl.update(0.0, 0.0, last, heading_error=0.5).yaw_rate == 0.0, \
        "the refinement replaces its own frame's p, not the stop frames before it"
    assert len(ctl._recent_p) == 1, "frames taken without moving share one entry"


def test_the_goal_pull_fades_with_the_collision_probability_and_heading_errors_wrap():
    """(The rest of the mapping, speed, steering, filters, stops, search and the goal cone, is in
    test_controller_mapping.py.)"""
    goal = ControllerConfig(max_yaw_rate=1.0, yaw_alpha=1.0, goal_gain=1.0, goal_cone=1.0)
    assert DroNetController(goal).update(0.0, 0.0, 1, heading_error=0.5).yaw_rate == pytest.approx(0.5)
    assert DroNetController(goal).update(0.25, 0.0, 1, heading_error=0.5).yaw_rate == pytest.approx(0.25)
    assert DroNetController(goal).update(0.6, 0.4, 1, heading_error=0.5).yaw_rate == pytest.approx(-0.4), \
        "near obstacles the steering alone"
    assert DroNetController(goal).update(0.0, 0.0, 1, heading_error=2 * math.pi - 0.5).yaw_rate == \
        pytest.approx(-0.5), "heading errors wrap"
    search = DroNetController(ControllerConfig(max_yaw_rate=1.0, yaw_alpha=1.0, goal_gain=1.0, goal_cone=1.0,
                                               search_yaw_rate=0.5))
    assert search.update(0.95, -0.46, 1, heading_error=0.0).yaw_rate == pytest.approx(0.5), "stopped: searches left"
    assert search.update(0.95, 0.0, 2, heading_error=-1.2).yaw_rate == 0.0, \
        "the search side kept, but never further from a goal beyond the cone"
