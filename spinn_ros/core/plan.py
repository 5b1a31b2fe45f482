"""A plan: where the network is split, the exit threshold, and the mode that orders device
compute and offloading. One object from the scheduler's decision to the ``SplitPlan``
message to the drone engine (the wire carries split and threshold; the mode is the drone's).

Modes (with split ``s`` < N; at ``s`` = N every mode is the device alone):

``provisional-first``  the head runs ``[0, s)`` with its exits; a confident exit answers, else the
                       deepest device exit answers provisionally and the activation is offloaded.
``offload-first``      stages ``[0, s)`` run with no exit head and the activation (the raw frame at
                       ``s`` = 0) leaves at once; the cloud's exits answer. With the plain network
                       this is Neurosurgeon (and cloud-only at ``s`` = 0). No device answer unless the
                       offload fails or misses its deadline.
``race``               as offload-first, and once the request is out the drone computes its first
                       exit's answer (provisional, control acts on it); the cloud's answer refines it.

Torch-free: the planner and the parameter checks import it.
"""
from __future__ import annotations

from dataclasses import dataclass

from .calibration import PLAIN_NETWORK

PROVISIONAL_FIRST = "provisional-first"
OFFLOAD_FIRST = "offload-first"
RACE = "race"
PLAN_MODES = (PROVISIONAL_FIRST, OFFLOAD_FIRST, RACE)


def check_mode(mode: str) -> str:
    if mode not in PLAN_MODES:
        raise ValueError(f"plan mode {mode!r} is unknown; allowed: {', '.join(PLAN_MODES)}")
    return mode


@dataclass(frozen=True)
class Plan:
    """Swapped as one object between frames: no frame mixes two plans."""

    split: int                         # stages [0, split) on the drone
    threshold: float                   # PLAIN_NETWORK (calibration.py): no early exit, exit heads skipped
    mode: str = PROVISIONAL_FIRST
    plan_id: int = 0
    offload: bool = True               # False: the drone answers alone

    def __post_init__(self):
        check_mode(self.mode)

    @property
    def plain(self) -> bool:
        return self.threshold == PLAIN_NETWORK

    @property
    def sends_first(self) -> bool:
        """The request leaves before any exit head runs on the drone."""
        return self.mode != PROVISIONAL_FIRST
