"""When the monitor re-plans, and which plan is in force: the rules behind ``spinn/plan``.

:class:`Replanner` holds the link estimates and the change detector (core/estimators.py)
and the plan in force. Each control period ``step(now_s, **settings)`` re-plans for a
forced reason (the first plan, the cloud appearing or vanishing), a bandwidth step the
estimator already debounced, a lasting change the detector reports, or ``refresh_s`` without
any of these (a change the detector is deaf to, such as a loss that ebbed by less than its
threshold after one that rose past it, must not keep a plan forever); and it hands back
the new decision only when it differs from the plan in force, or when the drone it was made
for changed (the same plan again, with the new drone's predictions). The caller passes the time
(tests use a fake clock); measurements arrive on ROS and Zenoh threads, so every input is
taken under one lock. The monitor node only adapts it to ROS and Zenoh.
"""
from __future__ import annotations

import threading

from .estimators import ChangeDetector, LinkEstimator
from .prediction import Conditions
from .probe_train import ProbeTrains
from .scheduler import Decision, Scheduler


class Replanner:
    """``step(now_s, **settings)`` -> (decision, why, conditions) to publish, or None: keep the plan."""

    def __init__(self, scheduler: Scheduler, min_samples: int = 3, trains: ProbeTrains | None = None,
                 refresh_s: float = 5.0):
        if refresh_s < 0:
            raise ValueError(f"refresh_s must be >= 0 (0: re-plan only on a change), got {refresh_s}")
        self.scheduler = scheduler
        self.min_samples = min_samples            # link samples before the first link-based decision
        self.refresh_s = refresh_s
        self._decided_s = float("-inf")           # when the plan was last decided (kept or changed)
        self.estimator = LinkEstimator(trains=trains or ProbeTrains())
        if scheduler.model.cloud is not None:
            self.estimator.expected_cloud_ms = scheduler.model.cloud_ms_per_request
        self.detector = ChangeDetector()
        self._lock = threading.Lock()
        self._force: str | None = "start"         # re-plan at the next step, whatever the estimates say
        self._republish = False                   # ... and hand back its decision even if the plan stays
        self._bandwidth_jumps = 0
        self.plan_id = 0
        self.plan: Decision | None = None
        self.plan_changes = 0

    # -- measurements (any thread) ------------------------------------------------------------
    def on_result(self, r) -> None:
        """A ``spinn_ros/InferenceResult`` (or anything with its fields)."""
        with self._lock:
            self.estimator.on_result(r)

    def on_cloud_load(self, load: dict) -> None:
        with self._lock:
            self.estimator.on_cloud_load(load)

    def on_probe(self, rtt_ms: float | None) -> None:
        with self._lock:
            self.estimator.on_probe(rtt_ms)

    def on_probe_train(self, nbytes: int, arrival_ms: list[float | None]) -> None:
        with self._lock:
            self.estimator.on_probe_train(nbytes, arrival_ms)

    def on_clouds(self, alive: set[str]) -> None:
        """The clouds alive now: one appearing or the last vanishing re-plans at the next step; one
        appearing also restarts the link estimate (what the link did before the outage says nothing now)."""
        with self._lock:
            was = self.estimator.cloud_alive
            self.estimator.cloud_alive = bool(alive)
            if was != bool(alive):
                self._force = "cloud " + ("appeared" if alive else "vanished")
                if alive:
                    self.estimator.reset_link()

    def force(self, why: str, republish: bool = False) -> None:
        """Re-plan at the next step, e.g. for new drone settings. ``republish``: the premises of the plan
        in force changed (the drone it was made for), so hand back the decision even when it keeps the
        same plan: its predictions are the new drone's (a new plan id, not a plan change)."""
        with self._lock:
            self._force = why
            self._republish = self._republish or republish

    def probe_train_due(self, now_s: float) -> int | None:
        """The payload size of a bandwidth probe train to send now (None: not yet; while the plan in
        force offloads, trains keep within their share of the estimated bandwidth)."""
        with self._lock:
            offloading = self.plan is None or self.plan.offload
            return self.estimator.trains.due(now_s, self.estimator.bandwidth.value, offloading)

    def cloud_slowdown(self) -> float:
        """The cloud's measured compute against its profile (NaN: no answer measured yet)."""
        with self._lock:
            return float(self.estimator.cloud_slowdown.value)

    def link_state_fields(self) -> dict:
        """``LinkEstimator.link_state_fields()``, taken under the lock."""
        with self._lock:
            return self.estimator.link_state_fields()

    # -- planning (the control timer) ----------------------------------------------------------
    def step(self, now_s: float, **settings) -> tuple[Decision, str, Conditions] | None:
        """One control period at ``now_s`` (seconds, monotonic); ``settings``: the drone's frame_rate_hz,
        deadline_ms, encoding, ... (``LinkEstimator.conditions``). A new plan is in force when it returns one."""
        with self._lock:
            why = self._why(now_s)
            if not why:
                return None
            republish, self._republish = self._republish, False
            conditions = self.estimator.conditions(**settings)
        # outside the lock: measurements go on arriving
        decision = self.scheduler.decide(conditions, incumbent=self.plan.plan if self.plan else None)
        same = self.plan is not None and _same_plan(self.plan, decision)
        if same and not republish:
            return None
        self.plan_id += 1
        self.plan_changes += self.plan is not None and not same
        if not same:
            with self._lock:
                self.estimator.on_new_plan()
        self.plan = decision
        return decision, why, conditions

    def _why(self, now_s: float) -> str | None:
        """The reason to re-plan now, if any. Once there are enough samples the detector sees every
        period (its dwell clocks run), and a re-plan for another reason makes the estimates its reference."""
        values = self.estimator.change_values()
        samples = self.estimator.link_state_fields()["samples"]
        why = self._force or self._bandwidth_step(values)
        self._force = None
        if samples >= self.min_samples:
            changed = self.detector.update(now_s, values)
            refresh = bool(self.refresh_s) and now_s - self._decided_s >= self.refresh_s
            if changed and not why:
                why = "changed: " + ", ".join(changed)
            elif why or refresh:
                why = why or f"refresh ({self.refresh_s:g} s without a change)"
                self.detector.rebase(values)
        if why:
            self._decided_s = now_s
        return why

    def _bandwidth_step(self, values: dict) -> str | None:
        """The bandwidth estimator restarted from its last few samples (all several-fold off
        the estimate): a step already debounced by those samples, so re-plan now, if it moves
        the plan's transfer time past the change detector's fast tier (its floor keeps a
        noisy fast link, where transfers take a fraction of a millisecond, from re-planning)."""
        jumps = self.estimator.bandwidth.jumps
        stepped, self._bandwidth_jumps = jumps > self._bandwidth_jumps, jumps
        trigger = self.detector.triggers["transfer_ms"]
        ref = self.detector.reference.get("transfer_ms", float("nan"))
        if not stepped or not trigger.deviation(values["transfer_ms"], ref) > (trigger.fast_rel or trigger.rel):
            return None
        return f"bandwidth stepped to {self.estimator.bandwidth.value:.1f} Mbit/s"


def _same_plan(a: Decision, b: Decision) -> bool:
    return a.plan == b.plan
