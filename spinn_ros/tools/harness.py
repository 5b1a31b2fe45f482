"""Real ROS 2 across processes for tests and benchmarks: a per-run domain, nodes as child processes,
an in-test rclpy node spinning in the background, discovery waits instead of sleeps,
and a teardown that leaves no process and no FastDDS shared-memory file behind."""
from __future__ import annotations

import fcntl
import os
import re
import tempfile
import threading
from pathlib import Path

import rclpy
from rclpy.context import Context
from rclpy.executors import SingleThreadedExecutor
from rclpy.node import Node

from spinn_ros.tools.launch import ChildProcess, NodeProcess
from spinn_ros.tools.launch_spec import NodeSpec, transport_environment
from spinn_ros.tools.waiting import wait_until

SHM = Path("/dev/shm")

#: network namespaces this process has started DDS participants in (see dds_started)
_DDS_NETNS: set[str] = set()


def note_dds_start() -> None:
    """Record that this thread's network namespace now holds a DDS participant of this process."""
    _DDS_NETNS.add(os.readlink("/proc/thread-self/ns/net"))


def dds_started() -> bool:
    """Whether this process has started DDS before. FastDDS fixes a process's host identity
    (hashed from the network namespace's addresses) at its first participant and drops
    loopback locators of participants that look like another host: a process that started
    DDS in one namespace cannot then talk DDS to processes in another. Tests that enter a
    namespace run in a fresh process when this is true (test/conftest.py)."""
    return bool(_DDS_NETNS)


#: lock files that reserve a ROS domain for one process (any checkout, any user of this machine's /tmp)
DOMAIN_LOCKS = Path(tempfile.gettempdir()) / "spinn_ros-ros-domains"
FIRST_DOMAIN, DOMAINS = 10, 90          # 10..99: clear of the default 0, and DDS ports stay valid (<= 232)
_domain: tuple[int, int] | None = None          # (domain, its lock file's fd, held open for this process's life)


def domain_id_for_run() -> int:
    """This process's own ROS domain, so parallel runs (tests, flights, benchmarks of any checkout)
    never meet: the first free one from ``10 + pid % 90``. A domain is free when its lock file is
    not held (the lock lasts as long as this process) and no live process holds FastDDS ports of it
    (another program on the domain). The same domain for every call in one process."""
    global _domain
    if _domain is None:
        _domain = _reserve_domain(FIRST_DOMAIN + os.getpid() % DOMAINS)
    return _domain[0]


def _reserve_domain(preferred: int) -> tuple[int, int]:
    _shared_dir(DOMAIN_LOCKS)
    in_use = shm_files_in_use()           # one scan of /proc for every candidate
    for i in range(DOMAINS):
        domain = FIRST_DOMAIN + (preferred - FIRST_DOMAIN + i) % DOMAINS
        try:
            fd = os.open(DOMAIN_LOCKS / f"{domain}.lock", os.O_RDWR | os.O_CREAT, 0o666)
        except OSError:
            continue                      # another user's lock file we may not open: theirs
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)
            continue
        if domain_port_files(in_use, domain):
            os.close(fd)                  # (closing releases the lock)
            continue
        return domain, fd
    raise RuntimeError(f"no free ROS domain in {FIRST_DOMAIN}..{FIRST_DOMAIN + DOMAINS - 1} "
                       f"(every one locked in {DOMAIN_LOCKS} or in use)")


def _shared_dir(path: Path) -> None:
    """A directory every user of the machine can add lock files to (sticky, like /tmp)."""
    try:
        path.mkdir(parents=True)
        path.chmod(0o1777)
    except FileExistsError:
        pass


def domain_port_files(names, domain: int) -> set[str]:
    """The FastDDS shared-memory files among ``names`` that belong to ROS domain ``domain``: its
    ports are its UDP ports, 7400 + 250 * domain + 0..249 (port files and their mutexes)."""
    lo = 7400 + 250 * domain
    ours = set()
    for name in names:
        m = re.fullmatch(r"(?:sem\.)?fast(?:dds|rtps)_port(\d+)(?:_mutex)?", name)
        if m and lo <= int(m.group(1)) < lo + 250:
            ours.add(name)
    return ours


def fastdds_shm_files() -> set[str]:
    return {p.name for p in SHM.glob("*") if "fastdds" in p.name or "fastrtps" in p.name} if SHM.is_dir() else set()


