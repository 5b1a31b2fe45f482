"""Which nodes each system runs, with which params files and remappings: said once.

``launch/*.launch.py`` turn these specs into launch_ros ``Node`` actions for
``ros2 launch``; ``spinn launch`` (spinn_ros/tools/launch.py) turns the very same specs
into processes on a machine without ``launch`` (the PyPI wheels have none), and the
tests start their nodes from them too.
"""
from __future__ import annotations

import dataclasses
import inspect
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path

from ..core.calibration import PLAIN_NETWORK
from ..core.resources import config_dir

PACKAGE = "spinn_ros"


@dataclass(frozen=True)
class NodeSpec:
    executable: str                              # bin/<executable>, module spinn_ros.nodes.<executable>
    name: str
    namespace: str = ""
    params_files: tuple[str, ...] = ()
    params: dict = field(default_factory=dict)   # overrides, applied after the files
    remappings: tuple[tuple[str, str], ...] = ()

    @property
    def module(self) -> str:
        return f"{PACKAGE}.nodes.{self.executable}"

    def ros_args(self) -> list[str]:
        args = ["--ros-args", "-r", f"__node:={self.name}"]
        if self.namespace:
            args += ["-r", f"__ns:={_absolute(self.namespace)}"]
        for f in self.params_files:
            args += ["--params-file", f]
        for k, v in self.params.items():
            args += ["-p", f"{k}:={_yaml_scalar(v)}"]
        for src, dst in self.remappings:
            args += ["-r", f"{src}:={dst}"]
        return args

    def command(self, python: str = sys.executable) -> list[str]:
        return [python, "-m", self.module, *self.ros_args()]


def _absolute(ns: str) -> str:
    return ns if ns.startswith("/") else "/" + ns


def _yaml_scalar(v) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, str):
        return f"'{v}'"
    if isinstance(v, float) and v != v:
        return ".nan"
    if isinstance(v, float) and abs(v) == float("inf"):
        return ".inf" if v > 0 else "-.inf"          # YAML's spelling: "inf" would read as a string
    return str(v)


#: the FastDDS variables that select a profiles file: Fast DDS 3 (Kilted on) reads the first and
#: warns about the second, which is what Fast DDS 2 (Humble, Jazzy) reads
DDS_PROFILE_VARIABLES = ("FASTDDS_DEFAULT_PROFILES_FILE", "FASTRTPS_DEFAULT_PROFILES_FILE")
FAST_DDS_2_DISTROS = ("humble", "iron", "jazzy")


def transport_environment(environ=None) -> dict[str, str]:
    """Environment for every process a launch starts: the package's FastDDS transports
    (config/fastdds.xml: a shared-memory segment large enough for camera images), unless
    the user already chose a profiles file."""
    environ = os.environ if environ is None else environ
    if any(environ.get(v) for v in DDS_PROFILE_VARIABLES):
        return {}
    path = str(config_dir() / "fastdds.xml")
    fast_dds_2 = environ.get("ROS_DISTRO", "") in FAST_DDS_2_DISTROS
    return dict.fromkeys(DDS_PROFILE_VARIABLES if fast_dds_2 else DDS_PROFILE_VARIABLES[:1], path)


def find_params_file(node: str, override: str | None = None) -> str:
    path = Path(override) if override else config_dir() / f"{node}.yaml"
    if not path.is_file():
        raise FileNotFoundError(f"params file not found: {path}")
    return str(path)


def _common(use_sim_time: bool, overrides: dict | None) -> dict:
    params = dict(overrides or {})
    if use_sim_time:
        params["use_sim_time"] = True
    return params


def _remaps(**topics: str) -> tuple[tuple[str, str], ...]:
    """Remappings for the topics given a name other than their own."""
    return tuple((own, given) for own, given in topics.items() if given != own)


