"""ros2 launch spinn_ros cloud.launch.py [params_file:=...]

The cloud node (tails over Zenoh). Nodes and params come from spinn_ros.tools.launch_spec,
which `spinn launch cloud ...` uses too on machines without ros2 launch.
"""
from spinn_ros.tools.launch_spec import launch_description


def generate_launch_description():
    return launch_description("cloud")
