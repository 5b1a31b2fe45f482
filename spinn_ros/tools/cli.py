"""The ``spinn`` command: one entry point for every tool of the package.

Subcommands are imported lazily so that ``spinn --help`` and the ROS-free tools
work on a machine without rclpy (a cloud server installed with ``pip install .``).
"""
from __future__ import annotations

import importlib
import sys

#: subcommand -> (module with a ``main(argv)``, one-line help)
COMMANDS: dict[str, tuple[str, str]] = {
    "gen-data": ("spinn_ros.sim.dataset", "render a labelled obstacle dataset from the simulator"),
    "train": ("spinn_ros.training.train", "train the early-exit network (progressive joint training)"),
    "calibrate": ("spinn_ros.training.calibrate", "calibrate exit rate / accuracy versus threshold"),
    "evaluate": ("spinn_ros.training.evaluate", "evaluation report on a test split (table + plot)"),
    "cloud": ("spinn_ros.cloud_service", "run the cloud tail server over Zenoh (no ROS needed)"),
    "profile": ("spinn_ros.tools.profile", "profile head/tail times and wire bytes for the scheduler"),
    "export": ("spinn_ros.tools.export", "export every stage and exit head to ONNX, with a manifest tied to the model id"),
    "fly": ("spinn_ros.tools.fly.cli", "fly one simulated course closed-loop: progress, summary, plot, recording"),
    "demo": ("spinn_ros.tools.demo", "simulated camera frames through the drone node, printing its decisions"),
    "certs": ("spinn_ros.tools.certs", "make the CA, cloud and per-drone certificates of the secured Zenoh link"),
    "launch": ("spinn_ros.tools.launch", "bring up nodes from a launch spec without ros2 launch"),
    "export-world": ("spinn_ros.sim.sdf", "write a seeded course as a Gazebo (gz-sim) SDF world"),
    "smoke": ("spinn_ros.tools.smoke", "one camera frame through a real drone node (the check after an install)"),
}


def usage() -> str:
    width = max(map(len, COMMANDS))
    rows = "\n".join(f"  {name:<{width}}  {text}" for name, (_, text) in COMMANDS.items())
    return f"usage: spinn <command> [options]\n\ncommands:\n{rows}\n\n'spinn <command> --help' for options."


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(usage())
        return 0
    name, rest = argv[0], argv[1:]
    if name not in COMMANDS:
        print(f"spinn: unknown command {name!r}\n\n{usage()}", file=sys.stderr)
        return 2
    module = importlib.import_module(COMMANDS[name][0])
    return int(module.main(rest) or 0)


if __name__ == "__main__":
    sys.exit(main())
