"""SPINN's scheduler: the SLA-driven choice among the performance model's predictions.

:class:`Scheduler` filters core/performance.py's predictions by the SLA's hard constraints,
ranks the survivors by its objectives and explains its choice. Baselines are
:data:`STRATEGIES` restricting the same search, so SPINN's plan space contains every
baseline's. The rules are in docs/scheduler.md; this module is pure (no rclpy, no zenoh,
no torch).
"""
from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from .performance import Conditions, PerformanceModel, Prediction, PredictionTable
from .plan import OFFLOAD_FIRST, PLAN_MODES, PROVISIONAL_FIRST, Plan
from .sla import SLA, Objective

# ---------------------------------------------------------------------------------
# Strategies: SPINN and the baselines restrict the same search
# ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Strategy:
    name: str
    description: str
    early_exits: tuple[bool, ...]          # (True,): calibrated thresholds; (False,): the plain network
    splits: str                            # "all", "device" (split N) or "cloud" (split 0)
    modes: tuple[str, ...]                 # plan modes (core/plan.py)
    objectives: tuple[Objective, ...] | None = None    # None: the SLA's

    def mask(self, table: PredictionTable) -> np.ndarray:
        n = table.num_stages
        plain = np.isinf(table.thresholds)
        rows = np.isin(table.modes, [PLAN_MODES.index(m) for m in self.modes])
        rows &= np.isin(~plain, self.early_exits)
        cols = {"all": np.ones(n + 1, bool), "device": np.arange(n + 1) == n,
                "cloud": np.arange(n + 1) == 0}[self.splits]
        return rows[:, None] & cols[None, :]


STRATEGIES: dict[str, Strategy] = {s.name: s for s in (
    Strategy("spinn", "split, exit threshold and plan mode co-optimised for the SLA: every baseline's plans "
             "and more", (True, False), "all", PLAN_MODES),
    Strategy("device_only", "the whole network on the drone, no early exits", (False,), "device",
             (PROVISIONAL_FIRST,)),
    Strategy("cloud_only", "the raw frame to the cloud, the whole network there", (False,), "cloud", (OFFLOAD_FIRST,)),
    Strategy("neurosurgeon", "the split with the lowest latency, no early exits", (False,), "all",
             (OFFLOAD_FIRST, PROVISIONAL_FIRST), (Objective("minimize_latency"),)),
    Strategy("branchynet", "early exits on the drone only, the threshold best for the SLA", (True,), "device",
             (PROVISIONAL_FIRST,)),
)}


# ---------------------------------------------------------------------------------
# Decisions
# ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Decision:
    strategy: str
    prediction: Prediction
    feasible: bool                         # every hard constraint met (False: the safest plan)
    reason: str
    decided_by: str                        # the objective (or tie-break) that settled it
    binding: tuple[str, ...]               # constraints without which another plan would win

    split = property(lambda self: self.prediction.split)
    threshold = property(lambda self: self.prediction.threshold)
    mode = property(lambda self: self.prediction.mode)
    offload = property(lambda self: self.prediction.offload)
    plan = property(lambda self: self.prediction.plan)

    def plan_fields(self) -> dict:
        """``spinn_ros/SplitPlan`` fields (the monitor adds header, plan_id, model_id).
        The plain network's threshold is infinite: the drone and the cloud skip the exit heads."""
        p = self.prediction
        return {"split_point": p.split, "exit_threshold": p.threshold, "mode": p.mode, "offload": p.offload,
                "predicted_latency_ms": p.latency_ms, "predicted_mean_latency_ms": p.mean_latency_ms,
                "predicted_accuracy": p.accuracy, "predicted_on_time_accuracy": p.on_time_accuracy,
                "predicted_throughput_fps": p.throughput_fps,
                "predicted_offload_fraction": p.offload_fraction, "predicted_bytes_per_frame": p.bytes_per_frame,
                "predicted_server_ms_per_frame": p.server_ms_per_frame, "feasible": self.feasible,
                "reason": self.reason}


