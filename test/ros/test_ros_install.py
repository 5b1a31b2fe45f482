"""The package as a ROS user builds and launches it: ``colcon build`` into an install space,
``source install/setup.bash``, ``ros2 launch`` from another directory, ``launch_test``.

Needs the ros2 CLI, launch, launch_testing and colcon, which no registry has:
scripts/setup_env.sh installs them from ../shared/ros2-cli where it exists. Without them
these tests skip with one line saying so, except in CI, where they must run.
"""
from __future__ import annotations

import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import psutil
import pytest
import yaml
from geometry_msgs.msg import TwistStamped
from sensor_msgs.msg import Image

from spinn_ros.msg import InferenceResult, LinkState, SplitPlan
from spinn_ros.ros import qos
from spinn_ros.testing.frames import synthetic_frames
from spinn_ros.tools import launch_spec
from spinn_ros.tools.launch import ChildProcess
from spinn_ros.tools.waiting import wait_until

from helpers import Collector, image_msg

REPO = Path(__file__).resolve().parents[2]
VENV = Path(sys.prefix)
ROS2_CLI_KIT = REPO.parent / "shared" / "ros2-cli"
LAUNCH_TESTING_FILE = REPO / "test" / "launch_testing" / "drone_launch.py"
START_S = 180.0        # a node's start-up (torch import, model, DDS discovery) on a loaded 2-core machine


@dataclass
class Installed:
    install: Path          # the colcon install space
    env: dict              # the environment after `source install/setup.bash`
    elsewhere: Path        # a working directory outside the checkout and the workspace
    build_s: float


def require_ros2_tools() -> None:
    """Skip (fail in CI) unless colcon, ros2 and launch_test are installed in this venv."""
    missing = [tool for tool in ("colcon", "ros2", "launch_test") if not (VENV / "bin" / tool).exists()]
    if not missing:
        return
    why = (f"{', '.join(missing)} not installed: they come from {ROS2_CLI_KIT} "
           f"({'present' if ROS2_CLI_KIT.is_dir() else 'absent'} here) through scripts/setup_env.sh")
    if os.environ.get("CI"):
        pytest.fail(f"CI must run the ROS install tests: {why}")
    pytest.skip(why)


def venv_shell_env() -> dict[str, str]:
    """README's shell on the PyPI path: the venv on PATH and as the ROS prefix (a ROS install
    gets the same from ``source /opt/ros/<distro>/setup.bash``)."""
    return {**os.environ, "VIRTUAL_ENV": str(VENV), "PATH": f"{VENV / 'bin'}:{os.environ['PATH']}",
            "AMENT_PREFIX_PATH": str(VENV), "CMAKE_PREFIX_PATH": str(VENV)}


def colcon_build(workspace: Path) -> tuple[Path, float]:
    """``colcon build --packages-select spinn_ros`` with this checkout as src/spinn_ros."""
    (workspace / "src").mkdir(parents=True)
    (workspace / "src" / "spinn_ros").symlink_to(REPO)
    start = time.monotonic()
    done = subprocess.run(
        ["colcon", "build", "--packages-select", "spinn_ros", "--cmake-args", "-DBUILD_TESTING=OFF",
         f"-DPython3_EXECUTABLE={VENV / 'bin' / 'python'}"],
        cwd=workspace, env=venv_shell_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=900)
    assert done.returncode == 0, f"colcon build failed:\n{done.stdout[-4000:]}"
    return workspace / "install", time.monotonic() - start


def sourced_env(install: Path) -> dict[str, str]:
    out = subprocess.run(["bash", "-c", f"source {install}/setup.bash && env -0"], env=venv_shell_env(),
                         stdout=subprocess.PIPE, check=True).stdout.decode()
    return dict(line.split("=", 1) for line in out.split("\0") if "=" in line)