def shm_files_in_use() -> set[str]:
    """/dev/shm names some live process has open or mapped (other programs on the machine too)."""
    used = set()
    for proc in Path("/proc").glob("[0-9]*"):
        try:
            for fd in (proc / "fd").iterdir():
                target = os.readlink(fd)
                if target.startswith("/dev/shm/"):
                    used.add(target[len("/dev/shm/"):])
            for line in (proc / "maps").read_text().splitlines():
                idx = line.find("/dev/shm/")
                if idx >= 0:
                    used.add(line[idx + len("/dev/shm/"):].split(" ")[0])
        except OSError:
            continue        # the process ended while we looked, or is not ours to read
    return used


def orphaned_shm_files(before: set[str]) -> set[str]:
    """FastDDS files created since ``before`` that no live process holds: what a dead node left.

    FastDDS keeps port files open while a participant lives, so files that belong to
    unrelated programs still running (another test run, a developer's nodes) are not
    counted. Its named semaphores are never held open, so they are judged by their port file.
    """
    new = fastdds_shm_files() - before
    if not new:
        return set()
    used = shm_files_in_use()
    orphans = set()
    for name in new:
        holder = name
        if name.startswith("sem.") and name.endswith("_mutex"):
            holder = name[len("sem."):-len("_mutex")]
        if holder not in used:
            orphans.add(name)
    return orphans


def remove_domain_leftovers(before: set[str], domain: int) -> list[str]:
    """Remove what FastDDS left of ``domain`` since ``before`` that no live process holds; call
    it once every participant of the run has exited cleanly. (One way FastDDS leaves such a
    file: the last process to close a port skips the unlink when the port was marked not ok.
    Its own remedy, ``fastdds shm clean``, removes every unheld one: this, only our domain's.)"""
    removed = []
    for name in sorted(domain_port_files(orphaned_shm_files(before), domain)):
        try:
            (SHM / name).unlink()
            removed.append(name)
        except FileNotFoundError:
            pass
    return removed


class RosHarness:
    def __init__(self, domain_id: int):
        self.domain_id = domain_id
        self.env = {
            "ROS_DOMAIN_ID": str(domain_id),
            "ROS_AUTOMATIC_DISCOVERY_RANGE": "LOCALHOST",
            "PYTHONUNBUFFERED": "1",
            "RCUTILS_LOGGING_BUFFERED_STREAM": "0",
            **transport_environment(),          # as the launch files run the nodes
        }
        os.environ.update(self.env)
        self.context = Context()
        note_dds_start()
        rclpy.init(context=self.context, domain_id=domain_id)
        self.node = Node("spinn_test", context=self.context)
        self.executor = SingleThreadedExecutor(context=self.context)
        self.executor.add_node(self.node)
        self._spinner = threading.Thread(target=self._spin, daemon=True)
        self._spinner.start()
        self.procs: list[ChildProcess] = []

    def _spin(self) -> None:
        try:
            self.executor.spin()
        except Exception:  # noqa: BLE001 - the context is shut down at teardown
            pass

    def start(self, spec: NodeSpec) -> NodeProcess:
        proc = NodeProcess(spec, env=self.env, sink=None)
        self.procs.append(proc)
        return proc

    def start_command(self, name: str, argv: list[str]) -> ChildProcess:
        """A non-ROS child (e.g. the ROS-free cloud server) with this run's environment."""
        proc = ChildProcess(name, argv, env=self.env, sink=None)
        self.procs.append(proc)
        return proc

    def run_to_exit(self, spec: NodeSpec, timeout: float = 60.0) -> tuple[int, str]:
        """Run a node expected to exit on its own (e.g. refusing its parameters)."""
        proc = NodeProcess(spec, env=self.env, sink=None)
        try:
            code = proc.wait(timeout)
        finally:
            proc.stop()
        return code, proc.output

    def wait_matched(self, endpoint, count: int = 1, timeout: float = 20.0) -> None:
        """Wait until a publisher has ``count`` subscribers (or a subscription that many publishers)."""
        if hasattr(endpoint, "get_subscription_count"):
            wait_until(lambda: endpoint.get_subscription_count() >= count, timeout,
                       f"{count} subscriber(s) on {endpoint.topic_name}")
        else:
            wait_until(lambda: endpoint.get_publisher_count() >= count, timeout,
                       f"{count} publisher(s) on {endpoint.topic_name}")

    def close(self) -> dict[str, int]:
        codes = {p.name: p.stop() for p in self.procs}
        self.unclean_output = {p.name: "\n".join(p.lines[-25:]) for p in self.procs if codes[p.name] != 0}
        self.executor.shutdown()
        self.node.destroy_node()
        rclpy.try_shutdown(context=self.context)
        self._spinner.join(timeout=5.0)
        return codes
