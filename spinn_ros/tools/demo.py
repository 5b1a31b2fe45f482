"""``spinn demo``: camera frames from a simulated course through the real drone node.

Renders the onboard camera along a straight line from a course's start toward its
goal (no physics: the closed-loop flight is ``spinn fly``), publishes each frame as a
sensor_msgs/Image to a drone node started from the same launch spec as
``ros2 launch spinn_ros drone.launch.py``, and prints what the node decided for
each frame: exit, confidence, collision probability, steering and command.
"""
from __future__ import annotations

import argparse
import sys
import time

import numpy as np


def course_frames(seed: int, count: int, size: int):
    """(x position, RGB frame, ground-truth label) along the course's centre line."""
    from ..sim import world

    course = world.generate_course(seed)
    client, _ = world.new_world(course)
    cam = world.CameraSpec(resolution=(size, size))
    try:
        for x in np.linspace(course.start[0], course.goal[0], count):
            pos = (float(x), 0.0, course.start[2])
            frame = world.render_camera(client, pos, yaw=0.0, camera=cam)
            yield float(x), frame, world.ground_truth(client, pos, yaw=0.0, camera=cam)
    finally:
        client.disconnect()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="spinn demo", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seed", type=int, default=3, help="course seed")
    ap.add_argument("--frames", type=int, default=40)
    ap.add_argument("--rate", type=float, default=10.0, help="camera frames per second")
    ap.add_argument("--checkpoint", default="default", help="model reference for the drone node")
    ap.add_argument("--threshold", type=float, default=None, help="override the exit threshold")
    opts = ap.parse_args(argv)

    from geometry_msgs.msg import TwistStamped
    from sensor_msgs.msg import Image

    from spinn_ros.msg import InferenceResult

    from ..ros import qos
    from ..ros.images import fill_image
    from . import launch_spec
    from .harness import RosHarness, domain_id_for_run
    from .waiting import wait_until

    overrides = {"checkpoint": opts.checkpoint, "cloud.enabled": False}     # the drone alone: no cloud to reach
    if opts.threshold is not None:
        overrides["exit_threshold"] = opts.threshold
    spec = launch_spec.drone(camera_topic="/camera/image_raw", overrides=overrides)[0]
    print(f"starting the drone node: {' '.join(spec.command())}", flush=True)
    ros = RosHarness(domain_id_for_run())
    results: dict[int, InferenceResult] = {}
    cmds: dict[int, TwistStamped] = {}
    try:
        node = ros.start(spec)
        ros.node.create_subscription(InferenceResult, "/spinn/result",
                                     lambda m: results.__setitem__(m.header.stamp.nanosec, m), qos.RESULTS)
        ros.node.create_subscription(TwistStamped, "/cmd_vel",
                                     lambda m: cmds.__setitem__(m.header.stamp.nanosec, m), qos.RESULTS)
        pub = ros.node.create_publisher(Image, "/camera/image_raw", qos.SENSOR)
        ros.wait_matched(pub, timeout=60)
        print(f"{'frame':>5} {'x(m)':>5} {'truth':>9} {'exit':>4} {'conf':>5} {'p(coll)':>7} {'steer':>6} "
              f"{'v(m/s)':>6} {'yaw(r/s)':>8} {'ms':>5}", flush=True)
        for i, (x, frame, label) in enumerate(course_frames(opts.seed, opts.frames, 128)):
            msg = Image()
            msg.header.frame_id = "camera"
            msg.header.stamp.sec, msg.header.stamp.nanosec = 1, i
            fill_image(msg, frame, "rgb8")
            pub.publish(msg)
            try:
                wait_until(lambda i=i: i in results and i in cmds, 10, f"the result of frame {i}")
            except TimeoutError:
                print(f"{i:>5} {x:5.1f}  no result (node output follows)\n{node.output}", flush=True)
                return 1
            r, c = results[i], cmds[i]
            truth = f"{'COLL' if label.collision else 'free'} {label.steering:+.1f}"
            print(f"{i:>5} {x:5.1f} {truth:>9} {r.exit_index:>4} {r.confidence:5.2f} {r.collision_probability:7.2f} "
                  f"{r.steering:+6.2f} {c.twist.linear.x:6.2f} {c.twist.angular.z:+8.2f} {r.device_compute_ms:5.1f}",
                  flush=True)
            time.sleep(1.0 / opts.rate)
        hist = np.bincount([r.exit_index for r in results.values()], minlength=max(1, results[0].num_exits))
        print(f"{len(results)} frames; answers per exit: {hist.tolist()}; "
              f"median device compute {np.median([r.device_compute_ms for r in results.values()]):.1f} ms", flush=True)
        return 0
    finally:
        ros.close()


if __name__ == "__main__":
    sys.exit(main())
