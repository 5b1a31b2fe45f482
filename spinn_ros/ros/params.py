"""Declared, described and validated ROS parameters.

Each node lists its parameters once as :class:`Param`; the same checks run at
start-up (a bad value stops the node with a message naming the parameter and the
allowed range) and on every later change (the change is refused with that message).
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any, Callable

from rcl_interfaces.msg import ParameterDescriptor, SetParametersResult

from ..core.calibration import PLAIN_NETWORK

Check = Callable[[Any], "str | None"]  # returns what is wrong, or None


class ParameterError(ValueError):
    """A parameter value outside what the node accepts."""


@dataclass(frozen=True)
class Param:
    name: str
    default: Any
    description: str
    check: Check | None = None
    read_only: bool = False


def in_range(lo: float, hi: float, lo_open: bool = False, hi_open: bool = False) -> Check:
    text = f"{'(' if lo_open else '['}{lo}, {hi}{')' if hi_open else ']'}"

    def check(v):
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            return f"must be a number in {text}"
        ok_lo = v > lo if lo_open else v >= lo
        ok_hi = v < hi if hi_open else v <= hi
        return None if ok_lo and ok_hi else f"must be in {text}"

    return check


def threshold_or_plain(v) -> str | None:
    """An exit threshold: (0, 1], or infinity for the plain network (no early exit)."""
    if v == PLAIN_NETWORK:
        return None
    msg = in_range(0.0, 1.0, lo_open=True)(v)
    return msg and f"{msg}, or .inf (the plain network: no early exit)"


def one_of(*choices) -> Check:
    return lambda v: None if v in choices else f"must be one of {', '.join(map(repr, choices))}"


def non_empty(v) -> str | None:
    return None if isinstance(v, str) and v.strip() else "must be a non-empty string"


def problem(spec: Param, value) -> str | None:
    """The message for an invalid value of ``spec``, or None when it is fine."""
    if spec.default is not None and not _same_type(spec.default, value):
        return f"parameter '{spec.name}' must be of type {type(spec.default).__name__}, got {value!r}"
    msg = spec.check(value) if spec.check else None
    return f"parameter '{spec.name}'={value!r} is invalid: {msg}" if msg else None


def _same_type(default, value) -> bool:
    if isinstance(default, bool) or isinstance(value, bool):
        return isinstance(default, bool) and isinstance(value, bool)
    if isinstance(default, float):
        return isinstance(value, (int, float))
    return isinstance(value, type(default))


def declare(node, specs: list[Param]) -> dict[str, Any]:
    """Declare every parameter with its description; validate; return name -> value.

    Raises ParameterError naming the first bad parameter.
    """
    values = {}
    for spec in specs:
        desc = ParameterDescriptor(description=spec.description, read_only=spec.read_only,
                                   dynamic_typing=isinstance(spec.default, float))
        values[spec.name] = node.declare_parameter(spec.name, spec.default, desc).value
    for spec in specs:
        msg = problem(spec, values[spec.name])
        if msg:
            raise ParameterError(msg)
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
