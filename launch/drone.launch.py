"""ros2 launch spinn_ros drone.launch.py [namespace:=drone1] [camera_topic:=/camera/image_raw]
[params_file:=...] [use_sim_time:=true]

The nodes, params files and remappings come from spinn_ros.tools.launch_spec, which
`spinn launch drone ...` uses too on machines without ros2 launch.
"""
from spinn_ros.tools.launch_spec import launch_description


def generate_launch_description():
    return launch_description("drone")
