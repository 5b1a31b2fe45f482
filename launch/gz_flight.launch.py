"""ros2 launch spinn_ros gz_flight.launch.py [course_seed:=0] [course_kind:=forest] [mode:=spinn] ...

The closed-loop flight in Gazebo (gz-sim) instead of the PyFlyt simulator: the seeded course
written as an SDF world (the same obstacles; `spinn export-world` writes the same file),
`gz sim` on it, ros_gz_bridge with config/gz_bridge.yaml, and the drone, cloud and monitor
nodes of spinn_ros.tools.launch_spec.gz_flight. Needs gz-sim and ros_gz_bridge (Harmonic with
Jazzy, Fortress/Garden with Humble: docs/simulation.md).
"""
from spinn_ros.tools.launch_spec import gz_world_actions, launch_description


def generate_launch_description():
    return launch_description("gz_flight", extra_actions=gz_world_actions)
