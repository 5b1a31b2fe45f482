"""The Gazebo world of a seeded course (``spinn export-world``) and its ROS bridge.

Gazebo cannot run here, so what can be checked is: the SDF parses; pybullet, which reads
SDF, loads from it the same obstacles the PyFlyt simulator builds for that course; the
camera has the simulator's intrinsics and mount; and every topic the bridge config names
exists, with that type, in the world (gz side) and in the drone node (ROS side).
"""
from __future__ import annotations

import importlib
import math
import subprocess
import sys
import time
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import pytest
import yaml

from spinn_ros.core.resources import config_file
from spinn_ros.sim import sdf, world
from spinn_ros.tools import launch_spec

SEEDS_AND_KINDS = [(1, "forest"), (2, "boxes"), (3, "walls"), (4, "mixed")]


@pytest.fixture(scope="module")
def worlds(tmp_path_factory):
    """Each course written by the command a user runs."""
    out = {}
    for seed, kind in SEEDS_AND_KINDS:
        path = tmp_path_factory.mktemp("gz") / f"{kind}_{seed}.sdf"
        subprocess.run([sys.executable, "-m", "spinn_ros.tools.cli", "export-world", "--seed", str(seed), "--kind", kind,
                        "--out", str(path)], check=True, capture_output=True)
        out[seed, kind] = path
    return out


def placement(client, body: int) -> tuple:
    """(position, yaw, axis-aligned bounding box) of a body, as pybullet holds it."""
    pos, orn = client.getBasePositionAndOrientation(body)
    return np.array(pos), client.getEulerFromQuaternion(orn)[2], np.array(client.getAABB(body))


#: pybullet's SDF reader turns a cylinder into a convex mesh: its bounding box is a few mm off
CYLINDER_AS_MESH_TOL = 5e-3


@pytest.mark.parametrize("seed, kind", SEEDS_AND_KINDS)
def test_pybullet_loads_the_simulators_obstacles_from_the_sdf(worlds, seed, kind):
    course = world.generate_course(seed, kind)
    reference, ref_ids = world.new_world(course)
    import pybullet as p
    from pybullet_utils import bullet_client

    client = bullet_client.BulletClient(p.DIRECT)
    loaded = {client.getBodyInfo(b)[1].decode(): b for b in client.loadSDF(str(worlds[seed, kind]))}
    obstacles = sorted(name for name in loaded if name.startswith("obstacle_"))
    assert len(obstacles) == len(course.obstacles) > 0
    geometry = {m.get("name"): m.find("link/collision/geometry")[0].tag
                for m in ET.parse(worlds[seed, kind]).getroot().iter("model")}
    for name, ref_id, o in zip(obstacles, ref_ids, course.obstacles):
        assert geometry[name] == {"pillar": "cylinder", "box": "box"}[o.kind], name
        pos, yaw, box = placement(client, loaded[name])
        ref_pos, ref_yaw, ref_box = placement(reference, ref_id)
        np.testing.assert_allclose(pos, ref_pos, atol=1e-4, err_msg=name)
        tol = CYLINDER_AS_MESH_TOL if o.kind == "pillar" else 1e-4
        np.testing.assert_allclose(box, ref_box, atol=tol, err_msg=f"{name}: size")
        assert math.isclose(math.cos(yaw - ref_yaw), 1.0, abs_tol=1e-6), f"{name}: yaw {yaw} vs {ref_yaw}"
    assert "X3" in loaded and "ground_plane" in loaded
    np.testing.assert_allclose(client.getBasePositionAndOrientation(loaded["X3"])[0], course.start, atol=1e-6)


def test_camera_has_the_simulators_intrinsics_and_mount(worlds):
    root = ET.parse(worlds[1, "forest"]).getroot()
    sensor = root.find(".//model[@name='X3']/link[@name='base_link']/sensor[@type='camera']")
    cam = world.DRONE_CAMERA
    h, w = cam.resolution
    assert (int(sensor.find("camera/image/width").text), int(sensor.find("camera/image/height").text)) == (w, h)
    hfov = float(sensor.find("camera/horizontal_fov").text)
    # the simulator node's CameraInfo: f = (h/2) / tan(vfov/2), square pixels; gz's f = (w/2) / tan(hfov/2)
    assert (w / 2) / math.tan(hfov / 2) == pytest.approx((h / 2) / math.tan(math.radians(cam.fov_deg) / 2), rel=1e-5)
    x, y, z, roll, pitch, yaw = map(float, sensor.find("pose").text.split())
    assert (x, y, z) == pytest.approx(cam.link_offset) and (roll, yaw) == (0.0, 0.0)
    assert pitch == pytest.approx(math.radians(cam.angle_deg), rel=1e-5), "looks angle_deg below the nose"
    assert float(sensor.find("camera/clip/near").text) == cam.near
    assert sensor.find("topic").text == sdf.CAMERA_TOPIC


