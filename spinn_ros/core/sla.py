"""The service-level agreement the scheduler plans against (YAML, validated).

Hard constraints (every one optional) filter plans; objectives, in priority order,
rank the survivors lexicographically. An objective's tolerance makes values within
it of the best tie, so the next objective decides: "maximise accuracy" must not pick
a plan 0.01 % more accurate but 3x slower.

    version: 1
    name: default
    constraints:
      latency_ms: {max: 150, percentile: 95}   # p95 latency <= 150 ms
      min_accuracy: 0.85
      max_server_ms_per_frame: 20
      min_throughput_fps: 10                  # optional
      max_bytes_per_frame: 60000              # optional
      min_on_time_accuracy: 0.8               # optional
      hold_device_answer: true                # optional: control never waits on the network
    objectives:                               # first = highest priority
      - maximize_on_time_accuracy: {tolerance: 0.005}    # judged at the latency bound (else the drone's deadline)
      - maximize_accuracy: {tolerance: 0.005}            # absolute, in the objective's unit
      - maximize_throughput: {relative_tolerance: 0.05}  # share of the best value
      - minimize_server_cost

Every error names the file and the offending key.
"""
from __future__ import annotations

import difflib
import math
from dataclasses import dataclass
from pathlib import Path

import yaml

VERSION = 1
DEFAULT_PERCENTILE = 95.0


def default_sla_path() -> Path:
    """The package's config/sla.yaml (checkout or installed share directory)."""
    from .resources import config_file

    return config_file("sla.yaml")


@dataclass(frozen=True)
class ObjectiveSpec:
    metric: str          # a Prediction field
    sense: int           # +1 maximise, -1 minimise
    unit: str


#: objective name -> what it ranks (metric names are Prediction fields)
OBJECTIVES: dict[str, ObjectiveSpec] = {
    "maximize_on_time_accuracy": ObjectiveSpec("on_time_accuracy", +1, ""),
    "maximize_accuracy": ObjectiveSpec("accuracy", +1, ""),
    "maximize_throughput": ObjectiveSpec("throughput_fps", +1, "fps"),
    "minimize_latency": ObjectiveSpec("latency_ms", -1, "ms"),        # at the SLA's percentile
    "minimize_server_cost": ObjectiveSpec("server_ms_per_frame", -1, "server ms/frame"),
    "minimize_bytes": ObjectiveSpec("bytes_per_frame", -1, "B/frame"),
}


class SLAError(ValueError):
    """An SLA file that cannot be used; the message names the file and the key."""


@dataclass(frozen=True)
class Bound:
    """One hard constraint: ``metric <= limit`` (upper) or ``metric >= limit``."""

    key: str             # the YAML key it came from
    metric: str          # a Prediction field
    upper: bool
    limit: float
    label: str           # e.g. "p95 latency <= 150 ms"

    def ok(self, values):
        """Elementwise: does ``values`` (a number or numpy array) meet the bound?"""
        return values <= self.limit if self.upper else values >= self.limit


@dataclass(frozen=True)
class Objective:
    name: str
    tolerance: float = 0.0             # absolute, in the objective's unit
    relative_tolerance: float = 0.0    # share of the best value's magnitude

    @property
    def spec(self) -> ObjectiveSpec:
        return OBJECTIVES[self.name]

    def band(self, best: float) -> float:
        """How far below the best (in the maximising sense) still ties."""
        return max(self.tolerance, self.relative_tolerance * abs(best))


@dataclass(frozen=True)
class SLA:
    name: str
    bounds: tuple[Bound, ...]
    objectives: tuple[Objective, ...]
    percentile: float = DEFAULT_PERCENTILE   # latency percentile the plan is judged at
    source: str = "<memory>"
    hold_device_answer: bool = False         # only plans where the drone answers without the network

    @property
    def on_time_ms(self) -> float | None:
        """The deadline on-time accuracy is judged at: the latency bound (None: the drone's deadline)."""
        return next((b.limit for b in self.bounds if b.metric == "latency_ms"), None)

    def describe(self) -> str:
        cons = "; ".join(b.label for b in self.bounds) or "no constraints"
        hold = "; the drone always holds an answer" if self.hold_device_answer else ""
        return f"{self.name}: {cons}{hold}; objectives " + " > ".join(o.name for o in self.objectives)


# ---------------------------------------------------------------------------------
# Parsing
# ---------------------------------------------------------------------------------

_TOP_KEYS = ("version", "name", "description", "constraints", "objectives")
_CONSTRAINT_KEYS = ("latency_ms", "min_accuracy", "min_on_time_accuracy", "max_server_ms_per_frame",
                    "min_throughput_fps", "max_bytes_per_frame", "hold_device_answer")
_OBJECTIVE_KEYS = ("tolerance", "relative_tolerance")


class _Reader:
    """Shared checks, every message prefixed with the file and the key path."""

    def __init__(self, source: str):
        self.source = source

    def fail(self, where: str, msg: str):
        raise SLAError(f"SLA {self.source}: {where}: {msg}")

    def mapping(self, value, where: str, allowed: tuple[str, ...]) -> dict:
        if value is None:
            return {}
        if not isinstance(value, dict):
            self.fail(where, f"must be a mapping, got {type(value).__name__}")
        for key in value:
            if key not in allowed:
                self.fail(where, f"unknown key {key!r}{_suggest(key, allowed)} (allowed: {', '.join(allowed)})")
        return value

    def number(self, value, where: str, lo: float, hi: float, lo_open: bool = False) -> float:
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            self.fail(where, f"must be a finite number, got {value!r}")
        if value < lo or value > hi or (lo_open and value == lo):
            self.fail(where, f"{value} is outside {'(' if lo_open else '['}{lo}, {hi}]")
        return float(value)