@pytest.fixture(scope="module")
def installed(tmp_path_factory, certs) -> Installed:
    """The install space and its sourced environment, taken once the run's certificates are in
    $SPINN_CERTS (the autouse fixture that makes them is function-scoped and would come after)."""
    require_ros2_tools()
    install, seconds = colcon_build(tmp_path_factory.mktemp("ws"))
    print(f"colcon build: {seconds:.1f} s")
    return Installed(install, sourced_env(install), tmp_path_factory.mktemp("elsewhere"), seconds)


def run(installed: Installed, argv: list[str], timeout: float = 120.0, env: dict | None = None) -> str:
    done = subprocess.run(argv, cwd=installed.elsewhere, env={**installed.env, **(env or {})}, text=True,
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=timeout)
    assert done.returncode == 0, f"{' '.join(argv)} exited {done.returncode}:\n{done.stdout[-4000:]}"
    return done.stdout


# ---------------------------------------------------------------------------------
# The install space
# ---------------------------------------------------------------------------------


def test_install_space_has_the_code_and_its_resources(installed):
    share = installed.install / "spinn_ros" / "share" / "spinn_ros"
    out = run(installed, [sys.executable, "-c",
                          "import spinn_ros.core.resources as r, spinn_ros.msg, spinn_ros.core.model as m;"
                          "print(m.__file__); print(r.share_dir())"])
    module_file, share_dir = out.splitlines()[:2]
    assert module_file.startswith(str(installed.install)), "the sourced install space must win over the checkout"
    assert Path(share_dir) == share
    for resource in ("config/sla.yaml", "config/drone.yaml", "config/fastdds.xml", "launch/drone.launch.py"):
        assert (share / resource).is_file(), resource
    assert list((share / "profiles").glob("*-reference-device.json")), "profiles/ is installed"


@pytest.mark.parametrize("system", ["drone", "cloud", "monitor", "sim", "flight", "gz_flight"])
def test_show_args_lists_every_argument_with_its_description(installed, system):
    out = run(installed, ["ros2", "launch", "spinn_ros", f"{system}.launch.py", "--show-args"])
    for name, _default, help_text in launch_spec.launch_arguments(system):
        assert f"'{name}':" in out and help_text in out, f"{system}: argument {name} missing:\n{out}"


# ---------------------------------------------------------------------------------
# ros2 launch: drone (+ monitor) and cloud, probed over DDS
# ---------------------------------------------------------------------------------


def node_commands(launch: ChildProcess) -> dict[str, list[str]]:
    """The node processes a launch started: node name -> argv."""
    found = {}
    for child in psutil.Process(launch.proc.pid).children(recursive=True):
        argv = child.cmdline()
        if "--ros-args" in argv:
            found[argv[argv.index("--ros-args") + 2].split(":=")[1]] = argv
    return found


def ros_args_meaning(argv: list[str]) -> dict:
    """What a node's ``--ros-args`` say: name, namespace, params files and values, remappings.
    ros2 launch writes parameter dicts to temporary params files; spinn launch uses -p."""
    args = argv[argv.index("--ros-args") + 1:]
    out = {"remap": [], "params_files": [], "params": {}}
    for flag, value in zip(args[::2], args[1::2]):
        if flag == "-r" and value.startswith("__node:="):
            out["name"] = value.split(":=")[1]
        elif flag == "-r" and value.startswith("__ns:="):
            out["namespace"] = value.split(":=")[1]
        elif flag == "-r":
            out["remap"].append(value)
        elif flag == "-p":
            key, text = value.split(":=", 1)
            out["params"][key] = yaml.safe_load(text)
        elif flag == "--params-file" and Path(value).name.startswith("launch_params_"):
            for node in yaml.safe_load(Path(value).read_text()).values():     # keyed by the node's full name
                out["params"].update(node["ros__parameters"])
        elif flag == "--params-file":
            out["params_files"].append(value)
    return out


def wait_for_node_output(proc: ChildProcess, needle: str, timeout: float) -> None:
    wait_until(lambda: needle in proc.output or proc.poll() is not None, timeout, f"{needle!r} from {proc.name}")
    assert proc.poll() is None, f"{proc.name} exited {proc.poll()}:\n{proc.output[-3000:]}"