def drone(namespace: str = "", params_file: str | None = None, camera_topic: str = "image",
          command_topic: str = "cmd_vel", use_sim_time: bool = False, with_monitor: bool = True,
          monitor_params_file: str | None = None, backend: str = "", overrides: dict | None = None) -> list[NodeSpec]:
    """The drone side: the drone node reading ``camera_topic`` and commanding on
    ``command_topic`` (always first in the list), and its monitor (link + re-planning).
    ``backend`` (empty: the params files') goes to both: the monitor plans with that backend's profile."""
    chosen = {"backend": backend} if backend else {}
    specs = [NodeSpec(
        executable="drone_node", name="spinn_drone", namespace=namespace,
        params_files=(find_params_file("drone", params_file),),
        params={**chosen, **_common(use_sim_time, overrides)},
        remappings=_remaps(image=camera_topic, cmd_vel=command_topic),
    )]
    if with_monitor:
        specs += monitor(namespace, monitor_params_file, use_sim_time, overrides=chosen)
    return specs


def monitor(namespace: str = "", params_file: str | None = None, use_sim_time: bool = False,
            overrides: dict | None = None) -> list[NodeSpec]:
    """The monitor: measures the link and the cloud, publishes split plans for its drone."""
    return [NodeSpec(
        executable="monitor_node", name="spinn_monitor", namespace=namespace,
        params_files=(find_params_file("monitor", params_file),),
        params=_common(use_sim_time, overrides),
    )]


def cloud(namespace: str = "", params_file: str | None = None, use_sim_time: bool = False, allowed_drones: str = "",
          overrides: dict | None = None) -> list[NodeSpec]:
    """The cloud side: the tail server reached over Zenoh. ``allowed_drones`` (comma-separated
    drone names; empty: the params file's) are the drones its access control lets in."""
    allowed = {"zenoh.allowed_drones": allowed_drones} if allowed_drones else {}
    return [NodeSpec(
        executable="cloud_node", name="spinn_cloud", namespace=namespace,
        params_files=(find_params_file("cloud", params_file),),
        params={**allowed, **_common(use_sim_time, overrides)},
    )]


# -- simulator (owned by the simulation work; see spinn_ros/nodes/sim_node.py) ---------
def sim(namespace: str = "", params_file: str | None = None, course_seed: int = -1, course_kind: str = "",
        real_time_factor: float = -1.0, overrides: dict | None = None) -> list[NodeSpec]:
    """The simulator node (PyFlyt quadrotor, obstacle course, onboard camera).

    It is the clock source, so it takes no use_sim_time. course_seed < 0, an empty
    course_kind and real_time_factor < 0 keep the params file's values.
    """
    chosen = {}
    if course_seed >= 0:
        chosen["course.seed"] = course_seed
    if course_kind:
        chosen["course.kind"] = course_kind
    if real_time_factor >= 0:
        chosen["real_time_factor"] = real_time_factor
    return [NodeSpec(
        executable="sim_node", name="spinn_sim", namespace=namespace,
        params_files=(find_params_file("sim", params_file),),
        params={**chosen, **(overrides or {})},
    )]
# -- end simulator ----------------------------------------------------------------------


SYSTEMS = {"drone": drone, "monitor": monitor, "cloud": cloud, "sim": sim}

#: help text of every launch argument, shared by ros2 launch and spinn launch
ARGUMENT_HELP = {
    "namespace": "namespace of the nodes (one per drone), e.g. drone1",
    "params_file": "YAML params file (default: the package's config/<node>.yaml)",
    "camera_topic": "sensor_msgs/Image topic the drone node reads",
    "command_topic": "geometry_msgs/TwistStamped topic the drone node commands on",
    "course_seed": "obstacle course seed (default: the params file's course.seed)",
    "course_kind": "a scene family (spinn fly --help lists them) or random (default: the params file's course.kind)",
    "real_time_factor": "1.0 = wall-clock pace, 0 = as fast as possible (default: the params file's)",
    "use_sim_time": "true: follow /clock from the simulator",
    "with_monitor": "true: also start the monitor (link measurement and re-planning) beside the drone node",
    "monitor_params_file": "the monitor's YAML params file (default: the package's config/monitor.yaml)",
    "allowed_drones": "drones (comma-separated names = their namespaces) the cloud lets in (default: the params file's)",
    "backend": "torch or onnxruntime for the drone's head, and the profile its monitor plans with "
               "(default: the params files')",
}


