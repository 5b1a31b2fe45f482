"""``spinn smoke``: one camera frame through a real drone node, the check after an install.

Starts the drone node from the same launch spec as ``ros2 launch spinn_ros
drone.launch.py`` (no monitor, no cloud), publishes camera-like frames until one is
answered on ``spinn/result``, prints that answer and stops the node. Exit status 0 when
a result came back and the node shut down cleanly; 1 otherwise, with the node's output.

    spinn smoke [--backend onnxruntime] [--checkpoint default] [--timeout 120]
"""
from __future__ import annotations

import argparse
import sys
import time

CAMERA = "/spinn_smoke/camera"


def main(argv: list[str] | None = None) -> int:
    from ..core.backend import BACKENDS

    ap = argparse.ArgumentParser(prog="spinn smoke", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--backend", default="torch", choices=BACKENDS, help="the drone node's backend")
    ap.add_argument("--checkpoint", default="default", help="model reference for the drone node")
    ap.add_argument("--timeout", type=float, default=120.0, help="seconds to wait for the answer (the first "
                    "onnxruntime start exports the model; TensorRT builds its engines)")
    args = ap.parse_args(argv)

    from sensor_msgs.msg import Image

    from spinn_ros.msg import InferenceResult

    from ..ros import qos
    from ..ros.images import fill_image
    from ..sim.procedural import procedural_frames
    from . import launch_spec
    from .harness import RosHarness, domain_id_for_run

    ros = RosHarness(domain_id_for_run())
    results: list = []
    proc = ros.start(launch_spec.drone(camera_topic=CAMERA, with_monitor=False, backend=args.backend,
                                       overrides={"checkpoint": args.checkpoint, "cloud.enabled": False})[0])
    ok = False
    try:
        ros.node.create_subscription(InferenceResult, "/spinn/result", results.append, qos.RESULTS)
        pub = ros.node.create_publisher(Image, CAMERA, qos.SENSOR)
        msg = Image()
        fill_image(msg, procedural_frames(1, 128)[0], "rgb8")
        msg.header.frame_id = "camera"
        deadline = time.monotonic() + args.timeout
        while not results and time.monotonic() < deadline and proc.poll() is None:
            msg.header.stamp = ros.node.get_clock().now().to_msg()
            pub.publish(msg)          # again until answered: the first may go before discovery completes
            time.sleep(0.25)
        if results:
            r = results[0]
            print(f"spinn smoke: drone node ({args.backend}) answered: exit {r.exit_index}/{r.num_exits}, "
                  f"collision {r.collision_probability:.3f}, steering {r.steering:+.3f}, "
                  f"head {r.device_compute_ms:.2f} ms", flush=True)
            ok = True
    finally:
        codes = ros.close()
    if not ok or any(codes.values()):
        why = "no result" if not ok else f"unclean shutdown {codes}"
        print(f"spinn smoke: FAILED ({why}); the node said:\n" + "\n".join(proc.lines[-25:]), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
