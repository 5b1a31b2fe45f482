"""The DroNet-style mapping of core/controller.py (no ROS, integer stamps as a fake clock): forward
speed falls with collision probability and yaw rate follows steering, both low-pass filtered and
clamped; a hard stop at the critical probability; a second answer for a frame replaces the first;
older frames never rewind it; a final stop holds against provisional answers; hover forgets.
(Stale-answer slowing and the goal's pull are in test/unit/test_controller.py.)"""
from __future__ import annotations

import math

import pytest

from spinn_ros.core.controller import ControllerConfig, DroNetController, turn_factor

CFG = ControllerConfig(max_forward_speed=2.0, max_yaw_rate=1.0, speed_alpha=0.5, yaw_alpha=0.5, critical_collision=0.9)
INSTANT = ControllerConfig(max_forward_speed=2.0, max_yaw_rate=1.5, speed_alpha=1.0, yaw_alpha=1.0)


def settle(cfg: ControllerConfig, p: float, steering: float, n: int = 40):
    ctl = DroNetController(cfg)
    for stamp in range(1, n + 1):
        cmd = ctl.update(p, steering, stamp)
    return cmd


# -- collision probability -> forward speed ------------------------------------------------
@pytest.mark.parametrize("p, speed", [(0.0, 2.0), (0.3, 1.4), (0.6, 0.8), (0.85, 0.3)])
def test_forward_speed_settles_at_max_times_one_minus_p(p, speed):
    cmd = settle(CFG, p, 0.0)
    assert cmd.forward_speed == pytest.approx(speed, abs=1e-6) and cmd.reason == "track" and cmd.stamp_ns == 40


def test_speed_falls_monotonically_with_collision_probability():
    speeds = [settle(INSTANT, p, 0.0).forward_speed for p in (0.0, 0.1, 0.4, 0.7, 0.89)]
    assert speeds == sorted(speeds, reverse=True) and len(set(speeds)) == 5


@pytest.mark.parametrize("critical", [0.9, 0.5])
def test_at_or_above_the_critical_probability_the_drone_stops_at_once(critical):
    cfg = ControllerConfig(max_forward_speed=2.0, speed_alpha=0.5, critical_collision=critical)
    ctl = DroNetController(cfg)
    for stamp in range(1, 20):
        ctl.update(0.0, 0.0, stamp)
    below = ctl.update(critical - 0.01, 0.0, 20)
    assert below.reason == "track" and below.forward_speed > 0
    at = ctl.update(critical, 0.0, 21)
    assert (at.forward_speed, at.reason, at.stamp_ns) == (0.0, "stop", 21), "no filtering into a stop"
    after = ctl.update(0.0, 0.0, 22)
    assert after.forward_speed == pytest.approx(0.5 * 2.0), "a stop zeroes the filter: it restarts from 0"


# -- steering -> yaw rate ------------------------------------------------------------------
@pytest.mark.parametrize("steering, yaw", [(1.0, -1.5), (-1.0, 1.5), (0.4, -0.6), (0.0, 0.0)])
def test_yaw_rate_follows_steering_right_is_negative(steering, yaw):
    """Steering > 0 means 'turn right', which is a negative (clockwise) yaw rate in ROS."""
    cmd = settle(INSTANT, 0.2, steering, n=1)
    assert cmd.yaw_rate == pytest.approx(yaw)


def test_the_yaw_keeps_following_steering_while_stopped():
    cmd = settle(CFG, 0.95, -1.0, n=40)
    assert cmd.reason == "stop" and cmd.forward_speed == 0.0 and cmd.yaw_rate == pytest.approx(1.0)


# -- smoothing -----------------------------------------------------------------------------
def test_both_outputs_are_first_order_low_pass_filters():
    cfg = ControllerConfig(max_forward_speed=1.0, max_yaw_rate=1.0, speed_alpha=0.3, yaw_alpha=0.6)
    ctl = DroNetController(cfg)
    speed = yaw = 0.0
    samples = [(0.0, 1.0), (0.5, -0.5), (0.2, 0.0), (0.8, 0.9), (0.1, -1.0)]
    for stamp, (p, s) in enumerate(samples, 1):
        speed = 0.7 * speed + 0.3 * (1 - p) * 1.0
        yaw = 0.4 * yaw + 0.6 * (-s * 1.0)
        cmd = ctl.update(p, s, stamp)
        assert (cmd.forward_speed, cmd.yaw_rate) == pytest.approx((speed, yaw)), f"after sample {stamp}"


