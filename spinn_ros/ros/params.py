"""Declared, described and validated ROS parameters.

Each node lists its parameters once as :class:`Param`; the same checks run at
start-up (a bad value stops the node with one message naming the parameter and the
allowed values) and on every later change (the change is refused with that message).
Types are checked here too, not by rclpy: its messages name neither the parameter nor
what is allowed, and a wrong-typed ``-p`` override beside a params file is dropped by
rcl without a word, so the command line is checked against the declarations as well.
Ranges also go into the descriptors, so ``ros2 param describe`` shows them.
"""
from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from typing import Any, Callable

import yaml
from rcl_interfaces.msg import FloatingPointRange, IntegerRange, ParameterDescriptor, SetParametersResult

from ..core.calibration import PLAIN_NETWORK


class ParameterError(ValueError):
    """A parameter value outside what the node accepts."""


@dataclass(frozen=True)
class Check:
    """A value check: ``allowed`` says what passes; ``bounds`` (lo, hi) when it is a range."""
    allowed: str
    test: Callable[[Any], bool]
    bounds: tuple[float, float] | None = None

    def __call__(self, value) -> str | None:
        """What is wrong with ``value``, or None."""
        return None if self.test(value) else f"must be {self.allowed}"


@dataclass(frozen=True)
class Param:
    name: str
    default: Any
    description: str
    check: Check | None = None
    read_only: bool = False


def _number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def in_range(lo: float, hi: float, lo_open: bool = False, hi_open: bool = False) -> Check:
    text = f"{'(' if lo_open else '['}{lo}, {hi}{')' if hi_open else ']'}"

    def test(v) -> bool:
        return _number(v) and (v > lo if lo_open else v >= lo) and (v < hi if hi_open else v <= hi)

    return Check(f"a number in {text}", test, (lo, hi))


def _threshold(v) -> bool:
    return v == PLAIN_NETWORK or (_number(v) and 0.0 < v <= 1.0)


#: an exit threshold: (0, 1], or infinity for the plain network (no early exit)
threshold_or_plain = Check("a number in (0.0, 1.0], or .inf (the plain network: no early exit)", _threshold)


def one_of(*choices) -> Check:
    return Check(f"one of {', '.join(map(repr, choices))}", lambda v: v in choices)


non_empty = Check("a non-empty string", lambda v: isinstance(v, str) and bool(v.strip()))


def problem(spec: Param, value) -> str | None:
    """The message for an invalid value of ``spec``, or None when it is fine."""
    allowed = f" ({spec.check.allowed})" if spec.check else ""
    if spec.default is not None and not _same_type(spec.default, value):
        return f"parameter '{spec.name}' must be of type {_type_name(spec.default)}{allowed}, got {value!r}"
    msg = spec.check(value) if spec.check else None
    return f"parameter '{spec.name}'={value!r} is invalid: {msg}" if msg else None


def _type_name(default) -> str:
    return {bool: "bool", int: "integer", float: "double", str: "string"}.get(type(default), type(default).__name__)


def _same_type(default, value) -> bool:
    if isinstance(default, bool) or isinstance(value, bool):
        return isinstance(default, bool) and isinstance(value, bool)
    if isinstance(default, float):
        return isinstance(value, (int, float))
    return isinstance(value, type(default))


def descriptor(spec: Param) -> ParameterDescriptor:
    """The descriptor ``ros2 param describe`` shows: description with what is allowed, the
    range where there is one. Dynamically typed so a wrong type reaches our checks."""
    allowed = f" (allowed: {spec.check.allowed})" if spec.check else ""
    desc = ParameterDescriptor(description=spec.description + allowed, read_only=spec.read_only,
                               dynamic_typing=True)
    if spec.check and spec.check.bounds:
        lo, hi = spec.check.bounds
        if isinstance(spec.default, int) and not isinstance(spec.default, bool):
            desc.integer_range = [IntegerRange(from_value=int(lo), to_value=int(hi), step=1)]
        elif isinstance(spec.default, float):
            desc.floating_point_range = [FloatingPointRange(from_value=float(lo), to_value=float(hi), step=0.0)]
    return desc