def launch_arguments(system: str) -> list[tuple[str, str, str]]:
    """(name, default as text, help) of a system's launch arguments."""
    sig = inspect.signature(SYSTEMS[system])
    return [(name, _as_text(p.default), ARGUMENT_HELP.get(name, name))
            for name, p in sig.parameters.items() if name != "overrides"]


def _as_text(default) -> str:
    if default is None:
        return ""
    return _yaml_scalar(default).strip("'")


def specs_from_strings(system: str, values: dict[str, str]) -> list[NodeSpec]:
    """Build a system's node specs from textual launch arguments (as both launchers get them)."""
    if system not in SYSTEMS:
        raise ValueError(f"unknown system {system!r}; choose one of {sorted(SYSTEMS)}")
    sig = inspect.signature(SYSTEMS[system])
    allowed = [n for n in sig.parameters if n != "overrides"]
    kwargs = {}
    for name, text in values.items():
        if name not in allowed:
            raise ValueError(f"unknown launch argument {name!r}; {system} takes: {', '.join(allowed)}")
        kwargs[name] = _typed(text, sig.parameters[name].default, name)
    return SYSTEMS[system](**kwargs)


def _typed(text: str, default, name: str):
    if isinstance(default, bool):
        if text.lower() not in ("true", "false"):
            raise ValueError(f"launch argument {name!r} must be true or false, got {text!r}")
        return text.lower() == "true"
    if isinstance(default, (int, float)):
        try:
            return type(default)(text)
        except ValueError:
            raise ValueError(f"launch argument {name!r} must be a {type(default).__name__}, got {text!r}") from None
    return text or default


def launch_description(system: str, extra_actions=None):
    """A launch_ros LaunchDescription for ``ros2 launch`` (imports launch only here).
    ``extra_actions(values)``: more actions from the textual launch arguments (e.g. Gazebo)."""
    from launch.actions import DeclareLaunchArgument, OpaqueFunction, SetEnvironmentVariable
    from launch.substitutions import LaunchConfiguration
    from launch_ros.actions import Node

    from launch import LaunchDescription

    args = launch_arguments(system)

    def nodes(context):
        values = {name: LaunchConfiguration(name).perform(context) for name, _, _ in args}
        return [*(extra_actions(values) if extra_actions else []),
                *(Node(package=PACKAGE, executable=s.executable, name=s.name, namespace=s.namespace,
                       parameters=[*s.params_files, s.params], remappings=list(s.remappings), output="screen")
                  for s in specs_from_strings(system, values))]

    declared = [DeclareLaunchArgument(name, default_value=default, description=text) for name, default, text in args]
    transport = [SetEnvironmentVariable(name, value) for name, value in transport_environment().items()]
    return LaunchDescription([*declared, *transport, OpaqueFunction(function=nodes)])


# -- flight (the closed-loop flight; see spinn_ros/tools/fly/, docs/flight.md) ---------------
#: drone parameters of each flight mode: SPINN and its two classic baselines
FLIGHT_MODES = ("spinn", "device-only", "cloud-only")
FLIGHT_SPLIT = 2            # SPINN's split and threshold until (or without) a monitor's plan: stages [0, 2)
FLIGHT_THRESHOLD = 0.999    # on the drone, exits 0 and 1 answer at 99.9 % confidence, the rest is offloaded
FLIGHT_GOAL = (20.0, 0.0)   # every generated course's goal (sim.world.CourseParams: x = length, y = 0)
FLIGHT_GOAL_GAIN = 1.0      # yaw toward the goal when the way ahead is clear (controller.goal_gain)
FLIGHT_GOAL_CONE = 1.05     # rad (60 deg): the drone never turns further than this away from the goal
FLIGHT_SEARCH_YAW = 0.5     # rad/s: stopped with nothing to choose between, turn to look for a way


