"""The flight simulator in process: FlightSim (PyFlyt) flies, collides, ends episodes and renders the
training camera (sim_node over DDS: test/ros/test_sim_node.py)."""
from __future__ import annotations

import numpy as np
import pytest

from spinn_ros.sim import world
from spinn_ros.sim.quadrotor import FlightConfig, FlightSim
from spinn_ros.testing.courses import CLEAR_SEED, WALL_SEED, first_obstacle_ahead


@pytest.fixture
def sims():
    made = []

    def make(**config) -> FlightSim:
        made.append(FlightSim(FlightConfig(**config)))
        return made[-1]

    yield make
    for s in made:
        s.close()


# ---------------------------------------------------------------------------------
# FlightSim
# ---------------------------------------------------------------------------------


def scripted_flight(sim: FlightSim) -> list:
    events = []
    for forward, yaw_rate, seconds in ((1.0, 0.4, 0.8), (1.5, -0.3, 0.8), (0.0, 0.0, 0.4)):
        sim.set_command(forward, yaw_rate)
        events += sim.step(seconds)
    return events


def test_same_seed_same_course_and_flight(sims):
    a, b = sims(seed=5, kind="mixed"), sims(seed=5, kind="mixed")
    assert a.describe() == b.describe()
    events_a, events_b = scripted_flight(a), scripted_flight(b)
    assert a.state() == b.state() and a.time == pytest.approx(2.0)
    assert [e.as_dict() for e in events_a] == [e.as_dict() for e in events_b]
    assert a.frame_seq == b.frame_seq == 30 and np.array_equal(a.camera_frame(), b.camera_frame())
    assert sims(seed=6, kind="mixed").describe()["obstacles"] != a.describe()["obstacles"]


def test_forward_command_flies_forward_and_holds_altitude(sims):
    sim = sims(seed=CLEAR_SEED, kind="forest", camera_hz=0)
    altitude = sim.course.start[2]
    sim.set_command(1.0, 0.0)
    heights, events = [], []
    while sim.time < 4.0:
        events += sim.step(0.05)
        heights.append(sim.state().position[2])
    s = sim.state()
    assert not events, events
    assert 2.8 < s.position[0] < 5.0, s.position          # ~1 m/s after spinning up
    assert abs(s.position[1]) < 0.2 and abs(s.yaw) < 0.05
    assert max(abs(h - altitude) for h in heights) < 0.2, (min(heights), max(heights))
    assert s.velocity_body[0] == pytest.approx(1.0, abs=0.25)
    p = sim.progress()
    assert p.distance_travelled == pytest.approx(s.position[0], abs=0.2)
    assert p.distance_to_goal == pytest.approx(sim.course.goal[0] - s.position[0], abs=0.2)
    assert p.fraction == pytest.approx(s.position[0] / sim.course.goal[0], abs=0.02) and not p.goal_reached


def test_positive_yaw_rate_turns_left(sims):
    sim = sims(seed=CLEAR_SEED, kind="forest", camera_hz=0)
    sim.set_command(0.0, 0.5)                 # ROS convention: +z = counter-clockwise = left
    sim.step(2.0)
    assert 0.75 < sim.state().yaw < 1.15
    sim.set_command(0.0, -0.5)
    sim.step(2.0)
    assert abs(sim.state().yaw) < 0.2
    sim.set_command(1.0, 0.6)                 # forward while turning left: the path bends to +y
    sim.step(1.5)
    assert sim.state().position[1] > 0.2


def test_flying_into_a_wall_is_a_collision_that_ends_the_episode(sims):
    sim = sims(seed=WALL_SEED, kind="walls", camera_hz=0)
    wall, x_hit = first_obstacle_ahead(sim.course)
    sim.set_command(2.0, 0.0)
    events = []
    while not sim.done and sim.time < 20:
        events += sim.step(0.1)
    kinds = [e.kind for e in events]
    assert kinds == ["collision", "episode_end"], kinds
    hit = events[0]
    assert hit.detail["with"] == "obstacle" and hit.detail["obstacle"] == wall
    assert hit.position[0] == pytest.approx(x_hit, abs=0.3)
    assert events[1].detail["reason"] == "collision" and sim.end_reason == "collision"
    t = sim.time
    assert sim.step(1.0) == [] and sim.time == t, "the episode is over: the simulation is frozen"


def test_collisions_can_be_flown_through_and_the_ground_counts(sims):
    sim = sims(seed=WALL_SEED, kind="walls", camera_hz=0, end_on_collision=False)
    sim.set_command(0.0, 0.0, vz=-1.0)
    events = sim.step(2.5)
    assert [e.kind for e in events][:1] == ["collision"] and events[0].detail["with"] == "ground"
    assert not sim.done


@pytest.mark.parametrize("config, command, reason", [
    ({"goal_radius": 19.5}, (1.0, 0.0), "goal_reached"),
    ({}, (-2.0, 0.0), "out_of_bounds"),
    ({"max_duration_s": 0.5}, (0.0, 0.0), "timeout"),
])
def test_episode_ends(sims, config, command, reason):
    sim = sims(seed=CLEAR_SEED, kind="forest", camera_hz=0, **config)
    sim.set_command(*command)
    events = sim.step(4.0)
    assert [e.kind for e in events] == [reason, "episode_end"] and sim.end_reason == reason


def test_camera_frame_is_the_training_camera(sims):
    sim = sims(seed=WALL_SEED, kind="walls", camera_hz=15, camera_size=(96, 128))
    sim.hover()
    sim.step(1.0)
    seq = sim.frame_seq
    while sim.frame_seq == seq:
        sim.step()
    frame = sim.camera_frame()
    assert frame.shape == (96, 128, 3) and frame.dtype == np.uint8
    # flat-shaded scene: a handful of colours (sky, checkered ground, obstacle faces), but not blank
    assert frame.std() > 20 and len(np.unique(frame.reshape(-1, 3), axis=0)) >= 4, "not a blank frame"
    s = sim.state()   # hovering: the pose 1/240 s after the render is the same pose
    ref = world.render_camera(sim.aviary, s.position, s.yaw, s.rpy[1], s.rpy[0], sim.camera_spec)
    diff = np.abs(frame.astype(int) - ref.astype(int)).max(axis=2)
    assert (diff > 30).mean() < 0.005 and diff.mean() < 1.0
    assert sim.frame_time == pytest.approx(sim.time - 1 / 240)
