"""Evaluation report on the test splits (``spinn evaluate``): printed tables and a plot.

Per exit (every frame answered there): collision accuracy, balanced accuracy, F1,
steering error and expected calibration error. Over thresholds (the SPINN exit policy,
see :mod:`spinn_ros.core.calibration`): accuracy versus expected compute and the
fraction of frames answered at each exit. "Before the midpoint" counts frames answered
by exits whose cost (``macs_to_exit``) is under half of the whole model's MACs.

The generalisation protocol (docs/model.md) puts three test splits side by side:
in distribution (``test``), scene families never trained on (``test-families``) and
textures/palettes never trained on (``test-appearance``), each with ROC AUC, the
confident-error rate at the drone's threshold, steering-sign agreement and per family.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch

from ..core.checkpoint import CheckpointError, load_checkpoint
from ..sim.dataset import TEST_SPLITS
from .common import (
    add_checkpoint_data_args,
    calibration_from_outputs,
    check_frames,
    collision_metrics,
    dataset_summary,
    exit_outputs,
    load_split,
    split_path,
)

STEER_DEG = 45.0          # steering 1.0 = the camera's horizontal half-FOV
TURN_MIN = 0.1            # frames "needing a turn": |steering target| >= this (4.5 deg)
TARGET_BALANCED_ACC = 0.95
TARGET_EARLY_SHARE = 0.5
TARGET_MAX_LOSS = 0.01
SHOWN_THRESHOLDS = (0.5, 0.7, 0.8, 0.9, 0.95, 0.97, 0.98, 0.99, 0.995, 0.998, 0.999, 0.9995, 0.9999, 1.0)


def roc_auc(score, label) -> float:
    """Area under the ROC curve (Mann-Whitney with ties averaged); NaN with one class."""
    score, label = np.asarray(score, float), np.asarray(label, bool)
    pos, neg = label.sum(), (~label).sum()
    if not pos or not neg:
        return float("nan")
    order = np.argsort(score, kind="mergesort")
    ranks = np.empty(len(score))
    sorted_scores = score[order]
    # average ranks over ties
    _, first, counts = np.unique(sorted_scores, return_index=True, return_counts=True)
    avg = first + (counts + 1) / 2.0
    ranks[order] = np.repeat(avg, counts)
    return float((ranks[label].sum() - pos * (pos + 1) / 2) / (pos * neg))


def reference_threshold() -> float:
    """The drone's configured exit threshold (config/drone.yaml): the one it acts on most."""
    import yaml

    from ..core.resources import config_file

    return float(yaml.safe_load(config_file("drone.yaml").read_text())["/**"]["ros__parameters"]["exit_threshold"])


def robustness(out: dict, dataset, threshold: float) -> dict:
    """Final-exit ROC AUC, confident errors under the exit policy at ``threshold``, steering sign."""
    from ..core.calibration import exit_indices

    label = dataset.collision.astype(bool)
    taken = exit_indices(out["confidence"], threshold)
    rows = np.arange(len(label))
    wrong = out["prediction"][taken, rows].astype(bool) != label
    confident = out["confidence"][taken, rows] >= threshold
    turn = np.abs(dataset.steering) >= TURN_MIN
    sign_ok = np.sign(out["steering"][-1][turn]) == np.sign(dataset.steering[turn])
    return {
        "roc_auc": roc_auc(out["collision_prob"][-1], label),
        "reference_threshold": threshold,
        "confident_error_rate": float((wrong & confident).mean()),
        "share_of_errors_confident": float((wrong & confident).sum() / max(wrong.sum(), 1)),
        "steering_sign_agreement": float(sign_ok.mean()) if turn.any() else float("nan"),
        "turn_frames": int(turn.sum()),
    }