def _fmt(metric: str, v: float) -> str:
    return {"accuracy": f"{v:.4f}", "on_time_accuracy": f"{v:.4f}", "throughput_fps": f"{v:.1f} fps",
            "bytes_per_frame": f"{v:.0f} B", "server_ms_per_frame": f"{v:.2f} ms",
            "latency_ms": f"{v:.1f} ms"}.get(metric, f"{v:.3g}")


def _bands(table: PredictionTable, rows: np.ndarray, splits: np.ndarray, objectives):
    """The ranking's stages: per objective (obj, best value in the maximising sense, the plans within
    its tolerance of the best), each stage starting from the plans the last one kept."""
    for obj in objectives:
        spec = obj.spec
        v = spec.sense * table[spec.metric][rows, splits]
        best = float(v.max())
        keep = v >= best - obj.band(best) - 1e-12
        rows, splits = rows[keep], splits[keep]
        yield obj, best, rows, splits


def _where(split: int, n: int) -> str:
    if split == n:
        return "all on the drone"
    return "raw frame to the cloud" if split == 0 else f"stages [0, {split}) on the drone, the rest in the cloud"


#: how much better (relative) another plan must be, on an objective without a tolerance, to replace the plan in force
INCUMBENT_MARGIN = 0.05


class Scheduler:
    """Chooses a plan for the current conditions: ``Scheduler(model, sla).decide(conditions)``."""

    def __init__(self, model: PerformanceModel, sla: SLA, strategy: str = "spinn"):
        if strategy not in STRATEGIES:
            raise ValueError(f"unknown strategy {strategy!r}; choose one of {', '.join(STRATEGIES)}")
        self.model, self.sla, self.strategy = model, sla, STRATEGIES[strategy]
        self.objectives = self.strategy.objectives or sla.objectives

    def predict(self, split: int, threshold: float, cond: Conditions, mode: str = PROVISIONAL_FIRST) -> Prediction:
        return self.model.predict(split, threshold, cond, self.sla.percentile, mode, self.sla.on_time_ms)

    def violations(self, p: Prediction) -> list[str]:
        """The SLA constraints a prediction breaks (e.g. to judge the plan in force)."""
        return [b.label for b in self.sla.bounds if not b.ok(getattr(p, b.metric))]

    def decide(self, cond: Conditions, incumbent: Plan | None = None) -> Decision:
        """The plan for ``cond``. ``incumbent``, the plan in force, stays while it meets the SLA
        and stays in every objective's band of the ranking (within the objective's tolerance of
        that stage's best, INCUMBENT_MARGIN of it where the objective has none): noise in the link
        estimates then cannot flip the drone between plans the SLA calls equal. ``binding`` stays
        that of the plan the ranking alone would pick."""
        table = self.model.predict_all(cond, self.sla.percentile, self.sla.on_time_ms)
        cand = self.strategy.mask(table) & table.valid
        if self.sla.hold_device_answer:      # control never waits on the network
            cand &= table.holds_device_answer
        oks = [b.ok(table[b.metric]) for b in self.sla.bounds]
        feasible = cand & np.logical_and.reduce(oks) if oks else cand
        if not feasible.any():
            return self._safest(table, cand, oks)
        idx, decided_by = self._rank(table, feasible, self.objectives)
        binding = tuple(self._binding(table, cand, oks, idx))
        held = table.locate(incumbent) if incumbent is not None else None
        if held is not None and held != idx and self._holds(table, feasible, held):
            idx, decided_by = held, f"the plan in force (within every objective's tolerance of {decided_by})"
        c, s = idx
        p = table.prediction(c, s)
        reason = (f"{self.strategy.name}: split {s} ({_where(s, table.num_stages)}), {self._threshold_text(p)}, "
                  f"{p.mode}; "
                  f"{int(feasible.sum())}/{int(cand.sum())} plans meet the SLA; decided by {decided_by}; "
                  f"binding: {', '.join(binding) or 'none'}")
        return Decision(self.strategy.name, p, True, reason, decided_by, binding)

    # -- ranking ----------------------------------------------------------------------------
    def _rank(self, table: PredictionTable, mask: np.ndarray, objectives) -> tuple[tuple[int, int], str]:
        """Lexicographic with tolerances: each objective keeps the plans within its band of
        the best, the next decides among them; a deterministic tie-break ends it."""
        rows, splits = np.nonzero(mask)
        steps = []
        for obj, best, rows_kept, splits_kept in _bands(table, rows, splits, objectives):
            if len(rows) == 1:
                break
            spec = obj.spec
            steps.append(f"{obj.name} ({_fmt(spec.metric, spec.sense * best)}"
                         + (f", {len(rows_kept)} tied)" if len(rows_kept) > 1 else ")"))
            rows, splits = rows_kept, splits_kept
        if len(rows) > 1:
            # tie-break: lower mean latency, then less offloading (deeper split), then the earlier mode
            # (PLAN_MODES order: the device answers first), then the higher threshold
            column = rows % (len(table.thresholds) // len(PLAN_MODES))
            order = np.lexsort((-column, table.modes[rows], -splits, table["mean_latency_ms"][rows, splits]))
            rows, splits = rows[order[:1]], splits[order[:1]]
            steps.append("tie-break (mean latency, deeper split, mode, higher threshold)")
        return (int(rows[0]), int(splits[0])), " then ".join(steps) or "the only candidate"

    def _holds(self, table: PredictionTable, feasible: np.ndarray, held: tuple[int, int]) -> bool:
        """The plan in force would stay in every objective's band of the ranking: within the
        objective's tolerance of each stage's best (INCUMBENT_MARGIN of it where it has none)."""
        if not feasible[held]:
            return False
        rows, splits = np.nonzero(feasible)
        for obj, best, _, _ in _bands(table, rows, splits, self.objectives):
            spec = obj.spec
            if spec.sense * table[spec.metric][held] < best - (obj.band(best) or INCUMBENT_MARGIN * abs(best)) - 1e-12:
                return False
        return True

    def _binding(self, table, cand, oks, idx):
        """Constraints without which the ranking would pick another plan."""
        for i, bound in enumerate(self.sla.bounds):
            others = [ok for j, ok in enumerate(oks) if j != i]
            relaxed = cand & np.logical_and.reduce(others) if others else cand
            if self._rank(table, relaxed, self.objectives)[0] != idx:
                yield f"{bound.label} (predicted {_fmt(bound.metric, float(table[bound.metric][idx]))})"

    def _safest(self, table: PredictionTable, cand: np.ndarray, oks) -> Decision:
        """Nothing meets the SLA: the device answers alone, at the threshold that best meets
        the latency bound (the most accurate that meets it, else the fastest)."""
        n = table.num_stages
        device = cand.copy()
        device[:, :n] = False
        if not device.any():                 # e.g. cloud-only: the drone runs the same network alone
            device = replace(self.strategy, splits="device", modes=(PROVISIONAL_FIRST,)).mask(table) & table.valid
        latency = [ok for b, ok in zip(self.sla.bounds, oks) if b.metric == "latency_ms"]
        meets = device & latency[0] if latency else device
        if meets.any():
            idx, _ = self._rank(table, meets, self.sla.objectives)
            how = "meets the latency bound"
        else:
            idx, _ = self._rank(table, device, (Objective("minimize_latency"),))
            how = "the lowest latency, the bound is out of reach"
        c, s = idx
        p = table.prediction(c, s)
        met = ", ".join(f"{b.label}: {int((cand & ok).sum())}/{int(cand.sum())}" for b, ok in zip(self.sla.bounds, oks))
        reason = (f"{self.strategy.name}: no plan meets the SLA (plans meeting each constraint: {met or 'none'}); "
                  f"safest: {_where(s, n)}, {self._threshold_text(p)} ({how}; "
                  f"p{table.percentile:g} {p.latency_ms:.1f} ms, accuracy {p.accuracy:.4f})")
        return Decision(self.strategy.name, p, False, reason, "safest plan", ())

    @staticmethod
    def _threshold_text(p: Prediction) -> str:
        return f"threshold {p.threshold:g}" if p.early_exits else "no early exits"
