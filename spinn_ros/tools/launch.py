"""``spinn launch <system> [name:=value ...]``: ``ros2 launch`` for machines without it.

Starts the nodes of ``launch_spec.SYSTEMS[system]`` (the same specs the launch files
use, so the same params files and remappings) as child processes, prefixes their
output with the node name, and on Ctrl-C / SIGTERM stops them all with SIGINT
(then SIGTERM, SIGKILL) so each node shuts down cleanly. If a node exits with an
error the others are stopped too and its status is returned.

    spinn launch drone namespace:=drone1 camera_topic:=/camera/image_raw use_sim_time:=true
"""
from __future__ import annotations

import argparse
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from typing import Callable, TextIO

from . import launch_spec
from .launch_spec import NodeSpec

#: the line before the native stacks of a node that would not stop on SIGINT
NATIVE_STACKS = "native stacks at the shutdown's grace expiry"


def native_stacks(pid: int, timeout_s: float = 60.0) -> str | None:
    """Every thread's native backtrace of a live process, by gdb in batch mode (None: no gdb, or it
    failed). Attaching interrupts the process's blocking calls, which may end a hang: this is for
    a process about to be killed anyway."""
    gdb = shutil.which("gdb")
    if gdb is None:
        return None
    try:
        out = subprocess.run([gdb, "-p", str(pid), "-batch", "-nx", "-ex", "thread apply all bt"],
                             capture_output=True, text=True, timeout=timeout_s, stdin=subprocess.DEVNULL)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out.stdout if out.returncode == 0 and "Thread" in out.stdout else None


class ChildProcess:
    """A child process in its own process group, its output collected line by line."""

    def __init__(self, name: str, argv: list[str], env: dict | None = None, sink: Callable[[str], None] | None = None,
                 cwd: str | None = None):
        self.name = name
        self.lines: list[str] = []
        self._sink = sink
        self.proc = subprocess.Popen(
            argv, env={**os.environ, **(env or {})}, stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, text=True, bufsize=1, start_new_session=True,
            cwd=cwd)
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        for line in self.proc.stdout:  # type: ignore[union-attr]
            line = line.rstrip("\n")
            self.lines.append(line)
            if self._sink:
                self._sink(f"[{self.name}] {line}")

    @property
    def output(self) -> str:
        return "\n".join(self.lines)

    def poll(self) -> int | None:
        return self.proc.poll()

    def wait(self, timeout: float | None = None) -> int:
        code = self.proc.wait(timeout)
        self._reader.join(timeout=2.0)
        return code

    def stop(self, grace_s: float = 10.0) -> int:
        """SIGINT (clean ROS shutdown), then SIGTERM, then SIGKILL; returns the exit status. A node
        still alive after the SIGINT's grace gets its native stacks in its output first (gdb, if
        installed): the node's own faulthandler dump shows only Python frames."""
        for sig, wait_s in ((signal.SIGINT, grace_s), (signal.SIGTERM, 3.0), (signal.SIGKILL, 3.0)):
            if self.proc.poll() is not None:
                break
            if sig == signal.SIGTERM:       # the grace is over: note where it is stuck, once
                self._note_native_stacks()
            try:
                os.killpg(self.proc.pid, sig)
            except ProcessLookupError:
                break
            try:
                self.proc.wait(wait_s)
            except subprocess.TimeoutExpired:
                continue
        return self.wait()

    def _note_native_stacks(self) -> None:
        stacks = native_stacks(self.proc.pid)
        self.lines.append(f"{NATIVE_STACKS} (pid {self.proc.pid}):")
        self.lines.extend(stacks.splitlines() if stacks else ["  (gdb not installed or it could not attach)"])

    def kill(self) -> int:
        """SIGKILL: a crash, not a shutdown."""
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
        return self.wait()


class NodeProcess(ChildProcess):
    """One ROS node (from its launch spec) as a child process."""

    def __init__(self, spec: NodeSpec, env: dict | None = None, sink: Callable[[str], None] | None = None,
                 python: str = sys.executable):
        self.spec = spec
        super().__init__(spec.name, spec.command(python), env, sink)


class ProcessGroup:
    """Several nodes started together and always stopped together."""

    def __init__(self, specs: list[NodeSpec], env: dict | None = None, out: TextIO | None = sys.stdout):
        self.procs: list[NodeProcess] = []
        sink = (lambda line: print(line, file=out, flush=True)) if out else None
        try:
            for spec in specs:
                self.procs.append(NodeProcess(spec, env, sink))
        except BaseException:
            self.stop()
            raise

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.stop()

    def failed(self) -> NodeProcess | None:
        return next((p for p in self.procs if p.poll() not in (None, 0)), None)

    def stop(self) -> dict[str, int]:
        return {p.name: p.stop() for p in self.procs}


def parse_launch_args(pairs: list[str]) -> dict[str, str]:
    """``name:=value`` pairs, as ros2 launch takes them."""
    values = {}
    for pair in pairs:
        name, sep, value = pair.partition(":=")
        if not sep or not name:
            raise ValueError(f"launch arguments are name:=value, got {pair!r}")
        values[name] = value
    return values


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="spinn launch", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("system", choices=sorted(launch_spec.SYSTEMS))
    ap.add_argument("args", nargs="*", help="launch arguments name:=value (as for ros2 launch)")
    ap.add_argument("--print", action="store_true", help="print the node command lines and exit")
    opts = ap.parse_args(argv)
    try:
        specs = launch_spec.specs_from_strings(opts.system, parse_launch_args(opts.args))
    except (ValueError, FileNotFoundError) as exc:
        ap.error(str(exc))
    if opts.print:
        for spec in specs:
            print(" ".join(spec.command()))
        return 0
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    group = ProcessGroup(specs, env=launch_spec.transport_environment())
    try:
        while not stop.is_set() and any(p.poll() is None for p in group.procs):
            bad = group.failed()
            if bad:
                print(f"[launch] {bad.name} exited with status {bad.poll()}; stopping the others", flush=True)
                break
            time.sleep(0.2)
    except KeyboardInterrupt:
        pass
    codes = group.stop()
    return max(codes.values(), default=0)


if __name__ == "__main__":
    sys.exit(main())