def flight_system(course_seed: int = -1, course_kind: str = "", real_time_factor: float = 1.0, checkpoint: str = "",
           mode: str = "spinn", split_point: int = -2, exit_threshold: float = -1.0,
           cloud_endpoint: str = "tls/127.0.0.1:7447", sla: str = "", with_monitor: bool = True,
           overrides: dict | None = None) -> list[NodeSpec]:
    """One drone flying a simulated course: sim + drone (+ cloud and monitor unless device-only).

    The drone reads the simulator's ``/camera`` and commands ``/X3/gazebo/command/twist`` on sim time;
    it also turns toward the course's goal when the way ahead is clear (odometry ``/model/X3/odometry``).
    ``mode``: ``spinn`` (head on the drone, offload when no device exit is confident; the monitor's plans
    are followed when a monitor runs), ``device-only`` (the whole model on the drone, final exit only, no
    cloud) or ``cloud-only`` (the raw frame to the cloud, final exit only). ``split_point`` -2 and
    ``exit_threshold`` < 0 keep the mode's defaults; ``cloud_endpoint`` is where the cloud listens and the
    drone (and monitor) connect. The monitor runs beside the drone (not for device-only, nor with a
    ``random:`` model, which has no calibration to plan from) unless ``with_monitor`` is false.
    ``overrides`` maps a node ("sim", "drone", "cloud", "monitor") to parameter overrides for it.
    """
    if mode not in FLIGHT_MODES:
        raise ValueError(f"flight mode must be one of {', '.join(FLIGHT_MODES)}, got {mode!r}")
    per_node = {k: dict(v) for k, v in (overrides or {}).items()}
    unknown = set(per_node) - {"sim", "drone", "cloud", "monitor"}
    if unknown:
        raise ValueError(f"flight overrides are keyed by node (sim, drone, cloud, monitor), got {sorted(unknown)}")
    model = {"checkpoint": checkpoint} if checkpoint else {}
    zenoh = {"zenoh.connect": cloud_endpoint}
    drone_params = {
        "spinn": {"split_point": FLIGHT_SPLIT, "exit_threshold": FLIGHT_THRESHOLD, "cloud.enabled": True,
                  "follow_plans": True, **zenoh},
        "device-only": {"split_point": -1, "exit_threshold": PLAIN_NETWORK, "cloud.enabled": False, "follow_plans": False},
        "cloud-only": {"split_point": 0, "exit_threshold": PLAIN_NETWORK, "cloud.enabled": True, "follow_plans": False, **zenoh},
    }[mode]
    if split_point != -2:
        drone_params["split_point"] = split_point
    if exit_threshold >= 0:
        drone_params["exit_threshold"] = exit_threshold
    specs = sim(course_seed=course_seed, course_kind=course_kind, real_time_factor=real_time_factor,
                overrides=per_node.get("sim"))
    goal = {"goal.enabled": True, "goal.x": FLIGHT_GOAL[0], "goal.y": FLIGHT_GOAL[1],
            "controller.goal_gain": FLIGHT_GOAL_GAIN, "controller.goal_cone": FLIGHT_GOAL_CONE,
            "controller.search_yaw_rate": FLIGHT_SEARCH_YAW}
    pilot = drone(camera_topic="/camera", command_topic="/X3/gazebo/command/twist", use_sim_time=True,
                  overrides={**model, **goal, **drone_params, **per_node.get("drone", {})}, with_monitor=False)
    # the drone steers toward the goal from the simulator's odometry (gz OdometryPublisher's topic)
    specs += [dataclasses.replace(pilot[0], remappings=(*pilot[0].remappings, ("odom", "/model/X3/odometry"))),
              *pilot[1:]]
    if mode != "device-only":
        specs += cloud(overrides={**model, "zenoh.listen": cloud_endpoint, **per_node.get("cloud", {})})
        if with_monitor and not checkpoint.startswith("random:"):   # it plans from a calibrated checkpoint only
            specs += _flight_monitor(mode, {**model, "zenoh.connect": cloud_endpoint, **({"sla": sla} if sla else {}),
                                            **per_node.get("monitor", {})})
    return specs


