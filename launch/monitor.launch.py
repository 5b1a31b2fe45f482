"""ros2 launch spinn_ros monitor.launch.py [namespace:=drone1] [params_file:=...]

The monitor alone (drone.launch.py starts one beside the drone node already). Nodes
and params come from spinn_ros.tools.launch_spec, as for `spinn launch monitor`.
"""
from spinn_ros.tools.launch_spec import launch_description


def generate_launch_description():
    return launch_description("monitor")
