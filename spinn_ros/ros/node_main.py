"""The one main loop every node uses: init, build, spin, clean shutdown.

A node whose parameters are invalid logs one fatal line naming the parameter and
exits with status 2 (fail fast); SIGINT and SIGTERM end the spin and the node is
destroyed before rclpy shuts down, so DDS resources are released cleanly.
"""
from __future__ import annotations

import faulthandler
import signal
import sys
import threading
from typing import Callable

import rclpy
from rclpy.executors import ExternalShutdownException, MultiThreadedExecutor, SingleThreadedExecutor
from rclpy.signals import SignalHandlerOptions, install_signal_handlers

from .params import ParameterError

EXIT_BAD_PARAMETERS = 2
#: a node still shutting down this long after SIGINT/SIGTERM prints every thread's stack to
#: stderr (the node's log), so a shutdown that hangs until the launcher's SIGKILL says where;
#: the timer stays armed up to the process's end, interpreter finalisation included
STUCK_SHUTDOWN_S = 5.0
#: the executor's longest wait: how late a stop signal may be noticed at worst
SPIN_WAKE_S = 0.25


def run_node(factory: Callable[[], "rclpy.node.Node"], args: list[str] | None = None, threads: int = 1) -> int:
    # Signals while the node is being built only raise a flag: the node then stops cleanly once
    # built (its threads joined) instead of dying half-built with its threads still running.
    # rclpy's handlers come after; they shut the context down and wake the executor, then
    # chain to ours, so no KeyboardInterrupt lands at a random point of the clean-up either.
    interrupted = threading.Event()

    def on_signal(*_) -> None:
        interrupted.set()
        faulthandler.dump_traceback_later(STUCK_SHUTDOWN_S)

    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, on_signal)
    rclpy.init(args=sys.argv if args is None else args, signal_handler_options=SignalHandlerOptions.NO)
    node = None
    try:
        try:
            node = factory()
        except ParameterError as exc:
            rclpy.logging.get_logger("spinn_ros").fatal(str(exc))
            return EXIT_BAD_PARAMETERS
        install_signal_handlers(SignalHandlerOptions.ALL)
        if interrupted.is_set():
            return 0            # stopped while starting
        # one executor thread by default: callbacks here are short (heavy work has its own
        # thread), and every extra executor thread competes for the GIL
        executor = SingleThreadedExecutor() if threads == 1 else MultiThreadedExecutor(num_threads=threads)
        executor.add_node(node)
        try:
            # not executor.spin(): rclpy's signal thread wakes the executor *before* it shuts the
            # context down, so an executor that re-checks the context too early waits again, for
            # ever if no timer or message wakes it (a CI drone node hung so, gdb: rcl_wait with no
            # timeout). Our own flag, set by the signal, ends the loop at the next wake-up instead.
            while not interrupted.is_set() and node.context.ok():
                executor.spin_once(timeout_sec=SPIN_WAKE_S)
        except (KeyboardInterrupt, ExternalShutdownException):
            pass
        except RuntimeError:
            if node.context.ok():
                raise           # a real failure; otherwise a message torn by the shutdown (SIGINT mid-take)
        finally:
            executor.shutdown()
        return 0
    finally:
        # a second Ctrl-C must not cut the clean-up short: threads joined, Zenoh closed and DDS
        # entities destroyed, or files stay behind
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        if node is not None:
            close = getattr(node, "close", None)
            if close:
                close()
            node.destroy_node()
        rclpy.try_shutdown()
