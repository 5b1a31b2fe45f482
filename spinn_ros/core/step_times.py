"""Where a camera frame's time goes inside the drone node, step by step.

Each frame answered from the drone's head carries monotonic marks (ns): the camera callback
handing it over, the worker taking it, the model input ready, the answer reaching the node,
the command published (control first), the result published. :class:`StepTimes` keeps the last ``window``
durations of each step between consecutive marks, and the whole callback -> command time,
and reports percentiles (the drone node puts them in /diagnostics; bench_node_overhead.py
tabulates them).
"""
from __future__ import annotations

import threading
from collections import deque
from typing import Sequence

import numpy as np

#: the steps between consecutive marks, in order
STEPS = ("slot_wait", "preprocess", "head", "command_publish", "result_publish")
#: the whole span: the camera callback to the command published
TOTAL = "callback_to_command"
_TOTAL_END = STEPS.index("command_publish") + 1          # the mark the whole span ends at


class StepTimes:
    """``record(marks)`` per frame; ``percentiles()`` -> {"step_<name>_p50_ms": ..., ...}."""

    def __init__(self, window: int = 300):
        if window < 1:
            raise ValueError(f"window must be >= 1, got {window}")
        self._ms = {name: deque(maxlen=window) for name in (*STEPS, TOTAL)}
        self._lock = threading.Lock()

    def record(self, marks: Sequence[int | None]) -> None:
        """One frame's marks (ns, non-decreasing, at most len(STEPS) + 1 of them; None for one that
        did not happen, e.g. no command for a stale answer: the steps beside it are not counted,
        nor is the whole span without its command)."""
        if len(marks) > len(STEPS) + 1:
            raise ValueError(f"at most {len(STEPS) + 1} marks per frame, got {len(marks)}")
        with self._lock:
            for name, a, b in zip(STEPS, marks, marks[1:]):
                if a is not None and b is not None:
                    self._ms[name].append((b - a) / 1e6)
            if len(marks) > _TOTAL_END and marks[0] is not None and marks[_TOTAL_END] is not None:
                self._ms[TOTAL].append((marks[_TOTAL_END] - marks[0]) / 1e6)

    def percentiles(self, qs: Sequence[int] = (50, 95)) -> dict[str, float]:
        """Per step with samples, its percentiles in ms, keyed ``step_<name>_p<q>_ms``."""
        with self._lock:
            samples = {name: np.array(v) for name, v in self._ms.items() if v}
        return {f"step_{name}_p{q}_ms": float(np.percentile(v, q)) for name, v in samples.items() for q in qs}
