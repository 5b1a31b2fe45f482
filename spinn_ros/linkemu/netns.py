"""Network namespaces: the commands run in them, creating and removing them, and moving a
thread into one. The one home for setns(2) in the package (the link, the flight tool and the
tests all enter a side of the emulated link through it)."""
from __future__ import annotations

import contextlib
import ctypes
import os
import re
import shlex
import signal
import subprocess
import time
from typing import Sequence

#: the two ends of an emulated link, each its own namespace ``<prefix>-<side>``
SIDES = ("drone", "cloud")
CMD_TIMEOUT_S = 15.0


class LinkEmuError(RuntimeError):
    """A command needed for link emulation failed; the message shows the command and stderr."""


class LinkEmuUnavailable(LinkEmuError):
    """This machine (or user) cannot emulate links: not root, or a kernel feature is missing."""


# --------------------------------------------------------------------------- commands
def sh(argv: Sequence[str], *, check: bool = True, timeout: float = CMD_TIMEOUT_S,
       env: dict | None = None) -> subprocess.CompletedProcess:
    """Run a command, capturing output; on failure (with ``check``) raise LinkEmuError naming
    the command and its stderr."""
    return sh_parallel([argv], check=check, timeout=timeout, env=env)[0]


def sh_parallel(commands: Sequence[Sequence[str]], *, check: bool = True, timeout: float = CMD_TIMEOUT_S,
                env: dict | None = None, inputs: Sequence[str | None] | None = None
                ) -> list[subprocess.CompletedProcess]:
    """Run commands concurrently (one per namespace: a change then costs one process start,
    not two) and collect them like ``sh``."""
    procs = []
    try:
        for argv in commands:
            procs.append(subprocess.Popen(list(argv), stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                          stderr=subprocess.PIPE, text=True, env=env))
        deadline = time.monotonic() + timeout
        results = []
        for proc, data in zip(procs, inputs or [None] * len(procs)):
            out, err = proc.communicate(data, timeout=max(0.0, deadline - time.monotonic()))
            results.append(subprocess.CompletedProcess(proc.args, proc.returncode, out, err))
    except FileNotFoundError as exc:
        raise LinkEmuUnavailable(f"command not found: {exc.filename} (run scripts/install_system_deps.sh)") from exc
    except subprocess.TimeoutExpired as exc:
        raise LinkEmuError(f"command timed out after {timeout} s: {shlex.join(exc.cmd)}") from exc
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    failed = [r for r in results if r.returncode != 0]
    if check and failed:
        raise LinkEmuError("\n".join(f"command failed (rc={r.returncode}): {shlex.join(r.args)}\n{r.stderr.strip()}"
                                     for r in failed))
    return results


def list_netns() -> list[str]:
    return [line.split(" ", 1)[0] for line in sh(["ip", "netns", "list"]).stdout.splitlines() if line]


def pid_prefix(base: str = "spinn") -> str:
    """A prefix unique to this process (``spinn12345``) so concurrent runs never collide;
    ``remove_stale(base)`` later removes what a killed process left behind."""
    return f"{base}{os.getpid()}"


def remove_stale(base: str = "spinn") -> list[str]:
    """Delete ``<base><pid>-drone|cloud`` namespaces whose owning process is gone."""
    pattern = re.compile(rf"^{re.escape(base)}(\d+)-({'|'.join(SIDES)})$")
    stale = [name for name in list_netns()
             if (m := pattern.match(name)) and not os.path.exists(f"/proc/{m.group(1)}")]
    for name in stale:
        delete_netns(name)
    return stale


def kill_netns_processes(name: str) -> list[int]:
    """SIGKILL whatever still runs in a namespace we own (e.g. left by a crashed run)."""
    pids = [int(p) for p in sh(["ip", "netns", "pids", name], check=False).stdout.split()]
    for pid in pids:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    return pids


def delete_netns(name: str) -> None:
    """Idempotent: kill its processes, then delete it (its veth end and firewall go with it)."""
    if name not in list_netns():
        return
    kill_netns_processes(name)
    sh(["ip", "netns", "del", name])


_CLONE_NEWNET = 0x40000000


def _setns(fd: int) -> None:
    """setns(2) on the calling thread (os.setns arrives only in Python 3.12)."""
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.setns(fd, _CLONE_NEWNET) != 0:
        err = ctypes.get_errno()
        raise LinkEmuError(f"setns failed: {os.strerror(err)}")


class NetnsSwitch:
    """Move the calling thread, and so every process and thread it starts from now on, into the
    named network namespace; ``leave()`` moves it back. Only the calling thread moves."""

    def __init__(self, name: str):
        self.name = name
        self._home = os.open("/proc/thread-self/ns/net", os.O_RDONLY)
        target = os.open(f"/var/run/netns/{name}", os.O_RDONLY)
        try:
            _setns(target)
        except BaseException:
            os.close(self._home)
            raise
        finally:
            os.close(target)

    def leave(self) -> None:
        if self._home >= 0:
            _setns(self._home)
            os.close(self._home)
            self._home = -1


@contextlib.contextmanager
def entered(name: str):
    """The calling thread in namespace ``name`` for the ``with`` block (see NetnsSwitch)."""
    switch = NetnsSwitch(name)
    try:
        yield switch
    finally:
        switch.leave()