def _suggest(word: str, choices) -> str:
    close = difflib.get_close_matches(str(word), list(choices), n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""


def _bounds(r: _Reader, raw: dict) -> tuple[tuple[Bound, ...], float]:
    c = r.mapping(raw, "constraints", _CONSTRAINT_KEYS)
    bounds, percentile = [], DEFAULT_PERCENTILE
    if "latency_ms" in c:
        lat = r.mapping(c["latency_ms"], "constraints.latency_ms", ("max", "percentile"))
        if "max" not in lat:
            r.fail("constraints.latency_ms", "needs 'max' (ms)")
        limit = r.number(lat["max"], "constraints.latency_ms.max", 0, 1e6, lo_open=True)
        percentile = r.number(lat.get("percentile", DEFAULT_PERCENTILE), "constraints.latency_ms.percentile",
                              0, 100, lo_open=True)
        bounds.append(Bound("latency_ms", "latency_ms", True, limit, f"p{percentile:g} latency <= {limit:g} ms"))
    simple = {  # key -> (metric, upper, lo, hi, label format)
        "min_accuracy": ("accuracy", False, 0.0, 1.0, "accuracy >= {:g}"),
        "min_on_time_accuracy": ("on_time_accuracy", False, 0.0, 1.0, "on-time accuracy >= {:g}"),
        "max_server_ms_per_frame": ("server_ms_per_frame", True, 0.0, 1e6, "server <= {:g} ms/frame"),
        "min_throughput_fps": ("throughput_fps", False, 0.0, 1e4, "throughput >= {:g} fps"),
        "max_bytes_per_frame": ("bytes_per_frame", True, 0.0, 1e9, "uplink <= {:g} B/frame"),
    }
    for key, (metric, upper, lo, hi, label) in simple.items():
        if key in c:
            limit = r.number(c[key], f"constraints.{key}", lo, hi)
            bounds.append(Bound(key, metric, upper, limit, label.format(limit)))
    return tuple(bounds), percentile


def _objective(r: _Reader, item, where: str) -> Objective:
    if isinstance(item, str):
        name, opts = item, {}
    elif isinstance(item, dict) and len(item) == 1:
        (name, opts), = item.items()
    else:
        r.fail(where, f"must be an objective name or a one-key mapping {{name: {{tolerance: ...}}}}, got {item!r}")
    if name not in OBJECTIVES:
        r.fail(where, f"unknown objective {name!r}{_suggest(name, OBJECTIVES)} (allowed: {', '.join(OBJECTIVES)})")
    opts = r.mapping(opts, f"{where} ({name})", _OBJECTIVE_KEYS)
    return Objective(
        name,
        tolerance=r.number(opts.get("tolerance", 0.0), f"{where} ({name}).tolerance", 0.0, 1e9),
        relative_tolerance=r.number(opts.get("relative_tolerance", 0.0), f"{where} ({name}).relative_tolerance",
                                    0.0, 1.0),
    )


def _objectives(r: _Reader, raw) -> tuple[Objective, ...]:
    if not isinstance(raw, list) or not raw:
        r.fail("objectives", "must be a non-empty list, highest priority first")
    out: list[Objective] = []
    for i, item in enumerate(raw):
        obj = _objective(r, item, f"objectives[{i}]")
        earlier = [j for j, o in enumerate(out) if o.name == obj.name]
        if earlier:
            r.fail(f"objectives[{i}]", f"{obj.name!r} is already priority {earlier[0] + 1}: each objective once")
        out.append(obj)
    return tuple(out)


def parse_sla(data, source: str = "<memory>") -> SLA:
    """An SLA from parsed YAML (a dict)."""
    r = _Reader(source)
    top = r.mapping(data, "top level", _TOP_KEYS)
    if "version" in top and top["version"] != VERSION:
        r.fail("version", f"{top['version']!r}, this code reads version {VERSION}")
    if "objectives" not in top:
        r.fail("objectives", "missing (a list of objectives, highest priority first)")
    name = top.get("name", Path(source).stem)
    if not isinstance(name, str) or not name:
        r.fail("name", f"must be a non-empty string, got {name!r}")
    bounds, percentile = _bounds(r, top.get("constraints"))
    hold = (top.get("constraints") or {}).get("hold_device_answer", False)
    if not isinstance(hold, bool):
        r.fail("constraints.hold_device_answer", f"must be true or false, got {hold!r}")
    return SLA(name, bounds, _objectives(r, top["objectives"]), percentile, source, hold)


def load_sla(path=None) -> SLA:
    """Read and validate an SLA file (default: the package's config/sla.yaml)."""
    path = Path(path) if path else default_sla_path()
    if not path.is_file():
        raise SLAError(f"SLA {path}: no such file")
    try:
        data = yaml.safe_load(path.read_text())
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as e:
        raise SLAError(f"SLA {path}: unreadable or not YAML ({e})") from e
    return parse_sla(data, str(path))
