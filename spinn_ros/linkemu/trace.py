"""Scripted link traces (step, ramp, flapping, outage) and a thread that plays them.

YAML (a mapping with ``segments``, or just the list)::

    name: handover
    segments:
      - {kind: step,     duration_s: 3, rate_mbit: 20, rtt_ms: 50, loss: 0.0}
      - {kind: ramp,     duration_s: 5, rate_mbit: [20, 2], step_s: 0.25}   # or rate_mbit: 2 (from current)
      - {kind: flapping, duration_s: 6, up_s: 1.5, down_s: 0.5, rate_mbit: 5}
      - {kind: outage,   duration_s: 2}

Fields a segment leaves out keep their previous value. In a ramp any of the link fields
may be ``[from, to]`` (a scalar means "from the current value to this"); the ramp is
applied in ``step_s`` steps, the first at ``from`` and the last at ``to``. Flapping starts
up; flapping and outage segments end with the link up again.
"""
from __future__ import annotations

import dataclasses
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from .link import LinkEvent, LinkState

LINK_FIELDS = ("rate_mbit", "rtt_ms", "loss", "jitter_ms")
SEGMENT_KEYS = {
    "step": {"duration_s", *LINK_FIELDS},
    "ramp": {"duration_s", "step_s", *LINK_FIELDS},
    "flapping": {"duration_s", "up_s", "down_s", *LINK_FIELDS},
    "outage": {"duration_s"},
}


@dataclass(frozen=True)
class Segment:
    kind: str
    duration_s: float
    values: dict = field(default_factory=dict)  # link field -> value, or (from, to) in a ramp
    step_s: float = 0.5
    up_s: float = 1.0
    down_s: float = 1.0

    @classmethod
    def from_dict(cls, spec: dict, index: int = 0) -> "Segment":
        spec = dict(spec)
        kind = spec.pop("kind", None)
        where = f"trace segment {index} ({kind!r})"
        if kind not in SEGMENT_KEYS:
            raise ValueError(f"{where}: kind must be one of {sorted(SEGMENT_KEYS)}")
        unknown = set(spec) - SEGMENT_KEYS[kind]
        if unknown:
            raise ValueError(f"{where}: unknown keys {sorted(unknown)}; allowed {sorted(SEGMENT_KEYS[kind])}")
        if float(spec.get("duration_s", 0)) <= 0:
            raise ValueError(f"{where}: duration_s must be > 0")
        values = {k: spec.pop(k) for k in LINK_FIELDS if k in spec}
        for k, v in values.items():
            if isinstance(v, (list, tuple)) and (kind != "ramp" or len(v) != 2):
                raise ValueError(f"{where}: {k}={v!r}; only a ramp takes a [from, to] pair")
        params = {k: float(v) for k, v in spec.items()}
        if any(params.get(k, 1.0) <= 0 for k in ("step_s", "up_s", "down_s")):
            raise ValueError(f"{where}: step_s, up_s and down_s must be > 0")
        return cls(kind=kind, values=values, **params)

    def steps(self, start: LinkState) -> list[tuple[float, LinkState]]:
        """(offset from the segment start, state) pairs; the segment's effect on ``start``."""
        if self.kind == "step":
            return [(0.0, dataclasses.replace(start, **self.values, up=True))]
        if self.kind == "ramp":
            return self._ramp(start)
        if self.kind == "outage":
            return [(0.0, dataclasses.replace(start, up=False)),
                    (self.duration_s, dataclasses.replace(start, up=True))]
        return self._flapping(dataclasses.replace(start, **self.values, up=True))

    def _ramp(self, start: LinkState) -> list[tuple[float, LinkState]]:
        ends = {k: (v if isinstance(v, (list, tuple)) else (getattr(start, k), v)) for k, v in self.values.items()}
        n = max(2, round(self.duration_s / self.step_s))
        out = []
        for i in range(n):
            frac = i / (n - 1)
            vals = {k: a + (b - a) * frac for k, (a, b) in ends.items()}
            out.append((i * self.duration_s / n, dataclasses.replace(start, **vals, up=True)))
        return out

    def _flapping(self, up_state: LinkState) -> list[tuple[float, LinkState]]:
        down_state = dataclasses.replace(up_state, up=False)
        out, t, up = [], 0.0, True
        while t < self.duration_s - 1e-9:
            out.append((t, up_state if up else down_state))
            t += self.up_s if up else self.down_s
            up = not up
        out.append((self.duration_s, up_state))  # leave the link up
        return out