def command_line_values(node_name: str, argv: list[str] | None = None) -> dict[str, Any]:
    """``-p name:=value`` overrides given to this node on its command line, read as rcl reads
    them (YAML scalars). rcl silently drops one whose type differs from a params file's."""
    argv = sys.argv if argv is None else argv
    values, in_ros_args = {}, False
    for i, arg in enumerate(argv):
        if arg == "--ros-args":
            in_ros_args = True
        elif arg == "--":
            in_ros_args = False
        elif in_ros_args and arg in ("-p", "--param") and i + 1 < len(argv) and ":=" in argv[i + 1]:
            name, text = argv[i + 1].split(":=", 1)
            target, _, name = name.rpartition(":")          # node:param targets one node
            if target and target.lstrip("/").split("/")[-1] != node_name:
                continue
            try:
                values[name] = yaml.safe_load(text)
            except yaml.YAMLError:
                values[name] = text
    return values


def declare(node, specs: list[Param], argv: list[str] | None = None) -> dict[str, Any]:
    """Declare every parameter with its description; validate; return name -> value.

    Raises ParameterError naming the first bad parameter (from a params file, a ``-p``
    override, or a default).
    """
    values = {}
    for spec in specs:
        # read_only goes in once the values are checked (a read-only descriptor cannot be changed)
        desc = ParameterDescriptor(description=spec.description, dynamic_typing=True)
        values[spec.name] = node.declare_parameter(spec.name, spec.default, desc).value
    given = command_line_values(node.get_name(), argv)
    for spec in specs:
        msg = problem(spec, values[spec.name]) or (spec.name in given and problem(spec, given[spec.name]))
        if msg:
            raise ParameterError(msg)
    for spec in specs:
        node.set_descriptor(spec.name, descriptor(spec))
    return values


def on_change(specs: list[Param], apply: Callable[[dict[str, Any]], str | None] | None = None):
    """A set-parameters callback: validate every changed value, then let ``apply`` veto or take it."""
    by_name = {s.name: s for s in specs}

    def callback(params) -> SetParametersResult:
        changed = {}
        for p in params:
            spec = by_name.get(p.name)
            if spec is None:
                continue
            msg = problem(spec, p.value)
            if msg:
                return SetParametersResult(successful=False, reason=msg)
            changed[p.name] = p.value
        if apply is not None and changed:
            msg = apply(changed)
            if msg:
                return SetParametersResult(successful=False, reason=msg)
        return SetParametersResult(successful=True)

    return callback


def zenoh_params(connect: str = "", listen: str = "") -> list[Param]:
    """The Zenoh session parameters every node that talks to the cloud declares."""
    return [
        Param("zenoh.mode", "peer", "Zenoh session mode: peer or client", one_of("peer", "client")),
        Param("zenoh.connect", connect, "comma-separated endpoints to connect to, e.g. tcp/10.0.0.2:7447"),
        Param("zenoh.listen", listen, "comma-separated endpoints to listen on, e.g. tcp/0.0.0.0:7447"),
        Param("zenoh.key_prefix", "spinn", "first chunk(s) of every key expression", non_empty),
        Param("zenoh.shared_memory", False, "Zenoh shared memory (keep off when a real link is meant)"),
        Param("zenoh.lease_ms", 2000, "a silent link is declared dead after about this long, ms", in_range(100, 60000)),
        Param("zenoh.security", "mtls", "mtls: TLS with client certificates and the cloud's access control "
              "(tls/ endpoints); plain: none (insecure, logged as a warning)", one_of("mtls", "plain")),
        Param("zenoh.certs", os.environ.get("SPINN_CERTS", "~/.spinn/certs"),
              "certificate directory for mtls (`spinn certs`): ca.pem and this node's <name>.pem/.key; "
              "default $SPINN_CERTS, else ~/.spinn/certs", non_empty),
    ]
