"""Stress for a flight: a loaded flight computer (busy loops) and a drone that freezes at intervals."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading


def parse_stall(text: str) -> tuple[float, float] | None:
    """``--stall-drone MS@S`` as (stall seconds, period seconds); '' -> None."""
    if not text:
        return None
    ms, sep, period = text.partition("@")
    try:
        stall, every = float(ms) / 1e3, float(period)
    except ValueError:
        stall, every = -1.0, -1.0
    if not sep or not 0 < stall < every:
        raise ValueError(f"--stall-drone takes MS@S with 0 < MS/1000 < S, e.g. 300@2; got {text!r}")
    return stall, every


class CpuHogs:
    """``n`` busy-loop processes (a loaded flight computer), ended by pid."""

    def __init__(self, n: int):
        self.procs = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(n)]

    def close(self) -> None:
        for p in self.procs:
            p.kill()
            p.wait()
        self.procs = []


class DroneStaller:
    """Freezes a process group (SIGSTOP) for ``stall_s`` every ``period_s``: a drone computer that
    stops answering at intervals, so the controller acts on stale answers when it resumes."""

    def __init__(self, pgid: int, stall_s: float, period_s: float):
        self.pgid, self.stall_s, self.period_s = pgid, stall_s, period_s
        self.stalls = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="drone-staller", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(self.period_s - self.stall_s):
            try:
                os.killpg(self.pgid, signal.SIGSTOP)
                self.stalls += 1
                self._stop.wait(self.stall_s)
            finally:
                os.killpg(self.pgid, signal.SIGCONT)     # never leave it frozen (the teardown needs it)

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5.0)
