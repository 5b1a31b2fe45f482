"""Drone <-> cloud link emulation for tests and benchmarks (root only; see docs/link-emulation.md).

Two network namespaces joined by a veth pair whose rate (tbf), one-way delay and jitter
(NFQUEUE + delay.py), loss (iptables statistic) and outages (link down or blackhole)
change live or follow a scripted Trace.
"""
from .link import (
    EmulatedLink,
    LinkEmuError,
    LinkEmuUnavailable,
    LinkEvent,
    LinkState,
    link_emulation_problem,
)
from .netns import NetnsSwitch, entered, pid_prefix, remove_stale
from .trace import Segment, Trace, TracePlayer, TraceStep

__all__ = [
    "EmulatedLink", "NetnsSwitch", "entered", "LinkEmuError", "LinkEmuUnavailable", "LinkEvent", "LinkState", "Segment",
    "Trace", "TracePlayer", "TraceStep", "link_emulation_problem", "pid_prefix", "remove_stale"]
