"""The flight simulator: FlightSim (PyFlyt) in process, then sim_node as a separate process over DDS."""
from __future__ import annotations

import dataclasses
import json
import math
import time

import numpy as np
import pytest
from diagnostic_msgs.msg import DiagnosticArray
from geometry_msgs.msg import TwistStamped
from nav_msgs.msg import Odometry
from rosgraph_msgs.msg import Clock
from sensor_msgs.msg import CameraInfo, Image
from std_msgs.msg import String

from spinn_ros import launch_spec
from spinn_ros.ros import qos
from spinn_ros.ros.harness import wait_until
from spinn_ros.sim import world
from spinn_ros.sim.flight import FlightConfig, FlightSim

DRONE_RADIUS = 0.15        # cf2x arms + propellers, with a little slack


def first_obstacle_ahead(course: world.Course, length: float = 20.0) -> tuple[int | None, float]:
    """(index, x) of the first obstacle the straight line y=0 at flight altitude runs into."""
    z = course.start[2]
    for x in np.arange(0.0, length, 0.05):
        for i, o in enumerate(course.obstacles):
            if o.distance((x, 0.0, z)) < DRONE_RADIUS:
                return i, float(x)
    return None, math.inf


def seed_where(kind: str, predicate) -> int:
    """The first seed whose course satisfies ``predicate`` (keeps tests valid if world.py changes)."""
    return next(s for s in range(200) if predicate(world.generate_course(s, kind)))


def wall_ahead(course) -> bool:
    index, _ = first_obstacle_ahead(course)
    return index is not None and index < 2 * course.walls


def clear_ahead(course, distance: float = 6.0) -> bool:
    return first_obstacle_ahead(course)[1] > distance


WALL_SEED = seed_where("walls", wall_ahead)
CLEAR_SEED = seed_where("forest", clear_ahead)


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


# ---------------------------------------------------------------------------------
# sim_node over DDS
# ---------------------------------------------------------------------------------


class Collector:
    def __init__(self, node, msg_type, topic, qos_profile):
        self.msgs = []
        self.sub = node.create_subscription(msg_type, topic, self.msgs.append, qos_profile)


def ns(t) -> int:
    return t.sec * 1_000_000_000 + t.nanosec


def test_sim_node_publishes_gz_topics_in_sim_time_and_flies_commands(ros):
    ros.start(launch_spec.sim(course_seed=WALL_SEED, course_kind="walls", real_time_factor=0.0,
                              overrides={"max_duration_s": 0.0})[0])
    # the drone node on sim time, to check its clock follows /clock (renamed: its diagnostics are told
    # apart from any other drone node's on a shared machine)
    drone = launch_spec.drone(camera_topic="/camera", use_sim_time=True,
                              overrides={"checkpoint": "random:small:0", "diagnostics_period_s": 0.2})[0]
    ros.start(dataclasses.replace(drone, name="sim_test_drone"))
    n = ros.node
    images = Collector(n, Image, "/camera", qos.SENSOR)
    infos = Collector(n, CameraInfo, "/camera_info", qos.SENSOR)
    odom = Collector(n, Odometry, "/model/X3/odometry", qos.RESULTS)
    clock = Collector(n, Clock, "/clock", qos.RESULTS)
    events = Collector(n, String, "/sim/events", qos.RESULTS)
    course = Collector(n, String, "/sim/course", qos.LATCHED)
    diags = Collector(n, DiagnosticArray, "/diagnostics", qos.RESULTS)
    cmd = n.create_publisher(TwistStamped, "/X3/gazebo/command/twist", qos.RESULTS)
    ros.wait_matched(cmd, timeout=40)
    wait_until(lambda: len(images.msgs) >= 10 and len(infos.msgs) >= 10 and odom.msgs and course.msgs, 20,
               "camera, camera_info, odometry and the course")

    described = json.loads(course.msgs[0].data)
    assert described["seed"] == WALL_SEED and described["kind"] == "walls" and described["obstacles"]
    img = images.msgs[-1]
    assert (img.width, img.height, img.encoding, img.step) == (128, 128, "rgb8", 384)
    stamps = [ns(m.header.stamp) for m in images.msgs]
    assert stamps == sorted(set(stamps)), "image stamps strictly increase"
    period = 1e9 / 15
    assert all(abs((b - a) / period - round((b - a) / period)) < 1e-3 for a, b in zip(stamps, stamps[1:])), \
        "frames every 1/15 s of sim time"
    info_by_stamp = {ns(m.header.stamp): m for m in infos.msgs}
    matched = [info_by_stamp[s] for s in stamps if s in info_by_stamp]
    assert matched and matched[0].k[0] == pytest.approx(64.0) and matched[0].header.frame_id == img.header.frame_id
    # image and clock travel on different topics: wait for the clock to pass the last image
    wait_until(lambda: ns(clock.msgs[-1].clock) >= stamps[-1], 5, "/clock past the last image stamp")
    clocks = [ns(m.clock) for m in list(clock.msgs)]
    assert clocks == sorted(clocks) and clocks[-1] < 1e6 * 1e9, "monotonic sim time, not wall time"

    def drone_stamps():
        return [ns(a.header.stamp) for a in list(diags.msgs) if any("sim_test_drone" in s.name for s in a.status)]

    # the sim hovers (no command yet) while the drone node starts; the drone's timers run on /clock
    wait_until(lambda: any(s > 0 for s in drone_stamps()), 40, "drone node diagnostics stamped in sim time")
    latest_clock = ns(clock.msgs[-1].clock)
    assert all(0 < s <= latest_clock + 1e9 for s in drone_stamps() if s > 0), "drone node clock follows /clock"

    start_x = odom.msgs[-1].pose.pose.position.x
    end = time.monotonic() + 30
    while time.monotonic() < end and not events.msgs:
        msg = TwistStamped()
        msg.twist.linear.x = 2.0
        cmd.publish(msg)
        time.sleep(0.05)
    wait_until(lambda: len(events.msgs) >= 2, 5, "collision and episode_end events")
    got = [json.loads(m.data) for m in events.msgs]
    assert [e["event"] for e in got] == ["collision", "episode_end"], got
    assert got[0]["with"] == "obstacle" and got[1]["reason"] == "collision"
    odom_x = [m.pose.pose.position.x for m in odom.msgs]
    assert max(odom_x) - start_x > 2.0, "odometry shows the commanded flight"
    assert odom.msgs[-1].header.frame_id == "X3/odom" and max(m.twist.twist.linear.x for m in odom.msgs) > 1.0


@pytest.mark.parametrize("overrides, needle", [
    ({"camera.rate_hz": 7}, "parameter 'camera.rate_hz'=7 is invalid: must be one of 0, 1, 2"),
    ({"course.kind": "lava"}, "parameter 'course.kind'='lava' is invalid"),
])
def test_invalid_parameters_fail_fast(ros, overrides, needle):
    code, output = ros.run_to_exit(launch_spec.sim(overrides=overrides)[0], timeout=60)
    assert code == 2, output
    assert needle in output, output
