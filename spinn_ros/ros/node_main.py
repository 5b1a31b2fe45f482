"""The one main loop every node uses: init, build, spin, clean shutdown.

A node whose parameters are invalid logs one fatal line naming the parameter and
exits with status 2 (fail fast); SIGINT and SIGTERM end the spin and the node is
destroyed before rclpy shuts down, so DDS resources are released cleanly.
"""
from __future__ import annotations

import signal
import sys
from typing import Callable

import rclpy
from rclpy.executors import ExternalShutdownException, MultiThreadedExecutor, SingleThreadedExecutor
from rclpy.signals import SignalHandlerOptions

from .params import ParameterError

EXIT_BAD_PARAMETERS = 2


def run_node(factory: Callable[[], "rclpy.node.Node"], args: list[str] | None = None, threads: int = 1) -> int:
    rclpy.init(args=sys.argv if args is None else args, signal_handler_options=SignalHandlerOptions.ALL)
    node = None
    try:
        try:
            node = factory()
        except ParameterError as exc:
            rclpy.logging.get_logger("spinn_ros").fatal(str(exc))
            return EXIT_BAD_PARAMETERS
        except KeyboardInterrupt:
            # SIGINT while the node was still being built (a launch stopped at once): a clean
            # stop, not a crash; what the half-built node opened goes with the context below
            return 0
        except Exception:
            if rclpy.ok():
                raise           # a real failure
            return 0            # the same SIGINT, seen as a call on the context it just shut down
        # one executor thread by default: callbacks here are short (heavy work has its own
        # thread), and every extra executor thread competes for the GIL
        executor = SingleThreadedExecutor() if threads == 1 else MultiThreadedExecutor(num_threads=threads)
        executor.add_node(node)
        try:
            executor.spin()
        except (KeyboardInterrupt, ExternalShutdownException):
            pass
        except RuntimeError:
            if node.context.ok():
                raise           # a real failure; otherwise a message torn by the shutdown (SIGINT mid-take)
        finally:
            executor.shutdown()
        return 0
    finally:
        # a second Ctrl-C (or the KeyboardInterrupt rclpy's handler chains to) must not cut the
        # clean-up short: threads joined, Zenoh closed and DDS entities destroyed, or files stay behind
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        if node is not None:
            close = getattr(node, "close", None)
            if close:
                close()
            node.destroy_node()
        rclpy.try_shutdown()
