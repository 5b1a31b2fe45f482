"""launch_testing integration test of the installed drone launch file (drone node + monitor).

Run by test/ros/test_ros_install.py in a sourced colcon install space, as a ROS user would:
    launch_test test/launch_testing/drone_launch.py
(The file name keeps pytest from collecting it: launch_testing's pytest plugin predates pytest 9.)
"""
import os
import time
import unittest

import launch_testing
import launch_testing.actions
import launch_testing.asserts
import numpy as np
import rclpy
from ament_index_python.packages import get_package_share_directory
from geometry_msgs.msg import TwistStamped
from launch.actions import IncludeLaunchDescription
from launch.launch_description_sources import PythonLaunchDescriptionSource
from sensor_msgs.msg import Image

import launch
from spinn_ros.msg import InferenceResult, SplitPlan
from spinn_ros.ros import qos
from spinn_ros.ros.images import fill_image

NAMESPACE = "launch_test_drone"
CAMERA = "/launch_test/camera"
START_S = 180.0      # torch import, model and discovery on a loaded 2-core machine


def generate_test_description():
    drone = IncludeLaunchDescription(
        PythonLaunchDescriptionSource(os.path.join(get_package_share_directory("spinn_ros"), "launch",
                                                   "drone.launch.py")),
        launch_arguments={"namespace": NAMESPACE, "camera_topic": CAMERA}.items())
    return launch.LaunchDescription([drone, launch_testing.actions.ReadyToTest()]), {}


def camera_frame(stamp_s: int) -> Image:
    """A sky/ground frame with one dark box ahead."""
    pixels = np.zeros((128, 128, 3), np.uint8)
    pixels[:64] = (150, 190, 230)
    pixels[64:] = (90, 80, 60)
    pixels[40:110, 50:80] = (40, 40, 40)
    msg = Image()
    msg.header.stamp.sec = stamp_s
    fill_image(msg, pixels, "rgb8")
    return msg


class TestDroneLaunch(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        rclpy.init()
        cls.node = rclpy.create_node("drone_launch_probe")

    @classmethod
    def tearDownClass(cls):
        cls.node.destroy_node()
        rclpy.shutdown()

    def spin_until(self, done, timeout, what, each=None):
        deadline = time.monotonic() + timeout
        while not done():
            self.assertLess(time.monotonic(), deadline, f"timed out waiting for {what}")
            if each:
                each()
            rclpy.spin_once(self.node, timeout_sec=0.1)

    def test_camera_frames_get_results_and_commands(self):
        results, commands, plans = [], [], []
        self.node.create_subscription(InferenceResult, f"/{NAMESPACE}/spinn/result", results.append, qos.RESULTS)
        self.node.create_subscription(TwistStamped, f"/{NAMESPACE}/cmd_vel", commands.append, qos.RESULTS)
        self.node.create_subscription(SplitPlan, f"/{NAMESPACE}/spinn/plan", plans.append, qos.LATCHED)
        camera = self.node.create_publisher(Image, CAMERA, qos.SENSOR)
        self.spin_until(lambda: camera.get_subscription_count() > 0, START_S, "the drone node's camera subscription")
        sent = iter(range(10, 10_000))
        self.spin_until(lambda: bool(results), START_S, "a first result", each=lambda: camera.publish(camera_frame(next(sent))))
        for stamp in range(20_000, 20_010):
            camera.publish(camera_frame(stamp))
            deadline = time.monotonic() + 0.1
            while time.monotonic() < deadline:
                rclpy.spin_once(self.node, timeout_sec=0.02)
        answered = lambda: {r.header.stamp.sec for r in results if r.header.stamp.sec >= 20_000}  # noqa: E731
        self.spin_until(lambda: len(answered()) >= 9, 60, "results for the frames")
        self.spin_until(lambda: answered() <= {c.header.stamp.sec for c in commands}, 10, "a command per answer")
        self.spin_until(lambda: bool(plans), 30, "a plan from the monitor")
        for r in results:
            self.assertGreaterEqual(r.collision_probability, 0.0)
            self.assertLessEqual(r.collision_probability, 1.0)


@launch_testing.post_shutdown_test()
class TestShutdown(unittest.TestCase):
    def test_nodes_exit_cleanly(self, proc_info):
        launch_testing.asserts.assertExitCodes(proc_info)
