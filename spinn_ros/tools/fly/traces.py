"""The flight's link traces: the built-in ones and trace files, timed from take-off."""
from __future__ import annotations

import dataclasses
from pathlib import Path

from ...linkemu import Trace

#: the link before and after every built-in trace's events
GOOD_LINK = {"rate_mbit": 50.0, "rtt_ms": 10.0, "loss": 0.0, "jitter_ms": 0.0}

#: built-in link traces, timed from take-off (the first command); the link starts as GOOD_LINK
TRACES = {
    "outage": {"name": "outage", "segments": [
        {"kind": "step", "duration_s": 1.5, **GOOD_LINK},
        {"kind": "outage", "duration_s": 3.0},
        {"kind": "step", "duration_s": 1.0, **GOOD_LINK}]},
    "degrade": {"name": "degrade", "segments": [
        {"kind": "step", "duration_s": 1.0, **GOOD_LINK},
        {"kind": "ramp", "duration_s": 2.0, "rate_mbit": [50.0, 0.3], "rtt_ms": [10.0, 300.0], "loss": [0.0, 0.05],
         "step_s": 0.5},
        {"kind": "step", "duration_s": 1.5, "rate_mbit": 0.3, "rtt_ms": 300.0, "loss": 0.05},
        {"kind": "step", "duration_s": 1.0, **GOOD_LINK}]},
    "flapping": {"name": "flapping", "segments": [
        {"kind": "step", "duration_s": 2.0, **GOOD_LINK},
        {"kind": "flapping", "duration_s": 6.0, "up_s": 1.0, "down_s": 0.5},
        {"kind": "step", "duration_s": 1.0, **GOOD_LINK}]},
}


def load_trace(name: str):
    """None for 'none', else a linkemu Trace (built-in name or YAML file)."""
    if name == "none":
        return None
    if name in TRACES:
        return Trace.from_obj(TRACES[name])
    path = Path(name)
    if not path.is_file():
        raise ValueError(f"--trace {name!r}: not one of none, {', '.join(TRACES)} and not a file")
    return Trace.load(path)


def from_takeoff(trace, late_s: float):
    """The trace as if started at take-off, ``late_s`` ago: its first segment, when a step long enough,
    shortened by that much (this process notices the first command a moment after it arrived)."""
    first = trace.segments[0]
    if late_s <= 0 or first.kind != "step" or first.duration_s <= late_s + 0.1:
        return trace
    return dataclasses.replace(trace, segments=(dataclasses.replace(first, duration_s=first.duration_s - late_s),
                                                *trace.segments[1:]))