def per_family(out: dict, dataset) -> dict:
    names = dataset.manifest.get("family_names", [])
    rows = {}
    for f in np.unique(dataset.family):
        m = dataset.family == f
        m_label = dataset.collision[m]
        rows[names[f] if f < len(names) else str(f)] = {
            "frames": int(m.sum()),
            "balanced_accuracy": collision_metrics(out["prediction"][-1][m], m_label)["balanced_accuracy"],
            "roc_auc": roc_auc(out["collision_prob"][-1][m], m_label),
        }
    return rows


def evaluate(model, model_id: str, dataset, progress: bool = True, threshold: float | None = None) -> dict:
    """All report figures as one JSON-able dict."""
    out = exit_outputs(model, dataset.images, progress=progress)
    table = calibration_from_outputs(model, model_id, out, dataset)
    total = model.total_macs()
    early = [e["index"] for e in table["exits"] if e["macs_to_exit"] < total / 2]
    final_acc = table["exits"][-1]["standalone_accuracy"]
    exits = []
    for e, info in enumerate(table["exits"]):
        m = collision_metrics(out["prediction"][e], dataset.collision)
        exits.append(info | m | {"steering_error_deg": info["standalone_steering_error"] * STEER_DEG,
                                 "macs_fraction": info["macs_to_exit"] / total})
    curve = []
    for row in table["per_threshold"]:
        curve.append({
            "threshold": row["threshold"],
            "accuracy": row["accuracy"],
            "accuracy_loss": final_acc - row["accuracy"],
            "balanced_accuracy": row["balanced_accuracy"],
            "steering_error_deg": row["steering_error"] * STEER_DEG,
            "macs_fraction": row["expected_macs"] / total,
            "early_share": sum(row["exit_rate"][e] for e in early),
            "exit_rate": row["exit_rate"],
        })
    return {
        "model_id": model_id,
        "model": model.spec.name,
        "total_macs": total,
        "test_data": dataset_summary(dataset),
        "early_exits": early,
        "exits": exits,
        "curve": curve,
        "targets": targets(exits, curve),
        "robustness": robustness(out, dataset, reference_threshold() if threshold is None else threshold),
        "families": per_family(out, dataset),
    }


def targets(exits: list[dict], curve: list[dict]) -> dict:
    """The issue's two targets, with the best operating point for the second."""
    ok = [c for c in curve if c["accuracy_loss"] <= TARGET_MAX_LOSS + 1e-9]
    best = max(ok, key=lambda c: (c["early_share"], -c["threshold"]), default=None)
    return {
        "final_balanced_accuracy": exits[-1]["balanced_accuracy"],
        "final_balanced_accuracy_met": exits[-1]["balanced_accuracy"] >= TARGET_BALANCED_ACC,
        "best_threshold": best and best["threshold"],
        "best_early_share": best and best["early_share"],
        "best_accuracy_loss": best and best["accuracy_loss"],
        "best_macs_fraction": best and best["macs_fraction"],
        "early_exit_met": bool(best and best["early_share"] >= TARGET_EARLY_SHARE),
    }


