"""Exit calibration: how often each exit fires at each threshold, and how well.

The file (JSON, ``<checkpoint stem>.calib.json`` beside the checkpoint) is what the
SPINN scheduler reads; reading it needs neither torch nor numpy.

Policy (the one the runtime implements): exits are tried in order; a frame leaves
at the first exit whose confidence (top-1 collision softmax) >= the threshold; the
final exit always answers. When the tail after a split runs in the cloud it applies
the same threshold to its own exits. So the *answer* for a frame does not depend on
the split, only *where* it is computed: split ``s`` answers a frame on the device iff
its exit lies at a stage < ``s`` (split ``num_stages`` = all on device).
"""
from __future__ import annotations

import bisect
import json
import math
from pathlib import Path
from typing import Sequence

from .file_header import check_header

FORMAT = "spinn-calibration"
VERSION = 1
POLICY = ("exits tried in order; a frame leaves at the first exit whose top-1 collision softmax >= threshold; "
          "the final exit always answers; a cloud tail applies the same threshold to its exits")

#: the threshold of the plain network: no early exit, the intermediate exit heads not even
#: run (a finite threshold above 1 runs them, but none can answer); defined here, torch-free,
#: for the planner, the launch specs and the parameter checks as much as for the model
PLAIN_NETWORK = math.inf

#: dense near 1: a well-trained 2-way softmax is often very confident
DEFAULT_THRESHOLDS: tuple[float, ...] = tuple(
    [round(0.5 + 0.05 * i, 4) for i in range(8)]              # 0.50 .. 0.85
    + [round(0.9 + 0.01 * i, 4) for i in range(9)]            # 0.90 .. 0.98
    + [round(0.99 + 0.001 * i, 4) for i in range(10)]         # 0.990 .. 0.999
    + [0.9995, 0.9999, 1.0]
)


class CalibrationError(ValueError):
    """A calibration file that cannot be used; the message names the file and the problem."""


class CalibrationNotFound(CalibrationError, FileNotFoundError):
    pass


# ---------------------------------------------------------------------------------
# Building (numpy; used by `spinn calibrate`)
# ---------------------------------------------------------------------------------


def exit_indices(confidences, threshold: float):
    """Exit taken by each frame under the policy. ``confidences``: (num_exits, N) -> (N,) ints."""
    import numpy as np

    conf = np.asarray(confidences)
    fires = conf >= threshold
    fires[-1] = True                     # the final exit always answers
    return fires.argmax(axis=0)          # first True


def balanced_accuracy(pred, label) -> float:
    """Mean of per-class recall (NaN-free: a class with no frames is skipped)."""
    import numpy as np

    pred, label = np.asarray(pred, bool), np.asarray(label, bool)
    recalls = [float((pred[label == c] == c).mean()) for c in (False, True) if (label == c).any()]
    return sum(recalls) / len(recalls) if recalls else float("nan")


def expected_calibration_error(confidence, correct, bins: int = 10) -> float:
    """ECE of top-1 confidences in [0.5, 1]: the frame-weighted mean |accuracy - confidence| per bin."""
    import numpy as np

    conf, ok = np.asarray(confidence, float), np.asarray(correct, bool)
    edges = np.linspace(0.5, 1.0, bins + 1)
    which = np.clip(np.digitize(conf, edges[1:-1]), 0, bins - 1)
    gap = 0.0
    for b in range(bins):
        m = which == b
        if m.any():
            gap += m.sum() * abs(ok[m].mean() - conf[m].mean())
    return float(gap / max(len(conf), 1))


def fit_temperature(collision_prob, labels) -> float:
    """Temperature T minimising the collision NLL of ``sigmoid(logit(p) / T)`` (a 2-way softmax
    scaled by 1/T), searched on a log grid: the exit's confidence then means its accuracy."""
    import numpy as np

    p = np.clip(np.asarray(collision_prob, float), 1e-7, 1 - 1e-7)
    z, y = np.log(p / (1 - p)), np.asarray(labels, bool)
    grid = np.exp(np.linspace(np.log(0.2), np.log(10.0), 241))
    q = 1 / (1 + np.exp(-z[None] / grid[:, None]))
    nll = -np.where(y[None], np.log(np.clip(q, 1e-12, 1)), np.log(np.clip(1 - q, 1e-12, 1))).mean(axis=1)
    return float(grid[int(np.argmin(nll))])