def _flight_monitor(mode: str, overrides: dict) -> list[NodeSpec]:
    """The monitor (link measurement, re-planning) beside the drone, on sim time, planning with the
    mode's strategy (the baselines' drones ignore its plans)."""
    strategy = {"spinn": "spinn", "cloud-only": "cloud_only"}[mode]
    return monitor(use_sim_time=True, overrides={"strategy": strategy, **overrides})


SYSTEMS["flight"] = flight_system
ARGUMENT_HELP.update({
    "checkpoint": "model reference for drone and cloud: default, a checkpoint path, or random:<size>:<seed>",
    "mode": "spinn, device-only or cloud-only",
    "split_point": "stages [0, split) on the drone (-2: the mode's default)",
    "exit_threshold": "exit confidence threshold (< 0: the mode's default)",
    "cloud_endpoint": "Zenoh endpoint the cloud listens on and the drone connects to",
    "sla": "SLA file for the monitor's planner (default: the monitor's own, config/sla.yaml)",
})
# -- end flight -----------------------------------------------------------------------------


# -- Gazebo flight (launch/gz_flight.launch.py; the world from spinn export-world) ----------
def gz_flight_system(course_seed: int = 0, course_kind: str = "forest", checkpoint: str = "", mode: str = "spinn",
              split_point: int = -2, exit_threshold: float = -1.0, cloud_endpoint: str = "tls/127.0.0.1:7447",
              sla: str = "", with_monitor: bool = True, overrides: dict | None = None) -> list[NodeSpec]:
    """The flight's ROS nodes (drone, cloud, monitor) for a gz-sim world of the same seeded course:
    everything :func:`flight_system` starts except its simulator, whose topics gz and ros_gz_bridge
    (config/gz_bridge.yaml) provide under the same names. ``course_seed`` and ``course_kind``
    choose the world the launch file writes and starts."""
    specs = flight_system(course_seed=course_seed, course_kind=course_kind, checkpoint=checkpoint, mode=mode,
                   split_point=split_point, exit_threshold=exit_threshold, cloud_endpoint=cloud_endpoint, sla=sla,
                   with_monitor=with_monitor, overrides=overrides)
    return [s for s in specs if s.executable != "sim_node"]


def gz_world_actions(values: dict[str, str]) -> list:
    """gz sim on the course's world (written now into a temporary folder) and the bridge."""
    import tempfile

    from launch.actions import ExecuteProcess
    from launch_ros.actions import Node

    from ..sim.sdf import write_world
    from ..sim.world import generate_course

    seed, kind = int(values["course_seed"]), values["course_kind"]
    world = Path(tempfile.mkdtemp(prefix="spinn_gz_")) / f"spinn_{kind}_{seed}.sdf"
    write_world(world, generate_course(seed, kind))
    return [ExecuteProcess(cmd=["gz", "sim", "-r", str(world)], output="screen"),
            Node(package="ros_gz_bridge", executable="parameter_bridge", name="spinn_gz_bridge", output="screen",
                 parameters=[{"config_file": str(config_dir() / "gz_bridge.yaml"), "use_sim_time": True}])]


SYSTEMS["gz_flight"] = gz_flight_system
# -- end Gazebo flight -----------------------------------------------------------------------