def test_alpha_one_means_no_smoothing():
    ctl = DroNetController(INSTANT)
    assert ctl.update(0.0, 1.0, 1).forward_speed == 2.0
    cmd = ctl.update(0.75, -0.2, 2)
    assert (cmd.forward_speed, cmd.yaw_rate) == pytest.approx((0.5, 0.3))


# -- clamping ------------------------------------------------------------------------------
@pytest.mark.parametrize("p, clamped", [(-0.5, 0.0), (-1e9, 0.0)])
def test_a_probability_below_zero_counts_as_zero(p, clamped):
    assert settle(INSTANT, p, 0.0, n=1) == settle(INSTANT, clamped, 0.0, n=1)
    assert settle(INSTANT, p, 0.0, n=1).forward_speed == 2.0, "never faster than max_forward_speed"


def test_a_probability_above_one_stops():
    assert settle(INSTANT, 1.7, 0.0, n=1).reason == "stop"


@pytest.mark.parametrize("steering, clamped", [(5.0, 1.0), (-3.0, -1.0), (1e12, 1.0)])
def test_steering_beyond_one_counts_as_one(steering, clamped):
    cmd = settle(INSTANT, 0.0, steering, n=1)
    assert cmd == settle(INSTANT, 0.0, clamped, n=1) and abs(cmd.yaw_rate) == INSTANT.max_yaw_rate


def test_a_nan_answer_never_commands_motion():
    ctl = DroNetController(CFG)
    ctl.update(0.0, 0.0, 1)
    cmd = ctl.update(math.nan, math.nan, 2)
    assert math.isfinite(cmd.forward_speed) and math.isfinite(cmd.yaw_rate)
    nxt = ctl.update(0.0, 0.0, 3)
    assert math.isfinite(nxt.forward_speed) and math.isfinite(nxt.yaw_rate)


# -- one answer per frame, in frame order --------------------------------------------------
def test_a_second_answer_for_the_same_frame_replaces_the_first():
    ctl = DroNetController(CFG)
    ctl.update(0.0, 1.0, 1)
    provisional = ctl.update(0.0, 0.0, 2, provisional=True)
    refined = ctl.update(0.5, -1.0, 2)
    alone = DroNetController(CFG)
    alone.update(0.0, 1.0, 1)
    assert refined == alone.update(0.5, -1.0, 2) and refined != provisional, "filtered in once, not on top"


def test_an_older_frame_never_rewinds_the_controller():
    ctl = DroNetController(CFG)
    ctl.update(0.0, 0.0, 5)
    newest = ctl.update(0.2, 0.5, 6)
    stale = ctl.update(0.0, -1.0, 4)
    assert stale.reason == "stale" and stale.stamp_ns == 6
    assert (stale.forward_speed, stale.yaw_rate) == (newest.forward_speed, newest.yaw_rate)
    follow = ctl.update(0.2, 0.5, 7)
    ref = DroNetController(CFG)
    ref.update(0.0, 0.0, 5), ref.update(0.2, 0.5, 6)
    assert follow == ref.update(0.2, 0.5, 7), "the stale answer left no trace"


def test_an_older_frames_critical_answer_still_stops():
    ctl = DroNetController(CFG)
    ctl.update(0.0, 0.0, 5)
    ctl.update(0.0, 0.0, 6)
    late = ctl.update(0.97, 0.0, 5)
    assert (late.forward_speed, late.reason, late.stamp_ns) == (0.0, "stop", 5)
    assert ctl.update(0.1, 0.0, 7, provisional=True).forward_speed == 0.0, "a final late stop holds"
    assert ctl.update(0.1, 0.0, 7).forward_speed > 0, "until a final answer releases it"


def test_a_final_stop_holds_against_provisional_answers_only():
    ctl = DroNetController(CFG)
    ctl.update(0.0, 0.0, 10)
    assert ctl.update(0.95, 0.0, 11).reason == "stop"
    held = ctl.update(0.1, 0.0, 12, provisional=True)
    assert (held.forward_speed, held.reason) == (0.0, "stop"), "a provisional answer cannot release a final stop"
    assert ctl.update(0.1, 0.0, 12).forward_speed == pytest.approx(0.5 * 0.9 * 2.0), "its refinement can"
    assert ctl.update(0.95, 0.0, 13, provisional=True).forward_speed == 0.0
    assert ctl.update(0.2, 0.0, 14, provisional=True).forward_speed > 0, "a provisional stop is not held"


