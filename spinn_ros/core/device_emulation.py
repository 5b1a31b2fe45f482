"""Emulating a drone computer slower than the machine running the code.

The drone node's ``emulate.slowdown`` = k makes every head take k times what its
stages and exits cost on the reference machine (and, with a profile, the pixel
preprocessing and the request's encoding, which a slower computer pays as much): the model's device profile (the same
numbers the planner multiplies by the monitor's ``device_slowdown`` = k), or, without a
profile, medians measured once at start-up. Padding to that target, instead of to k
times each frame's measured time, keeps this machine's momentary load from being
multiplied by k: a frame that ran slowly here just gets less padding.
"""
from __future__ import annotations

import statistics
import time

import torch

from .model import EarlyExitNet

#: a drone as fast as the machine its profile was measured on (no emulation)
NO_SLOWDOWN = 1.0


class SlowerDevice:
    def __init__(self, model: EarlyExitNet, factor: float, profile=None, runs: int = 20):
        """``profile``: a device :class:`~spinn_ros.core.profile.Profile` of this model (None: measure)."""
        if not factor >= 1.0:          # (NaN fails this too)
            raise ValueError(f"slowdown factor must be >= 1, got {factor}")
        self.model, self.factor = model, factor
        self.stage_s = [0.0] * model.num_stages
        self.exit_s = [0.0] * model.num_exits
        self.source = "none"
        self.preprocess_s = 0.0
        self._profile = profile if factor > 1.0 else None
        if factor > 1.0 and profile is not None:
            self.stage_s = [ms / 1e3 for ms in profile.stage_ms()]
            self.exit_s = [ms / 1e3 for ms in profile.exit_ms()]
            self.preprocess_s = profile.preprocess_ms() / 1e3
            self.source = f"profile {profile.source}"
        elif factor > 1.0:
            self._measure(runs)
            self.source = "measured at start-up"

    def _measure(self, runs: int) -> None:
        m = self.model
        with torch.inference_mode():
            x = torch.rand(1, *m.input_shape())
            for stage in range(m.num_stages):
                self.stage_s[stage], y = _median_s(lambda s=stage, x=x: m.run_stage(s, x), runs)
                e = m.exit_index_at(stage)
                if e is not None:
                    self.exit_s[e], _ = _median_s(lambda e=e, y=y: m.run_exit(e, y), runs)
                x = y

    def cost_s(self, start: int, stop: int, plain: bool = False) -> float:
        """Idle-machine seconds for stages [start, stop) and the exits among them (only the
        final one for the ``plain`` network)."""
        exits = [e for e in self.model.exits_in(start, stop) if not plain or e == self.model.num_exits - 1]
        return sum(self.stage_s[start:stop]) + sum(self.exit_s[e] for e in exits)

    def encode_s(self, encoding: str, split: int) -> float:
        """Idle-machine seconds to build a request at ``split`` (0 without a profile: not padded)."""
        return self._profile.encode_ms(encoding)[split] / 1e3 if self._profile is not None else 0.0

    def pad(self, start: int, stop: int, measured_s: float, plain: bool = False) -> float:
        """Sleep until stages [start, stop) took ``factor`` x their idle cost; the emulated seconds."""
        return self.pad_to(self.cost_s(start, stop, plain), measured_s)

    def pad_to(self, idle_s: float, measured_s: float) -> float:
        """Sleep until work of ``idle_s`` idle-machine seconds took ``factor`` x that; the emulated seconds."""
        if self.factor <= 1.0:
            return measured_s
        target = self.factor * idle_s
        if target > measured_s:
            time.sleep(target - measured_s)
        return max(target, measured_s)


def _median_s(fn, runs: int):
    out = fn()                      # warm-up (first calls allocate)
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times), out
