"""ros2 launch spinn_ros flight.launch.py [course_seed:=7] [course_kind:=walls] [mode:=spinn]
[checkpoint:=default] [cloud_endpoint:=tls/127.0.0.1:7447] [sla:=...]

One drone flying a simulated course: the simulator, the drone node on its camera and
command topics (sim time), the cloud node and, when the package has one, the monitor.
The nodes, params files and arguments come from spinn_ros.tools.launch_spec, which
`spinn launch flight ...` uses too on machines without ros2 launch; `spinn fly` flies
one episode with it and reports on it (docs/flight.md).
"""
from spinn_ros.tools.launch_spec import launch_description


def generate_launch_description():
    return launch_description("flight")
