"""A calibration written by hand (the scheduler tests' toy network: 3 stages, an exit after
each; its table is in test/unit/test_scheduler.py), for tests whose right answer is known."""
from __future__ import annotations

from ..core.calibration import Calibration

MODEL_ID = "toy"
THRESHOLDS = [0.5, 0.7, 0.9, 1.0]
RATES = [[0.70, 0.27, 0.03], [0.4, 0.3, 0.3], [0.2, 0.2, 0.6], [0.0, 0.0, 1.0]]
EXIT_ACC = [[0.80, 0.85, 0.90], [0.86, 0.88, 0.92], [0.95, 0.93, 0.93], [None, None, 0.94]]
STANDALONE = [0.75, 0.85, 0.94]


def make_calibration(model_id=MODEL_ID, rates=RATES, exit_acc=EXIT_ACC, thresholds=THRESHOLDS, exit_stages=(0, 1, 2),
                     standalone=STANDALONE, num_stages=3) -> Calibration:
    rows = [{"threshold": t, "exit_rate": r, "exit_accuracy": a,
             "accuracy": sum(x * (y or 0) for x, y in zip(r, a))} for t, r, a in zip(thresholds, rates, exit_acc)]
    return Calibration({
        "format": "spinn-calibration", "version": 1, "model_id": model_id, "num_stages": num_stages,
        "stage_macs": [1] * num_stages, "thresholds": list(thresholds), "per_threshold": rows,
        "collision_fraction": 0.3,
        "exits": [{"index": e, "stage": s, "head_macs": 1, "macs_to_exit": 1, "standalone_accuracy": a}
                  for e, (s, a) in enumerate(zip(exit_stages, standalone))]}, "synthetic")