def test_hover_stops_and_forgets_the_filters():
    ctl = DroNetController(CFG)
    for stamp in range(1, 10):
        ctl.update(0.0, 1.0, stamp)
    hover = ctl.hover()
    assert (hover.forward_speed, hover.yaw_rate, hover.reason, hover.stamp_ns) == (0.0, 0.0, "hover", 9)
    cmd = ctl.update(0.0, 1.0, 10)
    assert (cmd.forward_speed, cmd.yaw_rate) == pytest.approx((1.0, -0.5)), "the filters restart from 0"
    assert DroNetController(CFG).hover().stamp_ns == 0


# -- search turn and goal cone (what the mapping does while stopped / far off course) --------
SEARCH = ControllerConfig(max_yaw_rate=1.0, yaw_alpha=1.0, speed_alpha=1.0, search_yaw_rate=0.6)


@pytest.mark.parametrize("steering, heading_error, yaw", [
    (0.0, None, 0.6),          # no preference: left
    (0.05, -0.3, -0.6),        # hardly any steering: toward the goal (to the right)
    (0.5, 0.3, -0.6),          # the network leans right clearly: right, whatever the goal
    (-0.9, None, 0.9),         # steering asks for more than the search rate: its own rate
])
def test_a_stopped_drone_turns_to_search(steering, heading_error, yaw):
    cmd = DroNetController(SEARCH).update(0.95, steering, 1, heading_error=heading_error)
    assert cmd.reason == "stop" and cmd.yaw_rate == pytest.approx(yaw)


def test_the_search_keeps_its_side_while_the_steering_wavers():
    ctl = DroNetController(SEARCH)
    assert ctl.update(0.95, 0.5, 1).yaw_rate == pytest.approx(-0.6)
    assert ctl.update(0.95, -0.05, 2).yaw_rate == pytest.approx(-0.6), "a slight lean does not flip it"
    assert ctl.update(0.0, 0.0, 3).yaw_rate == 0.0 and ctl.update(0.95, 0.0, 4).yaw_rate == pytest.approx(0.6), \
        "a new stop chooses afresh"


def test_beyond_the_goal_cone_no_yaw_away_from_the_goal():
    cfg = ControllerConfig(max_yaw_rate=1.0, yaw_alpha=1.0, goal_cone=1.0)
    # goal 1.2 rad to the left (outside the cone): steering right (negative yaw) would turn further away
    assert DroNetController(cfg).update(0.0, 0.8, 1, heading_error=1.2).yaw_rate == 0.0
    assert DroNetController(cfg).update(0.0, -0.8, 1, heading_error=1.2).yaw_rate == pytest.approx(0.8)
    assert DroNetController(cfg).update(0.0, 0.8, 1, heading_error=0.9).yaw_rate == pytest.approx(-0.8), "inside"


def test_turn_factor_bounds():
    cfg = ControllerConfig(turn_slow_rad=0.1, turn_max_rad=0.3)
    assert turn_factor(0.0, cfg) == 1.0 and turn_factor(-0.1, cfg) == 1.0
    assert turn_factor(0.2, cfg) == pytest.approx(0.5) and turn_factor(-0.2, cfg) == pytest.approx(0.5)
    assert turn_factor(0.3, cfg) == 0.0 == turn_factor(5.0, cfg)


# -- configuration -------------------------------------------------------------------------
@pytest.mark.parametrize("kwargs, named", [
    ({"speed_alpha": 0.0}, "speed_alpha=0.0"), ({"yaw_alpha": 1.5}, "yaw_alpha=1.5"),
    ({"critical_collision": 0.0}, "critical_collision=0.0"), ({"critical_collision": 1.01}, "critical_collision=1.01"),
    ({"max_forward_speed": -1.0}, "max_forward_speed=-1.0"), ({"max_yaw_rate": -0.1}, "max_yaw_rate=-0.1"),
    ({"timeout_s": 0.0}, "timeout_s=0.0"), ({"goal_cone": 0.0}, "goal_cone=0.0"),
    ({"turn_slow_rad": 0.3, "turn_max_rad": 0.3}, "turn_max_rad=0.3"),
])
def test_bad_settings_are_refused_by_name(kwargs, named):
    with pytest.raises(ValueError, match="invalid controller settings") as exc:
        ControllerConfig(**kwargs)
    assert named in str(exc.value)


def test_every_bad_setting_is_named_at_once():
    with pytest.raises(ValueError) as exc:
        ControllerConfig(speed_alpha=0.0, yaw_alpha=0.0, max_forward_speed=-1.0)
    assert all(k in str(exc.value) for k in ("speed_alpha=0.0", "yaw_alpha=0.0", "max_forward_speed=-1.0"))