def _r(x: float) -> float | None:
    return None if x is None or (isinstance(x, float) and math.isnan(x)) else round(float(x), 6)


def build_calibration(
    *,
    confidences,
    predictions,
    labels,
    steering_errors,
    exit_stages: Sequence[int],
    stage_macs: Sequence[int],
    exit_head_macs: Sequence[int],
    model_id: str,
    model_name: str,
    thresholds: Sequence[float] = DEFAULT_THRESHOLDS,
    extra: dict | None = None,
) -> dict:
    """The calibration dict from every exit's outputs on a held-out split.

    ``confidences``, ``predictions`` (0/1), ``steering_errors`` (absolute): (num_exits, N);
    ``labels``: (N,) collision ground truth. Includes the scheduler's provisional-answer
    table (:func:`provisional_accuracy_table`); ``extra`` keys are added last.
    """
    import numpy as np

    conf, pred = np.asarray(confidences, float), np.asarray(predictions, bool)
    label, serr = np.asarray(labels, bool), np.asarray(steering_errors, float)
    num_exits, n = conf.shape
    if pred.shape != conf.shape or serr.shape != conf.shape or label.shape != (n,) or len(exit_stages) != num_exits:
        raise ValueError("confidences, predictions, steering_errors must be (num_exits, N) and labels (N,)")
    correct = pred == label[None]
    head_macs = list(map(int, exit_head_macs))
    macs_to_exit = [int(sum(stage_macs[: s + 1]) + sum(head_macs[: e + 1])) for e, s in enumerate(exit_stages)]
    num_stages = len(stage_macs)

    per_threshold = []
    for t in thresholds:
        taken = exit_indices(conf, t)
        rows = np.arange(n)
        final_pred, final_err = pred[taken, rows], serr[taken, rows]
        rates, accs, errs = [], [], []
        for e in range(num_exits):
            m = taken == e
            rates.append(_r(m.mean()))
            accs.append(_r(correct[e, m].mean()) if m.any() else None)
            errs.append(_r(serr[e, m].mean()) if m.any() else None)
        per_threshold.append({
            "threshold": t,
            "exit_rate": rates,
            "exit_accuracy": accs,
            "exit_steering_error": errs,
            "accuracy": _r((final_pred == label).mean()),
            "balanced_accuracy": _r(balanced_accuracy(final_pred, label)),
            "steering_error": _r(final_err.mean()),
            "expected_macs": _r(float(np.mean(np.asarray(macs_to_exit)[taken]))),
            "mean_exit_index": _r(taken.mean()),
        })

    calib = {
        "format": FORMAT,
        "version": VERSION,
        "model_id": model_id,
        "model_name": model_name,
        "policy": POLICY,
        "num_frames": int(n),
        "collision_fraction": _r(label.mean()),
        "num_stages": num_stages,
        "stage_macs": list(map(int, stage_macs)),
        "exits": [
            {
                "index": e,
                "stage": int(s),
                "head_macs": head_macs[e],
                "macs_to_exit": macs_to_exit[e],
                "standalone_accuracy": _r(correct[e].mean()),
                "standalone_balanced_accuracy": _r(balanced_accuracy(pred[e], label)),
                "standalone_steering_error": _r(serr[e].mean()),
                "ece": _r(expected_calibration_error(conf[e], correct[e])),
            }
            for e, s in enumerate(exit_stages)
        ],
        "thresholds": list(thresholds),
        "per_threshold": per_threshold,
        PROVISIONAL_KEY: provisional_accuracy_table(confidences=conf, predictions=pred, labels=label,
                                                    exit_stages=exit_stages, num_stages=num_stages,
                                                    thresholds=thresholds),
        **(extra or {}),
    }
    calib["splits"] = _split_tables(Calibration(calib, "<new>"))
    return calib


def _split_tables(cal: "Calibration") -> list[dict]:
    """Per split point: device-exit probability and device accuracy for every threshold."""
    return [
        {
            "split": s,
            "device_exit_probability": [_r(cal.device_exit_probability(s, t)) for t in cal.thresholds],
            "device_accuracy": [_r(cal.accuracy(s, t)) for t in cal.thresholds],
        }
        for s in range(cal.num_stages + 1)
    ]


def save_calibration(path, calib: dict) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(calib, indent=1) + "\n")
    tmp.replace(path)


# ---------------------------------------------------------------------------------
# Reading (pure Python; used by the scheduler)
# ---------------------------------------------------------------------------------


