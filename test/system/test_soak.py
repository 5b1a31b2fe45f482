"""A CI-sized soak (bench/soak.py; 30 minutes for the record in docs/benchmarks.md): drone, cloud and
monitor, secured, over the emulated link flapping (up 3 s, down 1 s) for 2 minutes, then a 2 000-query
burst. Needs root (link emulation): without it, fails loudly (skips with SPINN_ALLOW_NO_ROOT=1)."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from spinn_ros.testing.linkemu import require_root

ROOT = Path(__file__).resolve().parents[2]

pytestmark = [pytest.mark.netns, pytest.mark.timeout(480)]


def test_two_minute_soak_no_growth_no_late_answer_every_frame_answered(tmp_path):
    require_root()
    # its own process: the soak starts DDS inside the emulated drone's network namespace
    proc = subprocess.run([sys.executable, "bench/soak.py", "--minutes", "2", "--warmup-s", "30", "--window-s", "20",
                           "--burst", "2000", "--settle-s", "15"], cwd=ROOT, capture_output=True, text=True,
                          timeout=420)
    result = json.loads((ROOT / "bench" / "results" / "soak.json").read_text())
    report = "\n".join(proc.stdout.splitlines()[-12:])
    assert proc.returncode == 0, f"soak failed ({proc.returncode}):\n{report}\n{proc.stderr[-2000:]}"
    assert all(result["checks"].values()), report
    assert result["answered_by_source"].get("1", 0) > 0, f"the drone never used the cloud: {report}"
