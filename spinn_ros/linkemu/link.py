"""A drone <-> cloud link between two network namespaces, with live rate/delay/loss/outage.

Layout (all created by ``EmulatedLink`` and removed again on exit; nothing touches the
host's own interfaces, routes or firewall)::

    netns <prefix>-drone                           netns <prefix>-cloud
    emu0 10.77.0.1/24  <======= veth pair =======>  emu0 10.77.0.2/24
    egress : tbf (rate)                             egress : tbf (rate)
    ingress: raw PREROUTING -> SPINN_LOSS (loss)   ingress: same
             filter INPUT  -> NFQUEUE (delay.py)             same

Rate is shaped on each sender's egress, loss and delay on each receiver's ingress, so
each direction gets ``rtt/2`` of delay, the configured loss and the configured rate.
"""
from __future__ import annotations

import atexit
import contextlib
import dataclasses
import functools
import ipaddress
import os
import shutil
import signal
import subprocess
import threading
import time
from dataclasses import dataclass
from typing import Sequence

from .delay import DelayController
from .netns import (
    SIDES,
    LinkEmuError,
    LinkEmuUnavailable,
    delete_netns,
    entered,
    list_netns,
    sh,
    sh_parallel,
)

DEV = "emu0"
LOSS_CHAIN = "SPINN_LOSS"
QUEUE_NUM = 7
IPTABLES_CANDIDATES = ("iptables", "iptables-legacy")  # nft backend first, legacy as fallback


@dataclass(frozen=True)
class LinkState:
    """What the link looks like in both directions at one moment."""

    rate_mbit: float  # each direction
    rtt_ms: float  # round trip: each direction is delayed rtt_ms / 2
    loss: float = 0.0  # drop probability, each direction
    jitter_ms: float = 0.0  # round trip: each direction adds uniform ± jitter_ms / 2
    up: bool = True
    reorder: bool = False  # let jitter reorder packets (otherwise a packet waits for earlier ones)

    def __post_init__(self):
        if self.rate_mbit <= 0:
            raise ValueError(f"rate_mbit must be > 0, got {self.rate_mbit}")
        if self.rtt_ms < 0 or self.jitter_ms < 0:
            raise ValueError(f"rtt_ms and jitter_ms must be >= 0, got {self.rtt_ms}, {self.jitter_ms}")
        if not 0.0 <= self.loss <= 1.0:
            raise ValueError(f"loss is a probability in [0, 1], got {self.loss}")


@dataclass(frozen=True)
class LinkEvent:
    """One applied change: ``t`` is time.monotonic() once the change was in place.

    CLOCK_MONOTONIC is shared by every process on the host (namespaces included), so
    other processes' monotonic timestamps can be compared with it directly.
    """

    t: float
    state: LinkState
    source: str = "set"  # "setup", "set", "outage", "restore", "trace", ...
    planned_t: float | None = None  # for trace steps: when it was due (monotonic)


def tbf_burst_bytes(rate_mbit: float) -> int:
    """1 ms worth of tokens, so timer granularity cannot cap high rates (12.5 KB at 100 Mbit/s),
    but at least two full frames, or frames could never pass; at low rates the line-rate bursts
    therefore stay at two frames (24 ms worth at 1 Mbit/s)."""
    return max(2 * 1514, int(rate_mbit * 1e6 / 8 * 1e-3))


def tbf_args(rate_mbit: float, queue_ms: float) -> list[str]:
    """tbf parameters for a rate: its burst (``tbf_burst_bytes``), and as latency the longest a
    packet may wait in the tbf queue (queue depth = rate x latency)."""
    return ["rate", f"{int(round(rate_mbit * 1000))}kbit", "burst", str(tbf_burst_bytes(rate_mbit)),
            "latency", f"{queue_ms:g}ms"]


# --------------------------------------------------------------------------- firewall rules
def ingress_rules(dev: str) -> str:
    """iptables-restore input: arriving packets go through the loss chain (raw PREROUTING,
    before conntrack) and then to the delay program's queue (INPUT). --queue-bypass lets
    packets pass undelayed instead of vanishing if the program is gone; check() notices."""
    return (f"*raw\n:{LOSS_CHAIN} - [0:0]\n-A PREROUTING -i {dev} -j {LOSS_CHAIN}\nCOMMIT\n"
            f"*filter\n-A INPUT -i {dev} -j NFQUEUE --queue-num {QUEUE_NUM} --queue-bypass\nCOMMIT\n")


def loss_rules(probability: float) -> str:
    """iptables-restore input replacing the loss chain in one transaction."""
    rule = ("" if probability <= 0.0 else f"-A {LOSS_CHAIN} -j DROP\n" if probability >= 1.0 else
            f"-A {LOSS_CHAIN} -m statistic --mode random --probability {probability:.6f} -j DROP\n")
    return f"*raw\n-F {LOSS_CHAIN}\n{rule}COMMIT\n"


