"""ros2 launch spinn_ros sim.launch.py [course_seed:=7] [course_kind:=walls] [real_time_factor:=0]
[namespace:=drone1] [params_file:=...]

The simulator node (PyFlyt quadrotor, obstacle course, onboard camera) with topics
named like a gz-sim X3 behind ros_gz_bridge (docs/simulation.md). The node, params
file and arguments come from spinn_ros.tools.launch_spec, which `spinn launch sim ...`
uses too on machines without ros2 launch.
"""
from spinn_ros.tools.launch_spec import launch_description


def generate_launch_description():
    return launch_description("sim")