def test_ros2_launch_brings_up_drone_monitor_and_cloud(ros, installed):
    env = {**installed.env, **ros.env}
    # certificates for drone1 and its monitor: the session's (conftest.certs), through $SPINN_CERTS
    cloud = ChildProcess("ros2 launch cloud", ["ros2", "launch", "spinn_ros", "cloud.launch.py", "allowed_drones:=drone1"],
                         env=env, cwd=str(installed.elsewhere))
    ros.procs.append(cloud)
    drone = ChildProcess("ros2 launch drone", ["ros2", "launch", "spinn_ros", "drone.launch.py", "namespace:=drone1"],
                         env=env, cwd=str(installed.elsewhere))
    ros.procs.append(drone)

    camera = ros.node.create_publisher(Image, "/drone1/image", qos.SENSOR)
    results = Collector(ros.node, InferenceResult, "/drone1/spinn/result", qos.RESULTS)
    commands = Collector(ros.node, TwistStamped, "/drone1/cmd_vel", qos.RESULTS)
    links = Collector(ros.node, LinkState, "/drone1/spinn/link", qos.LATCHED)
    plans = Collector(ros.node, SplitPlan, "/drone1/spinn/plan", qos.LATCHED)
    ros.wait_matched(camera, timeout=START_S)
    wait_for_node_output(cloud, "cloud_node", START_S)

    # frames until the node answers (it may still be warming up), then a measured run
    frames = synthetic_frames(20, seed=4)
    wait_until(lambda: camera.publish(image_msg(frames[0], "rgb8", 1)) or bool(results.msgs), START_S,
               "a first result from the launched drone node", poll=0.3)
    first = len(results.msgs)
    for i, frame in enumerate(frames):
        camera.publish(image_msg(frame, "rgb8", 100 + i))
        time.sleep(0.1)
    wait_until(lambda: len([r for r in results.msgs[first:] if not r.provisional]) >= 18, 60, "results for the frames")
    answered = {r.header.stamp.sec for r in results.msgs[first:]}
    wait_until(lambda: answered <= {c.header.stamp.sec for c in commands.msgs}, 10, "a command per answered frame")
    wait_until(lambda: any(m.cloud_alive for m in links.msgs), 60, "the monitor seeing the launched cloud")
    wait_until(lambda: bool(plans.msgs), 30, "a split plan from the monitor")

    # the nodes run from the install space, with the arguments spinn launch gives them too
    launched = node_commands(drone)
    assert set(launched) == {"spinn_drone", "spinn_monitor"}, launched
    for argv in launched.values():
        script = argv[argv.index("--ros-args") - 1]
        assert script.startswith(str(installed.install / "spinn_ros" / "lib" / "spinn_ros")), argv
    printed = run(installed, [sys.executable, "-m", "spinn_ros.tools.cli", "launch", "drone", "namespace:=drone1", "--print"])
    spinn_launch = {ros_args_meaning(line.split())["name"]: ros_args_meaning(line.split())
                    for line in printed.splitlines() if "--ros-args" in line}
    assert {name: ros_args_meaning(argv) for name, argv in launched.items()} == spinn_launch

    # SIGINT to each launch's process group: every node finishes cleanly
    for launch, nodes in ((drone, ("drone_node-1", "monitor_node-2")), (cloud, ("cloud_node-1",))):
        assert launch.stop(grace_s=30.0) == 0, launch.output[-3000:]
        for node in nodes:
            assert f"[INFO] [{node}]: process has finished cleanly" in launch.output, launch.output[-3000:]


# ---------------------------------------------------------------------------------
# launch_testing: the ROS-standard integration test of the drone launch file
# ---------------------------------------------------------------------------------


def test_drone_launch_file_passes_its_launch_test(ros, installed):
    out = run(installed, ["launch_test", str(LAUNCH_TESTING_FILE)], timeout=600, env=ros.env)
    assert "FAILED" not in out and "OK" in out, out[-4000:]
    assert "test_camera_frames_get_results_and_commands" in out and "test_nodes_exit_cleanly" in out, out[-4000:]
