"""Shared fixtures. Tests are layered like the code: unit/ (no rclpy, no processes: the fast inner
loop), ros/ (real nodes as separate processes over DDS, Zenoh sessions), system/ (network
namespaces, flights, installs). Every ROS test runs real nodes as separate processes over DDS."""
from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))  # test helpers shared between test files

import torch  # noqa: E402

torch.set_num_threads(1)


#: every drone name (namespace) a test flies with a cloud, and the linkemu cloud's address
TEST_DRONES = ("default", "d1", "d2", "fuzzer", "rogue", "drone1", "launch_test_drone", "onnx_monitor")
LINKEMU_CLOUD_IP = "10.77.0.2"


UNIT_TESTS = Path(__file__).resolve().parent / "unit"


@pytest.fixture(autouse=True)
def _secured_link(request):
    """Every test that may start a node gets the run's certificates (unit tests start none)."""
    if UNIT_TESTS not in request.path.parents:
        request.getfixturevalue("certs")


@pytest.fixture(scope="session")
def certs(tmp_path_factory) -> Path:
    """The link is secured by default: one CA and certificates for every test drone (and monitor), made
    with `spinn certs` and handed to every node this run starts through $SPINN_CERTS (the default of
    their zenoh.certs parameter)."""
    import subprocess

    out = tmp_path_factory.mktemp("certs")
    subprocess.run([sys.executable, "-m", "spinn_ros.tools.cli", "certs", "--out", str(out), "--drone", ",".join(TEST_DRONES),
                    "--san", LINKEMU_CLOUD_IP], check=True, capture_output=True)
    os.environ["SPINN_CERTS"] = str(out)
    return out


@pytest.fixture(scope="session")
def planner():
    """The scheduler a monitor with default parameters runs: the shipped model's calibration and
    profiles, the default SLA."""
    from spinn_ros.core.calibration import load_calibration
    from spinn_ros.core.checkpoint import calibration_path, default_checkpoint_path
    from spinn_ros.core.model_ref import load_model
    from spinn_ros.core.performance import PerformanceModel
    from spinn_ros.core.profile import find_profile, load_profile
    from spinn_ros.core.scheduler import Scheduler
    from spinn_ros.core.sla import load_sla

    if not default_checkpoint_path().exists():
        pytest.fail("the shipped checkpoint is missing: the monitor plans for a trained, calibrated model")
    _, model_id = load_model("default")
    cal = load_calibration(calibration_path(default_checkpoint_path()), model_id)
    device = load_profile(find_profile(model_id, "device"), model_id, "device")
    cloud = load_profile(find_profile(model_id, "cloud"), model_id, "cloud")
    return Scheduler(PerformanceModel(device, cloud, cal), load_sla())


@pytest.fixture
def ros():
    """A RosHarness on this run's domain; on teardown every node must have exited
    cleanly (status 0 after SIGINT) and no FastDDS shared-memory file may be left."""
    from spinn_ros.tools.harness import RosHarness, domain_id_for_run, fastdds_shm_files, orphaned_shm_files

    before = fastdds_shm_files()
    harness = RosHarness(domain_id_for_run())
    try:
        yield harness
    finally:
        codes = harness.close()
    unclean = {name: code for name, code in codes.items() if code != 0}
    assert not unclean, f"nodes did not shut down cleanly: {unclean}\n{harness.unclean_output}"
    leftover = orphaned_shm_files(before)
    assert not leftover, f"FastDDS shared-memory files left behind: {sorted(leftover)}"


# ---------------------------------------------------------------------------------
# Tests that enter network namespaces run in a fresh process once DDS has started here
# ---------------------------------------------------------------------------------


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_protocol(item, nextitem):
    """A ``netns`` test after another test started DDS in this process runs as its own pytest
    process (see spinn_ros.tools.harness.dds_started: FastDDS keeps the host identity of the
    namespace where it first started, so this process could not see the nodes it spawns on the
    emulated drone). Its outcome and output are reported here as the test's own."""
    if item.get_closest_marker("netns") is None:
        return None
    from spinn_ros.tools.harness import dds_started

    if not dds_started():
        return None
    run_in_fresh_process(item)
    return True


def run_in_fresh_process(item) -> None:
    import subprocess
    import time

    from _pytest.reports import TestReport

    hook = item.ihook
    hook.pytest_runtest_logstart(nodeid=item.nodeid, location=item.location)
    start = time.time()
    proc = subprocess.run([sys.executable, "-m", "pytest", item.nodeid, "-p", "no:cacheprovider", "-q", "-rs",
                           "--no-header", "-W", "ignore::DeprecationWarning"],
                          cwd=item.config.rootpath, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    stop = time.time()
    summary = proc.stdout.strip().splitlines()[-1] if proc.stdout.strip() else ""
    if proc.returncode == 0 and "skipped" in summary and "passed" not in summary:
        reason = next((line.split(": ", 1)[-1] for line in proc.stdout.splitlines() if line.startswith("SKIPPED")), summary)
        outcome, longrepr = "skipped", (str(item.path), item.location[1], f"in a fresh process: {reason}")
    elif proc.returncode == 0:
        outcome, longrepr = "passed", None
    else:
        outcome, longrepr = "failed", f"in a fresh pytest process (exit {proc.returncode}):\n{proc.stdout}"
    for when, result in (("setup", "passed"), ("call", outcome), ("teardown", "passed")):
        report = TestReport(item.nodeid, item.location, {k: 1 for k in item.keywords}, result,
                            longrepr if when == "call" else None, when,
                            sections=[("Captured stdout call", proc.stdout)] if when == "call" else [],
                            duration=stop - start if when == "call" else 0.0, start=start, stop=stop)
        hook.pytest_runtest_logreport(report=report)
    hook.pytest_runtest_logfinish(nodeid=item.nodeid, location=item.location)