def format_report(r: dict) -> str:
    lines = [f"model {r['model']} ({r['model_id']}), {r['total_macs'] / 1e6:.1f} MMACs; {r['test_data']['split']} split: "
             f"{r['test_data']['count']} frames, {r['test_data']['collision_fraction']:.1%} collision", "",
             "per exit (all frames answered there)",
             f"{'exit':>4} {'stage':>5} {'MMACs':>6} {'%MACs':>6} {'acc':>6} {'balacc':>6} {'F1':>6} {'steer°':>6} {'ECE':>6}"]
    for e in r["exits"]:
        lines.append(f"{e['index']:>4} {e['stage']:>5} {e['macs_to_exit'] / 1e6:>6.1f} {e['macs_fraction']:>6.0%} "
                     f"{e['accuracy']:>6.3f} {e['balanced_accuracy']:>6.3f} {e['f1']:>6.3f} {e['steering_error_deg']:>6.1f} "
                     f"{e['ece']:>6.3f}")
    n = len(r["exits"])
    lines += ["", f"early-exit policy over thresholds (early = exits {r['early_exits']}, before half the MACs)",
              f"{'thresh':>7} {'acc':>6} {'loss':>6} {'balacc':>6} {'%MACs':>6} {'early':>6}  "
              f"fraction answered at exit 0..{n - 1}"]
    for c in r["curve"]:
        if c["threshold"] in SHOWN_THRESHOLDS:
            rates = " ".join(f"{x:4.2f}" for x in c["exit_rate"])
            lines.append(f"{c['threshold']:>7g} {c['accuracy']:>6.3f} {100 * c['accuracy_loss']:>5.2f}p "
                         f"{c['balanced_accuracy']:>6.3f} {c['macs_fraction']:>6.0%} {c['early_share']:>6.0%}  {rates}")
    t = r["targets"]
    lines += ["", f"target final-exit balanced accuracy >= {TARGET_BALANCED_ACC}: {t['final_balanced_accuracy']:.4f} "
                  f"{'MET' if t['final_balanced_accuracy_met'] else 'NOT MET'}"]
    if t["best_threshold"] is None:
        lines.append("target early exits: no threshold within 1 point of the final exit")
    else:
        lines.append(f"target >= {TARGET_EARLY_SHARE:.0%} of frames before the midpoint with <= 1 point loss: best threshold "
                     f"{t['best_threshold']:g} answers {t['best_early_share']:.1%} early, loses "
                     f"{100 * t['best_accuracy_loss']:.2f} points, {t['best_macs_fraction']:.0%} of the MACs "
                     f"{'MET' if t['early_exit_met'] else 'NOT MET'}")
    return "\n".join(lines)


#: the issue's generalisation targets, per split: (metric, bound, "min" | "max")
SPLIT_TARGETS = {
    "test": (("final balanced acc", 0.95, "min"),),
    "test-families": (("final balanced acc", 0.92, "min"), ("ROC AUC", 0.97, "min"), ("steering sign", 0.85, "min"),
                      ("confident errors", 0.02, "max"), ("early share (<=1 pt)", 0.5, "min")),
    "test-appearance": (("final balanced acc", 0.92, "min"), ("ROC AUC", 0.97, "min"),
                        ("confident errors", 0.02, "max"), ("early share (<=1 pt)", 0.5, "min")),
}


def summary_rows(r: dict) -> dict[str, float]:
    rob, t = r["robustness"], r["targets"]
    return {
        "frames": r["test_data"]["count"],
        "final balanced acc": t["final_balanced_accuracy"],
        "ROC AUC": rob["roc_auc"],
        "final-exit ECE": r["exits"][-1]["ece"],
        "max exit ECE": max(e["ece"] for e in r["exits"]),
        "confident errors": rob["confident_error_rate"],
        "steering sign": rob["steering_sign_agreement"],
        "early share (<=1 pt)": t["best_early_share"] or 0.0,
    }


def format_comparison(reports: dict[str, dict]) -> str:
    """The splits side by side, the targets they are held to, and every family."""
    names = list(reports)
    rows = {name: summary_rows(r) for name, r in reports.items()}
    threshold = next(iter(reports.values()))["robustness"]["reference_threshold"]
    lines = [f"generalisation (confident errors: wrong answers with confidence >= {threshold:g}, the drone's threshold)",
             f"{'':24}" + "".join(f"{n:>17}" for n in names)]
    for metric in rows[names[0]]:
        cells = []
        for n in names:
            v = rows[n][metric]
            cells.append(f"{v:>17d}" if metric == "frames" else f"{v:>17.4f}")
        lines.append(f"{metric:24}" + "".join(cells))
    lines += ["", "targets"]
    for n in names:
        for metric, bound, kind in SPLIT_TARGETS.get(n, ()):
            v = rows[n][metric]
            ok = v >= bound if kind == "min" else v <= bound
            lines.append(f"  {n:16} {metric:22} {v:.4f} {'>=' if kind == 'min' else '<='} {bound:g}: "
                         f"{'MET' if ok else 'NOT MET'}")
    lines += ["", f"per family (final exit)  {'split':>16} {'frames':>7} {'balacc':>7} {'AUC':>7}"]
    for n, r in reports.items():
        for fam, row in r["families"].items():
            lines.append(f"  {fam:22} {n:>16} {row['frames']:>7} {row['balanced_accuracy']:>7.3f} {row['roc_auc']:>7.3f}")
    return "\n".join(lines)