def iptables_restore(ns: str, flavour: str) -> list[str]:
    """The command loading rules from stdin into a namespace's firewall, keeping what is there."""
    return ["ip", "netns", "exec", ns, f"{flavour}-restore", "--noflush", "-w"]


def restore_rules(netns: Sequence[str], flavour: str, rules: str) -> None:
    sh_parallel([iptables_restore(ns, flavour) for ns in netns], inputs=[rules] * len(netns))


# --------------------------------------------------------------------------- availability
@functools.lru_cache(maxsize=None)
def host_support() -> tuple[str | None, str]:
    """(problem, iptables flavour): problem is None when netns + veth + tbf + iptables
    (statistic, NFQUEUE) + NetfilterQueue all work here, otherwise a sentence saying what is
    missing. Probed once per process in a scratch namespace."""
    if os.geteuid() != 0:
        return f"not running as root (euid={os.geteuid()}): `ip netns add` needs root", ""
    for tool in ("ip", "tc"):
        if shutil.which(tool) is None:
            return f"`{tool}` not found (apt-get install iproute2; see scripts/install_system_deps.sh)", ""
    try:
        import netfilterqueue  # noqa: F401
    except ImportError as exc:
        return f"python package NetfilterQueue unavailable ({exc}); pip install '.[linkemu]' (or -r requirements.lock)", ""
    ns = f"spinnprobe{os.getpid()}"
    try:
        sh(["ip", "netns", "add", ns])
        sh(["ip", "-n", ns, "link", "add", "p0", "type", "veth", "peer", "name", "p1"])
        sh(["tc", "-n", ns, "qdisc", "replace", "dev", "p0", "root", "tbf", *tbf_args(5, 100)])
        return None, pick_iptables(ns)
    except LinkEmuError as exc:
        return str(exc), ""
    finally:
        try:
            delete_netns(ns)
        except LinkEmuError:
            pass


def pick_iptables(ns: str) -> str:
    """The first iptables flavour (nft backend, then legacy) that loads our rules in ``ns``."""
    errors = []
    for flavour in IPTABLES_CANDIDATES:
        try:
            restore_rules([ns], flavour, ingress_rules("p0"))
            restore_rules([ns], flavour, loss_rules(0.5))
            return flavour
        except LinkEmuError as exc:
            errors.append(str(exc))
    raise LinkEmuUnavailable("no iptables flavour can load the rules (statistic + NFQUEUE) in a netns:\n"
                             + "\n".join(errors))


def link_emulation_problem() -> str | None:
    return host_support()[0]