class Calibration:
    """Queries over a loaded calibration. Thresholds snap to the nearest grid point."""

    def __init__(self, data: dict, source: str):
        self.data = data
        self.source = source
        self.thresholds: list[float] = list(data["thresholds"])
        self.exits: list[dict] = data["exits"]
        self.num_stages: int = data["num_stages"]
        self.stage_macs: list[int] = data["stage_macs"]
        self.model_id: str = data["model_id"]

    @property
    def num_exits(self) -> int:
        return len(self.exits)

    @property
    def exit_stages(self) -> list[int]:
        return [e["stage"] for e in self.exits]

    def threshold_index(self, threshold: float) -> int:
        if not self.thresholds[0] - 1e-9 <= threshold <= self.thresholds[-1] + 1e-9:
            raise ValueError(f"threshold {threshold} outside the calibrated range "
                             f"[{self.thresholds[0]}, {self.thresholds[-1]}] of {self.source}")
        i = bisect.bisect_left(self.thresholds, threshold)
        if i == len(self.thresholds) or (i > 0 and threshold - self.thresholds[i - 1] < self.thresholds[i] - threshold):
            i -= 1
        return i

    def row(self, threshold: float) -> dict:
        return self.data["per_threshold"][self.threshold_index(threshold)]

    def exit_distribution(self, threshold: float) -> list[float]:
        """Fraction of frames answered at each exit (sums to 1)."""
        return list(self.row(threshold)["exit_rate"])

    def _check_split(self, split: int) -> None:
        if not isinstance(split, int) or not 0 <= split <= self.num_stages:
            raise ValueError(f"split must be an integer in [0, {self.num_stages}], got {split!r}")

    def device_exits(self, split: int) -> list[int]:
        """Exits that run on the device when the model is split at ``split``."""
        self._check_split(split)
        return [e for e, s in enumerate(self.exit_stages) if s < split]

    def device_exit_probability(self, split: int, threshold: float) -> float:
        """P(frame answered on the device, no tail needed) at this split and threshold."""
        rates = self.exit_distribution(threshold)
        return min(1.0, sum(rates[e] for e in self.device_exits(split)))

    def accuracy(self, split: int | None, threshold: float) -> float | None:
        """Collision accuracy: overall (``split`` None), or of the frames answered on
        the device at ``split`` (None when no frame is)."""
        row = self.row(threshold)
        if split is None:
            return row["accuracy"]
        exits = [e for e in self.device_exits(split) if row["exit_rate"][e]]
        mass = sum(row["exit_rate"][e] for e in exits)
        return sum(row["exit_rate"][e] * row["exit_accuracy"][e] for e in exits) / mass if mass else None

    def expected_macs(self, threshold: float) -> float:
        """Mean MACs per frame (all exits evaluated on the way count)."""
        return self.row(threshold)["expected_macs"]

    def expected_macs_split(self, split: int, threshold: float) -> tuple[float, float]:
        """(device, cloud) mean MACs per frame when split at ``split``."""
        rates = self.exit_distribution(threshold)
        on_device = self.device_exits(split)
        head_cost = sum(self.exits[e]["head_macs"] for e in on_device)
        device_full = sum(self.stage_macs[:split]) + head_cost    # a frame that needs the tail
        device = cloud = 0.0
        for e, rate in enumerate(rates):
            if e in on_device:
                device += rate * self.exits[e]["macs_to_exit"]
            else:
                device += rate * device_full
                cloud += rate * (self.exits[e]["macs_to_exit"] - device_full)
        return device, cloud


def _validate(data, source: str, expected_model_id: str | None) -> None:
    def fail(msg):
        raise CalibrationError(f"calibration {source}: {msg}")

    check_header(data, fail, fmt=FORMAT, version=VERSION, kind="calibration file", expected_model_id=expected_model_id,
                 required=("model_id", "thresholds", "per_threshold", "exits", "num_stages", "stage_macs"),
                 remedy="recalibrate with 'spinn calibrate'")
    thresholds, rows, num_exits = data["thresholds"], data["per_threshold"], len(data["exits"])
    if not thresholds or list(thresholds) != sorted(thresholds) or len(rows) != len(thresholds):
        fail("thresholds must be ascending with one per_threshold row each")
    if num_exits < 1 or len(data["stage_macs"]) != data["num_stages"]:
        fail("needs at least one exit and one stage_macs entry per stage")
    for t, row in zip(thresholds, rows):
        rates = row.get("exit_rate")
        if row.get("threshold") != t or not isinstance(rates, list) or len(rates) != num_exits:
            fail(f"per_threshold row for {t} is malformed")
        if any(r is None or not 0 <= r <= 1 for r in rates) or abs(sum(rates) - 1) > 1e-3:
            fail(f"exit rates at threshold {t} must be in [0, 1] and sum to 1")