@dataclass(frozen=True)
class TraceStep:
    t: float  # seconds from the start of the trace
    state: LinkState


@dataclass(frozen=True)
class Trace:
    segments: tuple[Segment, ...]
    name: str = "trace"

    @classmethod
    def from_obj(cls, obj, name: str = "trace") -> "Trace":
        if isinstance(obj, dict):
            name, obj = obj.get("name", name), obj.get("segments")
        if not isinstance(obj, list) or not obj:
            raise ValueError("a trace needs a non-empty list of segments")
        return cls(tuple(Segment.from_dict(s, i) for i, s in enumerate(obj)), str(name))

    @classmethod
    def loads(cls, text: str, name: str = "trace") -> "Trace":
        import yaml

        return cls.from_obj(yaml.safe_load(text), name)

    @classmethod
    def load(cls, path: str | Path) -> "Trace":
        path = Path(path)
        return cls.loads(path.read_text(), name=path.stem)

    @property
    def duration_s(self) -> float:
        return sum(s.duration_s for s in self.segments)

    def schedule(self, initial: LinkState) -> list[TraceStep]:
        """Absolute steps from ``initial``; of several steps due at one instant only the last stays."""
        steps: dict[float, LinkState] = {}
        t0, state = 0.0, initial
        for seg in self.segments:
            seg_steps = seg.steps(state)
            for dt, s in seg_steps:
                steps[round(t0 + dt, 9)] = s
            if seg_steps:
                state = seg_steps[-1][1]    # the next segment starts where this one ended
            t0 += seg.duration_s
        return [TraceStep(t, s) for t, s in sorted(steps.items())]


class TracePlayer(threading.Thread):
    """Applies a trace's steps to a link at their times (absolute, so delays never accumulate).

    ``events`` holds the LinkEvent of each applied step: ``t`` is when it took effect and
    ``planned_t`` when it was due (both time.monotonic()).
    """

    def __init__(self, link, trace: Trace, time_scale: float = 1.0):
        super().__init__(name=f"linkemu-trace-{trace.name}", daemon=True)
        self.link, self.trace, self.time_scale = link, trace, time_scale
        self.steps = trace.schedule(link.state)
        self.events: list[LinkEvent] = []
        self.error: BaseException | None = None
        self.t0: float | None = None
        self._halt = threading.Event()

    def run(self) -> None:
        self.t0 = time.monotonic()
        try:
            for step in self.steps:
                due = self.t0 + step.t * self.time_scale
                if self._halt.wait(max(0.0, due - time.monotonic())):
                    return
                self.events.append(self.link.apply(step.state, source=f"trace:{self.trace.name}", planned_t=due))
            self._halt.wait(max(0.0, self.t0 + self.trace.duration_s * self.time_scale - time.monotonic()))
        except BaseException as exc:  # surfaced by wait(); the thread itself must not die silently
            self.error = exc

    def stop(self, timeout: float = 10.0) -> None:
        self._halt.set()
        if self.is_alive():
            self.join(timeout)

    def wait(self, timeout: float | None = None) -> list[LinkEvent]:
        """Block until the trace has played out; re-raise a failure; return the events."""
        self.join(timeout)
        if self.is_alive():
            raise TimeoutError(f"trace {self.trace.name!r} still playing after {timeout} s")
        if self.error is not None:
            raise self.error
        return self.events

    @property
    def max_lateness_s(self) -> float:
        return max((e.t - e.planned_t for e in self.events), default=0.0)
