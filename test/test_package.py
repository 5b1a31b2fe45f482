"""The package as users meet it: a pure core, a ROS-free pip install, params files that
match the nodes, launch files that match the launch specs, and the rosidl build."""
from __future__ import annotations

import ast
import importlib
import pkgutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
import yaml

import spinn_ros.core
from spinn_ros import launch_spec

ROOT = Path(__file__).resolve().parents[1]


def test_core_imports_neither_rclpy_nor_zenoh():
    modules = [f"spinn_ros.core.{m.name}" for m in pkgutil.iter_modules(spinn_ros.core.__path__)]
    code = ("import sys\n"
            "sys.modules['rclpy'] = None; sys.modules['zenoh'] = None\n"   # any import of them now fails
            f"import importlib\nfor m in {modules!r}: importlib.import_module(m)\n"
            "print('ok', len(" + repr(modules) + "))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert len(modules) >= 10


def _node_params(module: str) -> dict:
    return {p.name: p for p in importlib.import_module(module).PARAMS}


def _flatten(d: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(_flatten(v, key + "."))
        else:
            out[key] = v
    return out


@pytest.mark.parametrize("node", ["drone", "cloud", "sim", "monitor"])
def test_params_files_name_only_declared_parameters_with_valid_values(node):
    from spinn_ros.ros.params import problem

    data = yaml.safe_load((ROOT / "config" / f"{node}.yaml").read_text())
    values = _flatten(data["/**"]["ros__parameters"])
    declared = _node_params(f"spinn_ros.nodes.{node}_node")
    unknown = set(values) - set(declared) - {"use_sim_time"}
    assert not unknown, f"config/{node}.yaml sets undeclared parameters: {sorted(unknown)}"
    bad = [msg for k, v in values.items() if k in declared and (msg := problem(declared[k], v))]
    assert not bad, bad


@pytest.mark.parametrize("node", ["drone", "cloud", "monitor"])
def test_backend_parameter_names_the_allowed_values(node):
    from spinn_ros.ros.params import problem

    declared = _node_params(f"spinn_ros.nodes.{node}_node")["backend"]
    assert problem(declared, "onnxruntime") is None and problem(declared, "torch") is None
    msg = problem(declared, "tensorrt")
    assert "backend" in msg and "'torch'" in msg and "'onnxruntime'" in msg, msg


def test_launch_backend_reaches_the_drone_and_its_monitor():
    drone, monitor = launch_spec.specs_from_strings("drone", {"backend": "onnxruntime"})
    assert drone.params["backend"] == "onnxruntime" and monitor.params["backend"] == "onnxruntime"
    assert "backend" not in launch_spec.specs_from_strings("drone", {})[0].params    # the params file decides


@pytest.mark.parametrize("path", sorted((ROOT / "launch").glob("*.launch.py")), ids=lambda p: p.name)
def test_launch_files_describe_known_systems(path):
    tree = ast.parse(path.read_text())
    calls = [n for n in ast.walk(tree) if isinstance(n, ast.Call) and getattr(n.func, "id", "") == "launch_description"]
    assert len(calls) == 1, f"{path.name} must build its description from spinn_ros.launch_spec"
    system = calls[0].args[0].value
    assert system in launch_spec.SYSTEMS
    assert path.name == f"{system}.launch.py"
    for spec in launch_spec.SYSTEMS[system]():
        assert (ROOT / "bin" / spec.executable).is_file(), f"bin/{spec.executable} (ros2 run target) missing"
        for f in spec.params_files:
            assert Path(f).is_file()


def test_cmake_installs_every_node_executable():
    cmake = (ROOT / "CMakeLists.txt").read_text()
    for exe in (ROOT / "bin").iterdir():
        assert f"bin/{exe.name}" in cmake, f"CMakeLists.txt does not install bin/{exe.name}"
    for msg in (ROOT / "msg").glob("*.msg"):
        assert f'"msg/{msg.name}"' in cmake, f"{msg.name} is not generated"


def test_pip_wheel_is_ros_free_and_ships_the_model(tmp_path):
    out = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
                          "-w", str(tmp_path), str(ROOT)], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    wheel = next(tmp_path.glob("spinn_ros-*.whl"))
    with zipfile.ZipFile(wheel) as z:
        names = set(z.namelist())
        meta = next(n for n in names if n.endswith("METADATA"))
        requires = [line for line in z.read(meta).decode().splitlines() if line.startswith("Requires-Dist")]
        entry = z.read(next(n for n in names if n.endswith("entry_points.txt"))).decode()
    assert "spinn_ros/core/model.py" in names and "spinn_ros/cloud_service.py" in names
    assert not any("rclpy" in r or r.split()[1].startswith("ros-") for r in requires), requires
    assert "spinn = spinn_ros.cli:main" in entry
    from spinn_ros.core.checkpoint import default_checkpoint_path

    shipped = default_checkpoint_path()
    if shipped.exists():
        rel = shipped.relative_to(ROOT).as_posix()
        assert rel in names, f"the wheel must ship the default checkpoint {rel}"