# --------------------------------------------------------------------------- the link
class EmulatedLink:
    """Two namespaces joined by a shaped veth pair; use as a context manager.

    >>> with EmulatedLink(prefix="spinn", rate_mbit=100, rtt_ms=10) as link:
    ...     p = link.popen("cloud", ["python", "server.py", link.cloud_ip])
    ...     link.set(rate_mbit=2)
    ...     link.outage(); link.restore()
    ...     link.play(Trace.load("trace.yaml")).join()
    """

    def __init__(self, prefix: str = "spinn", rate_mbit: float = 100.0, rtt_ms: float = 10.0,
                 loss: float = 0.0, jitter_ms: float = 0.0, *, subnet: str = "10.77.0.0/24",
                 queue_ms: float = 200.0, outage_mode: str = "down", reorder: bool = False):
        net = ipaddress.ip_network(subnet)
        self.prefix = prefix
        self.netns = {side: f"{prefix}-{side}" for side in SIDES}
        self.ips = {"drone": str(net.network_address + 1), "cloud": str(net.network_address + 2)}
        self.prefixlen = net.prefixlen
        self.queue_ms = queue_ms
        self.state = LinkState(rate_mbit, rtt_ms, loss, jitter_ms, reorder=reorder)
        self.outage_mode = outage_mode
        self.iptables = ""  # flavour picked by host_support() when the link opens
        self._delays: dict[str, DelayController] = {}
        self._procs: list[subprocess.Popen] = []
        self._events: list[LinkEvent] = []
        self._lock = threading.RLock()
        self._player = None
        self._open = False

    # -- addresses and names
    @property
    def drone_ip(self) -> str:
        return self.ips["drone"]

    @property
    def cloud_ip(self) -> str:
        return self.ips["cloud"]

    @property
    def events(self) -> list[LinkEvent]:
        with self._lock:
            return list(self._events)

    @property
    def outage_mode(self) -> str:
        """'down': both interfaces down (senders see ENETUNREACH at once);
        'drop': blackhole, every packet dropped (senders only notice by timeouts)."""
        return self._outage_mode

    @outage_mode.setter
    def outage_mode(self, mode: str) -> None:
        if mode not in ("down", "drop"):
            raise ValueError(f"outage_mode is 'down' (link down) or 'drop' (blackhole), got {mode!r}")
        if not self.state.up:
            raise LinkEmuError("cannot change outage_mode during an outage; restore() first")
        self._outage_mode = mode

    def ns(self, side: str) -> str:
        if side not in self.netns:
            raise ValueError(f"side must be one of {SIDES}, got {side!r}")
        return self.netns[side]

    # -- lifecycle
    def __enter__(self) -> "EmulatedLink":
        self.open()
        return self

    def __exit__(self, exc_type, exc, tb) -> bool:
        self.close(raise_errors=exc_type is None)
        return False

    def open(self) -> None:
        problem, self.iptables = host_support()
        if problem:
            raise LinkEmuUnavailable(f"link emulation unavailable: {problem}")
        self.cleanup_leftovers()
        atexit.register(self.close, raise_errors=False)
        self._open = True
        try:
            self._create_topology()
            # Each delay program binds its queue before any packet is sent to it.
            self._delays = {side: DelayController(self.ns(side), QUEUE_NUM) for side in SIDES}
            restore_rules(list(self.netns.values()), self.iptables, ingress_rules(DEV))
            self._apply(self.state, previous=None, source="setup")
        except BaseException:
            self.close(raise_errors=False)
            raise

    def close(self, raise_errors: bool = True) -> None:
        """Idempotent teardown: trace player, processes, delay programs, namespaces."""
        if not self._open:
            return
        self._open = False
        atexit.unregister(self.close)
        # Every step runs even if an earlier one failed: namespaces must never be left behind.
        steps = [self.stop_trace, *(lambda p=p: terminate(p) for p in self._procs),
                 *(ctl.stop for ctl in self._delays.values()),
                 *(lambda n=n: delete_netns(n) for n in self.netns.values())]
        errors = []
        for step in steps:
            try:
                step()
            except Exception as exc:  # noqa: BLE001 - reported below
                errors.append(f"{type(exc).__name__}: {exc}")
        self._delays.clear()
        leftovers = [name for name in self.netns.values() if name in list_netns()]
        if leftovers:
            errors.append(f"namespaces still present after teardown: {leftovers}")
        if errors and raise_errors:
            raise LinkEmuError("teardown incomplete:\n" + "\n".join(errors))

    def cleanup_leftovers(self) -> None:
        """Remove this prefix's namespaces (and their processes) left by a crashed run."""
        for name in self.netns.values():
            delete_netns(name)

    def _create_topology(self) -> None:
        drone, cloud = self.ns("drone"), self.ns("cloud")
        for name in (drone, cloud):
            sh(["ip", "netns", "add", name])
        # Both ends are created straight inside the namespaces: the host never sees them.
        sh(["ip", "link", "add", DEV, "netns", drone, "type", "veth", "peer", "name", DEV, "netns", cloud])
        for side in SIDES:
            ns = self.ns(side)
            sh(["ip", "-n", ns, "addr", "add", f"{self.ips[side]}/{self.prefixlen}", "dev", DEV])
            sh(["ip", "-n", ns, "link", "set", "lo", "up"])
            sh(["ip", "-n", ns, "link", "set", DEV, "up"])

    # -- running things inside the namespaces
    def command(self, side: str, argv: Sequence[str]) -> list[str]:
        return ["ip", "netns", "exec", self.ns(side), *argv]

    def popen(self, side: str, argv: Sequence[str], env: dict | None = None, **kwargs) -> subprocess.Popen:
        """Start ``argv`` in a side's namespace with this environment (plus ``env``).

        The process gets its own process group, killed on teardown."""
        kwargs.setdefault("start_new_session", True)
        proc = subprocess.Popen(self.command(side, argv), env={**os.environ, **(env or {})}, **kwargs)
        self._procs.append(proc)
        return proc

    @contextlib.contextmanager
    def enter(self, side: str):
        """Move the calling thread into a side's namespace for the ``with`` block.

        Threads and processes it starts meanwhile stay in that namespace (they inherit
        it), so a test can be "on the drone": its rclpy context and the nodes it spawns
        share the drone's loopback for DDS while Zenoh reaches the cloud over the veth.
        """
        with entered(self.ns(side)):
            yield self

    def run(self, side: str, argv: Sequence[str], timeout: float = 30.0, env: dict | None = None,
            check: bool = False) -> subprocess.CompletedProcess:
        """Run to completion (bounded by ``timeout``) in a side's namespace, capturing output."""
        return sh(self.command(side, argv), check=check, timeout=timeout, env={**os.environ, **(env or {})})

    # -- live changes
    def set(self, *, rate_mbit: float | None = None, rtt_ms: float | None = None, loss: float | None = None,
            jitter_ms: float | None = None, reorder: bool | None = None) -> LinkEvent:
        """Change some parameters now (both directions); the event says when it took effect."""
        changes = {k: v for k, v in dict(rate_mbit=rate_mbit, rtt_ms=rtt_ms, loss=loss, jitter_ms=jitter_ms,
                                         reorder=reorder).items() if v is not None}
        with self._lock:
            return self.apply(dataclasses.replace(self.state, **changes), source="set")

    def outage(self) -> LinkEvent:
        """Cut the link (``outage_mode``: 'down' = interfaces down, 'drop' = blackhole)."""
        with self._lock:
            return self.apply(dataclasses.replace(self.state, up=False), source="outage")

    def restore(self) -> LinkEvent:
        with self._lock:
            return self.apply(dataclasses.replace(self.state, up=True), source="restore")

    def apply(self, state: LinkState, source: str = "set", planned_t: float | None = None) -> LinkEvent:
        """Make the link look like ``state``, touching only what changed; logs the event."""
        with self._lock:
            self._require_open()
            return self._apply(state, previous=self.state, source=source, planned_t=planned_t)

    def _apply(self, state: LinkState, previous: LinkState | None, source: str,
               planned_t: float | None = None) -> LinkEvent:
        def changed(*fields: str) -> bool:
            return previous is None or any(getattr(previous, f) != getattr(state, f) for f in fields)

        # All commands of one change run at once: a change costs one process start, not six.
        commands: list[tuple[list[str], str | None]] = []
        for ns in self.netns.values():
            if changed("rate_mbit"):
                commands.append((["tc", "-n", ns, "qdisc", "replace", "dev", DEV, "root", "tbf",
                                  *tbf_args(state.rate_mbit, self.queue_ms)], None))
            if changed("loss", "up"):
                blackhole = not state.up and self.outage_mode == "drop"
                commands.append((iptables_restore(ns, self.iptables), loss_rules(1.0 if blackhole else state.loss)))
            if changed("up") and self.outage_mode == "down":
                commands.append((["ip", "-n", ns, "link", "set", DEV, "up" if state.up else "down"], None))
        if commands:
            sh_parallel([argv for argv, _ in commands], inputs=[data for _, data in commands])
        if changed("rtt_ms", "jitter_ms", "reorder"):
            for side in SIDES:
                self._delay(side).set(state.rtt_ms / 2, state.jitter_ms / 2, state.reorder)
        self.state = state
        event = LinkEvent(time.monotonic(), state, source, planned_t)
        self._events.append(event)
        return event

    def _delay(self, side: str) -> DelayController:
        ctl = self._delays[side]
        if not ctl.alive:
            raise LinkEmuError(f"delay program for {side} died: rc={ctl.proc.returncode}")
        return ctl

    def _require_open(self) -> None:
        if not self._open:
            raise LinkEmuError("the link is not open (use it inside `with EmulatedLink(...)`)")

    def check(self) -> None:
        """Raise if a delay program died (packets would then pass undelayed)."""
        for side in SIDES:
            self._delay(side)

    def delay_stats(self) -> dict[str, dict]:
        """Per receiving side: packets, max held, release lag (mean/max ms) - emulator health."""
        return {side: self._delay(side).stats() for side in SIDES}

    # -- traces
    def play(self, trace, *, time_scale: float = 1.0):
        """Start playing a Trace (or a trace YAML path) on a background thread; returns the
        started TracePlayer (``.wait()`` for it, ``.events`` for what was applied when)."""
        from .trace import Trace, TracePlayer

        if not isinstance(trace, Trace):
            trace = Trace.load(trace)
        self._require_open()
        self.stop_trace()
        self._player = TracePlayer(self, trace, time_scale=time_scale)
        self._player.start()
        return self._player

    def stop_trace(self) -> None:
        if self._player is not None:
            self._player.stop()
            self._player = None


def terminate(proc: subprocess.Popen, grace_s: float = 3.0) -> None:
    """SIGTERM ``proc`` (its whole group when it leads one), then SIGKILL if it lingers."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        if proc.poll() is not None:
            return
        try:
            if os.getpgid(proc.pid) == proc.pid:
                os.killpg(proc.pid, sig)  # also reaches children of a shell or launcher
            else:
                proc.send_signal(sig)
        except ProcessLookupError:
            pass
        try:
            proc.wait(grace_s)
        except subprocess.TimeoutExpired:
            pass
