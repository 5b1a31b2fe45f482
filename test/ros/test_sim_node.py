"""sim_node as a separate process over DDS: gz topics in sim time, commands flown, parameters checked."""
from __future__ import annotations

import dataclasses
import json
import time

import pytest
from diagnostic_msgs.msg import DiagnosticArray
from geometry_msgs.msg import TwistStamped
from nav_msgs.msg import Odometry
from rosgraph_msgs.msg import Clock
from sensor_msgs.msg import CameraInfo, Image
from std_msgs.msg import String

from spinn_ros.ros import qos
from spinn_ros.testing.courses import WALL_SEED
from spinn_ros.tools import launch_spec
from spinn_ros.tools.waiting import wait_until

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
