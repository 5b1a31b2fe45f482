"""The nodes' shared main loop (spinn_ros/ros/node_main.py), run in a process of its own."""
from __future__ import annotations

import signal
import subprocess
import sys
import textwrap
import time

from spinn_ros.ros.node_main import STUCK_SHUTDOWN_S

# a node whose clean-up takes longer than STUCK_SHUTDOWN_S, as a hung Zenoh or DDS teardown would
SLOW_CLOSE_NODE = textwrap.dedent(f"""
    import sys, time
    from rclpy.node import Node
    from spinn_ros.ros.node_main import run_node

    class SlowClose(Node):
        def __init__(self):
            super().__init__("slow_close")
            self.create_timer(0.05, lambda: print("spinning", flush=True))

        def close(self):
            time.sleep({STUCK_SHUTDOWN_S + 2.0})

    sys.exit(run_node(SlowClose))
""")


def test_a_shutdown_stuck_in_clean_up_prints_where():
    """A node still shutting down STUCK_SHUTDOWN_S after SIGINT dumps every thread's stack, so a
    launcher's SIGKILL of a hung node leaves the place it hung in the node's log; it still ends 0."""
    proc = subprocess.Popen([sys.executable, "-c", SLOW_CLOSE_NODE], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "spinning"
        sent = time.monotonic()
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert proc.returncode == 0, err
    assert time.monotonic() - sent >= STUCK_SHUTDOWN_S
    assert "most recent call first" in err, err
    assert "in close" in err and "in run_node" in err, err
