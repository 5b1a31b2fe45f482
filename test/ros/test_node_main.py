"""The nodes' shared main loop (spinn_ros/ros/node_main.py), run in a process of its own."""
from __future__ import annotations

import shutil
import signal
import subprocess
import sys
import textwrap
import time

from spinn_ros.ros.node_main import SPIN_WAKE_S, STUCK_SHUTDOWN_S
from spinn_ros.tools.waiting import wait_until

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


# a node with nothing left to wake its executor (no timer, no subscription), and rclpy's signal
# handling out of the way, as when rclpy's signal thread wakes the executor before it shuts the
# context down (a race: trigger, then shutdown): only the node's own stop flag can end the spin
IDLE_NODE = textwrap.dedent("""
    import sys
    from rclpy.node import Node
    from rclpy.signals import uninstall_signal_handlers
    from spinn_ros.ros.node_main import run_node

    class Idle(Node):
        def __init__(self):
            super().__init__("idle")
            self.timer = self.create_timer(0.05, self.once)

        def once(self):
            self.destroy_timer(self.timer)
            uninstall_signal_handlers()      # SIGINT now reaches only the node's own handler
            print("idle", flush=True)

    sys.exit(run_node(Idle))
""")


def test_a_stop_signal_ends_the_spin_even_if_rclpy_never_shuts_the_context_down():
    proc = subprocess.Popen([sys.executable, "-c", IDLE_NODE], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    try:
        assert proc.stdout.readline().strip() == "idle"
        time.sleep(4 * SPIN_WAKE_S)          # well into an idle wait
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=STUCK_SHUTDOWN_S + 10)
    finally:
        proc.kill()
    assert proc.returncode == 0, err
    assert "most recent call first" not in err, f"the node hung after SIGINT:\n{err}"


def test_a_process_that_outlives_its_sigint_grace_has_its_native_stacks_noted_before_the_kill():
    """The launcher (and the test harness) stop a node with SIGINT, then SIGTERM, then SIGKILL; before
    escalating, the node's native stacks (gdb) join its output: a hang inside DDS's C++ teardown
    shows no Python frame where it is stuck."""
    from spinn_ros.tools.launch import NATIVE_STACKS, ChildProcess

    child = ChildProcess("deaf", [sys.executable, "-c", "import signal, time; signal.signal(signal.SIGINT, "
                                  "signal.SIG_IGN); print('ready', flush=True); time.sleep(600)"])
    try:
        wait_until(lambda: "ready" in child.lines, 30, "the child to start")
        code = child.stop(grace_s=0.5)
    finally:
        child.kill()
    assert code == -signal.SIGTERM, child.output
    notes = child.output.split(NATIVE_STACKS, 1)
    assert len(notes) == 2, child.output
    if shutil.which("gdb"):
        assert "Thread" in notes[1] and "#0" in notes[1], notes[1][-2000:]