def plot_report(r: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    curve, exits = r["curve"], r["exits"]
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(12.5, 4.2), gridspec_kw={"width_ratios": [1, 1.25]})
    ax1.plot([100 * c["macs_fraction"] for c in curve], [c["accuracy"] for c in curve], "o-", ms=3,
             label="early-exit policy (thresholds)")
    ax1.plot([100 * e["macs_fraction"] for e in exits], [e["accuracy"] for e in exits], "s--", color="gray",
             label="single exit, all frames")
    t = r["targets"]
    if t["best_threshold"] is not None:
        best = next(c for c in curve if c["threshold"] == t["best_threshold"])
        ax1.annotate(f"t={t['best_threshold']:g}: {t['best_early_share']:.0%} early",
                     (100 * best["macs_fraction"], best["accuracy"]), xytext=(10, -25), textcoords="offset points",
                     arrowprops={"arrowstyle": "->"})
    ax1.set(xlabel="expected compute (% of full-model MACs)", ylabel="collision accuracy (test)",
            title=f"accuracy vs compute ({r['model']})")
    ax1.grid(alpha=0.3)
    ax1.legend(loc="lower right")
    x = np.arange(len(curve))
    rates = np.array([c["exit_rate"] for c in curve]).T
    bottom = np.zeros(len(curve))
    for e, row in enumerate(rates):
        ax2.bar(x, row, bottom=bottom, width=0.9, label=f"exit {e} ({100 * exits[e]['macs_fraction']:.0f}%)")
        bottom += row
    ax2.set_xticks(x[::3], [f"{c['threshold']:g}" for c in curve][::3], rotation=60, fontsize=7)
    ax2.set(xlabel="confidence threshold", ylabel="fraction of frames", title="where frames are answered")
    ax2.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=90)
    plt.close(fig)


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(
        prog="spinn evaluate",
        description="Evaluate a checkpoint on the test split: per-exit metrics, accuracy vs compute over thresholds, "
                    "fraction answered at each exit. Prints a table, writes a plot (and optionally JSON).",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    add_checkpoint_data_args(ap, None, "one split to evaluate (default: every test split present: "
                             + ", ".join(TEST_SPLITS) + ")")
    ap.add_argument("--plot", type=Path, default=Path("runs/eval/report.png"), help="plot output (in-distribution split)")
    ap.add_argument("--json", type=Path, default=None, help="also write every figure as JSON here")
    return ap


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    torch.set_num_threads(args.threads)
    splits = [args.split] if args.split else [s for s in TEST_SPLITS if split_path(args.data, s).is_file()] or ["test"]
    try:
        model, meta = load_checkpoint(args.checkpoint)
        datasets = {s: load_split(args.data, s) for s in splits}
        for s, d in datasets.items():
            check_frames(model, d.images, f"{s} split")
    except (CheckpointError, FileNotFoundError, ValueError) as e:
        print(f"spinn evaluate: {e}", file=sys.stderr)
        return 2
    reports = {s: evaluate(model, meta["model_id"], d, progress=not args.quiet) for s, d in datasets.items()}
    for report in reports.values():
        print(format_report(report) + "\n")
    print(format_comparison(reports))
    plot_report(next(iter(reports.values())), args.plot)
    print(f"\nplot: {args.plot}")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(reports, indent=1) + "\n")
        print(f"json: {args.json}")
    return 0