def test_non_square_cameras_keep_the_vertical_fov():
    cam = world.CameraSpec(resolution=(120, 160))
    text = sdf.course_sdf(world.generate_course(0, "forest"), camera=cam)
    hfov = float(ET.fromstring(text).find(".//sensor/camera/horizontal_fov").text)
    vfov = 2 * math.atan(math.tan(hfov / 2) * 120 / 160)
    assert math.degrees(vfov) == pytest.approx(cam.fov_deg, rel=1e-5)


def gz_topics(path: Path) -> dict[str, str]:
    """The gz topics the world publishes or subscribes: name -> gz message type."""
    root = ET.parse(path).getroot()
    model = root.find(".//model[@name='X3']")
    ns = model.find("plugin[@name='gz::sim::systems::MulticopterVelocityControl']/robotNamespace").text
    sub = model.find("plugin[@name='gz::sim::systems::MulticopterVelocityControl']/commandSubTopic").text
    assert model.find("plugin[@name='gz::sim::systems::OdometryPublisher']") is not None
    camera = model.find(".//sensor[@type='camera']/topic").text
    assert root.find("world/plugin[@name='gz::sim::systems::Sensors']") is not None, "cameras need the Sensors system"
    return {"/clock": "gz.msgs.Clock",            # gz-sim publishes the world clock there
            f"/{camera}": "gz.msgs.Image", f"/{camera}_info": "gz.msgs.CameraInfo",
            f"/model/{model.get('name')}/odometry": "gz.msgs.Odometry", f"/{ns}/{sub}": "gz.msgs.Twist"}


def ros_type(name: str):
    package, _, message = name.split("/")
    return getattr(importlib.import_module(f"{package}.msg"), message)


def test_bridge_topics_exist_in_the_world_and_in_the_drone_node(ros, worlds):
    bridge = yaml.safe_load(config_file("gz_bridge.yaml").read_text())
    gz = gz_topics(worlds[2, "boxes"])
    for entry in bridge:
        assert gz.get(entry["gz_topic_name"]) == entry["gz_type_name"], entry
        ros_type(entry["ros_type_name"])                          # the ROS type exists

    # the drone node of the Gazebo flight, as gz_flight.launch.py starts it (no cloud needed here)
    drone = next(s for s in launch_spec.gz_flight_system(mode="device-only") if s.executable == "drone_node")
    proc = ros.start(drone)
    wanted = {e["ros_topic_name"]: e for e in bridge if e["ros_topic_name"] not in ("/clock", "/camera_info")}

    def graph() -> dict[str, tuple[str, str]]:
        """topic -> (type, 'sub'|'pub') for the drone node's endpoints on the bridged topics"""
        found = {}
        for topic in wanted:
            for side, infos in (("sub", ros.node.get_subscriptions_info_by_topic(topic)),
                                ("pub", ros.node.get_publishers_info_by_topic(topic))):
                for info in infos:
                    if info.node_name == drone.name:
                        found[topic] = (info.topic_type, side)
        return found

    deadline = time.monotonic() + 120
    while len(graph()) < len(wanted) and time.monotonic() < deadline:
        time.sleep(0.2)
    seen = graph()
    for topic, entry in wanted.items():
        side = "sub" if entry["direction"] == "GZ_TO_ROS" else "pub"
        assert seen.get(topic) == (entry["ros_type_name"], side), f"{topic}: bridge {entry}, drone node {seen.get(topic)}"
    # the node's endpoints exist before it has finished starting: let it finish before it is stopped
    deadline = time.monotonic() + 120
    while "model " not in proc.output and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.1)
    # the simulation clock: every gz_flight node follows /clock
    assert all(s.params.get("use_sim_time") for s in launch_spec.gz_flight_system() if s.executable != "cloud_node")