def load_calibration(path, expected_model_id: str | None) -> Calibration:
    """Read and validate a calibration file; ``expected_model_id`` must match (None skips the check)."""
    path = Path(path)
    if not path.is_file():
        raise CalibrationNotFound(f"calibration {path}: no such file (run 'spinn calibrate')")
    try:
        data = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise CalibrationError(f"calibration {path}: unreadable or not JSON ({e})") from e
    _validate(data, str(path), expected_model_id)
    return Calibration(data, str(path))


# ---------------------------------------------------------------------------------
# Provisional-answer accuracy (added for the scheduler, issue 5)
#
# When an offload is lost or misses the drone's deadline, the frame's answer is the
# *provisional* one: the deepest device exit's, on exactly the frames no device exit
# was confident about (the hard ones). Its accuracy is not derivable from the
# per-exit tables above, so the builder stores it per split and threshold, and the
# reader estimates it conservatively for files written before this table existed.
# ---------------------------------------------------------------------------------

PROVISIONAL_KEY = "provisional_accuracy"


def deepest_device_exit(exit_stages: Sequence[int], split: int) -> int | None:
    """The last exit whose stage runs on the device at ``split`` (None: the head has none)."""
    on_device = [e for e, s in enumerate(exit_stages) if s < split]
    return on_device[-1] if on_device else None


def provisional_accuracy_table(*, confidences, predictions, labels, exit_stages: Sequence[int], num_stages: int,
                               thresholds: Sequence[float] = DEFAULT_THRESHOLDS) -> list[dict]:
    """Per split: accuracy of the provisional answer on the frames the device would offload
    (None where the head has no exit, the tail is empty, or no frame is offloaded).
    Pass the result to :func:`build_calibration` as ``extra={PROVISIONAL_KEY: ...}``."""
    import numpy as np

    conf, pred, label = np.asarray(confidences, float), np.asarray(predictions, bool), np.asarray(labels, bool)
    taken = [exit_indices(conf, t) for t in thresholds]
    table = []
    for split in range(num_stages + 1):
        d = deepest_device_exit(exit_stages, split)
        accs = []
        for tk in taken:
            offloaded = tk > d if d is not None else None
            ok = d is not None and d < len(exit_stages) - 1 and offloaded.any()
            accs.append(_r((pred[d, offloaded] == label[offloaded]).mean()) if ok else None)
        table.append({"split": split, "accuracy": accs})
    return table


def provisional_accuracy(cal: Calibration, split: int, threshold: float) -> float | None:
    """Accuracy of the provisional (deepest device exit) answer on offloaded frames.

    Read from the calibration's table when present; otherwise estimated from the
    deepest device exit ``d``'s standalone accuracy ``A_d`` over all frames, assuming
    ``d`` is at least as right as the answering exit on the easy frames that left at or
    before it (mass ``P``): ``(A_d - P * a_easy) / (1 - P)``, clipped to ``[0, A_d]``.
    None when the head has no exit (the device then computes the tail itself).
    """
    d = deepest_device_exit(cal.exit_stages, split)
    if d is None or d == cal.num_exits - 1:
        return None
    table = cal.data.get(PROVISIONAL_KEY)
    if table is not None:
        value = table[split]["accuracy"][cal.threshold_index(threshold)]
        if value is not None:
            return value
    standalone = cal.exits[d].get("standalone_accuracy")
    if standalone is None:     # no information: the majority-class rate is a floor any classifier reaches
        frac = cal.data.get("collision_fraction")
        return max(frac, 1 - frac) if frac is not None else 0.5
    rates = cal.exit_distribution(threshold)
    easy_mass = sum(rates[: d + 1])
    if easy_mass >= 1 - 1e-9:
        return standalone
    easy_acc = max(cal.accuracy(split, threshold) or 0.0, standalone)
    return min(standalone, max(0.0, (standalone - easy_mass * easy_acc) / (1 - easy_mass)))
