"""Shared fixtures. Every ROS test runs real nodes as separate processes over DDS."""
from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))  # test helpers shared between test files

import torch  # noqa: E402

torch.set_num_threads(1)


@pytest.fixture
def ros():
    """A RosHarness on this run's domain; on teardown every node must have exited
    cleanly (status 0 after SIGINT) and no FastDDS shared-memory file may be left."""
    from spinn_ros.ros.harness import RosHarness, domain_id_for_run, fastdds_shm_files, orphaned_shm_files

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
