"""The package as users meet it: a pure core, a ROS-free pip install, params files that
match the nodes, launch files that match the launch specs, and the rosidl build."""
from __future__ import annotations

import ast
import importlib
import pkgutil
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
import yaml

import spinn_ros.core
from spinn_ros.tools import launch_spec

ROOT = Path(__file__).resolve().parents[2]


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
    assert len(calls) == 1, f"{path.name} must build its description from spinn_ros.tools.launch_spec"
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
    # built from a copy of what the wheel is made of (as docker/Dockerfile.cloud copies it): a build in the checkout
    # would leave a spinn_ros.egg-info there, which (the checkout being on the venv's sys.path) shadows the editable
    # install's record for pip and importlib.metadata
    src = tmp_path / "src"
    src.mkdir()
    shutil.copy(ROOT / "pyproject.toml", src)
    shutil.copytree(ROOT / "spinn_ros", src / "spinn_ros", ignore=shutil.ignore_patterns("__pycache__"))
    out = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
                          "-w", str(tmp_path), str(src)], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    wheel = next(tmp_path.glob("spinn_ros-*.whl"))
    with zipfile.ZipFile(wheel) as z:
        names = set(z.namelist())
        meta = next(n for n in names if n.endswith("METADATA"))
        requires = [line for line in z.read(meta).decode().splitlines() if line.startswith("Requires-Dist")]
        entry = z.read(next(n for n in names if n.endswith("entry_points.txt"))).decode()
    assert "spinn_ros/core/model.py" in names and "spinn_ros/cloud_service.py" in names
    assert not any("rclpy" in r or r.split()[1].startswith("ros-") for r in requires), requires
    assert "spinn = spinn_ros.tools.cli:main" in entry
    from spinn_ros.core.checkpoint import default_checkpoint_path

    shipped = default_checkpoint_path()
    if shipped.exists():
        rel = shipped.relative_to(ROOT).as_posix()
        assert rel in names, f"the wheel must ship the default checkpoint {rel}"


def _pyproject() -> dict:
    import tomllib  # 3.11: this file runs in the venv, not among the Python 3.10 pure-core tests

    return tomllib.loads((ROOT / "pyproject.toml").read_text())


def test_one_version_number():
    """pyproject.toml's version = spinn_ros.__version__ = package.xml's <version>."""
    import xml.etree.ElementTree as ET

    import spinn_ros

    version = _pyproject()["project"]["version"]
    assert spinn_ros.__version__ == version
    assert ET.parse(ROOT / "package.xml").getroot().findtext("version") == version


def _exact_pins(path: Path) -> dict:
    """{canonical name: version} of a requirements file whose every line is NAME==VERSION."""
    from packaging.requirements import Requirement
    from packaging.utils import canonicalize_name

    pins = {}
    for n, line in enumerate(path.read_text().splitlines(), 1):
        line = line.split("#")[0].strip()
        if not line:
            continue
        req = Requirement(line)
        spec = list(req.specifier)
        assert len(spec) == 1 and spec[0].operator == "==" and req.marker is None, f"{path.name}:{n}: {line} is no exact pin"
        assert canonicalize_name(req.name) not in pins, f"{path.name}:{n}: {req.name} pinned twice"
        pins[canonicalize_name(req.name)] = spec[0].version
    return pins


def test_lock_pins_what_pyproject_asks_for():
    """requirements.lock (generated by scripts/lock.sh) agrees with pyproject.toml: every dependency, every extra's
    requirement and every build requirement has an exact pin there that satisfies it; and the ROS lists installed
    beside it pin nothing differently. No network: a fast check that the lock was regenerated."""
    from packaging.requirements import Requirement
    from packaging.utils import canonicalize_name

    data = _pyproject()
    project = data["project"]
    lock = ROOT / "requirements.lock"
    assert "GENERATED by scripts/lock.sh" in lock.read_text().split("\n\n")[0]
    pins = _exact_pins(lock)
    extras = project["optional-dependencies"]
    assert {"sim", "record", "linkemu", "onnx", "test"} <= set(extras)
    wanted = {"dependencies": project["dependencies"], **{f"extra {e}": reqs for e, reqs in extras.items()},
              "build-system": data["build-system"]["requires"]}
    problems = []
    for where, reqs in wanted.items():
        for text in reqs:
            req = Requirement(text)
            pin = pins.get(canonicalize_name(req.name))
            if pin is None:
                problems.append(f"{where}: {text}: no pin")
            elif not req.specifier.contains(pin, prereleases=True):
                problems.append(f"{where}: {text}: the lock pins {pin}")
    assert not problems, "requirements.lock is out of date, run scripts/lock.sh:\n" + "\n".join(problems)
    assert canonicalize_name(project["name"]) not in pins
    for ros_list in ("requirements-ros.txt", "requirements-ros2cli.txt"):
        both = {name: (pins[name], ver) for name, ver in _exact_pins(ROOT / ros_list).items() if name in pins}
        assert all(a == b for a, b in both.values()), f"{ros_list} and requirements.lock disagree: {both}"


def test_reading_a_calibration_needs_no_torch():
    import subprocess
    import sys

    code = ("import sys; import spinn_ros.core.calibration as c; "
            "assert 'torch' not in sys.modules and 'numpy' not in sys.modules, sorted(sys.modules)")
    subprocess.run([sys.executable, "-c", code], check=True)
