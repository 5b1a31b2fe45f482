"""Leave-one-family-out: how well the model does on a scene family it never trained on.

For each family F, trains one model without F's frames (``spinn train --exclude-family F``)
and one reference with every training family, at the same reduced budget, then scores
both on F's frames of the in-distribution test split (final exit: balanced accuracy,
ROC AUC). The gap is what not having seen F costs.

    .venv/bin/python bench/bench_lofo.py --data data [--families poles,overhang,slabs]
        [--limit 12000] [--epochs1 2] [--epochs2 1]

The budget is far below the shipped model's (docs/model.md): the figures compare the
runs with each other, not with the shipped model.
"""
from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from spinn_ros.testing.bench_io import print_table, write_json

ROOT = Path(__file__).resolve().parents[1]


def train(data: Path, out: Path, opts, exclude: str | None) -> Path:
    argv = [sys.executable, "-m", "spinn_ros.tools.cli", "train", "--data", str(data), "--out", str(out), "--seed", "0",
            "--epochs1", str(opts.epochs1), "--epochs2", str(opts.epochs2), "--limit", str(opts.limit),
            "--threads", "1", "--no-calibrate", "--quiet"]
    if exclude:
        argv += ["--exclude-family", exclude]
    t0 = time.monotonic()
    subprocess.run(argv, cwd=ROOT, check=True, stdout=subprocess.DEVNULL)
    print(f"trained {out.name} in {time.monotonic() - t0:.0f} s", flush=True)
    return out / "model.pt"


def score(checkpoint: Path, test, family: str) -> dict:
    from spinn_ros.core.checkpoint import load_checkpoint
    from spinn_ros.training.common import collision_metrics, exit_outputs
    from spinn_ros.training.evaluate import roc_auc

    mask = test.family == test.manifest["family_names"].index(family)
    model, _ = load_checkpoint(checkpoint)
    out = exit_outputs(model, test.images[mask])
    labels = test.collision[mask]
    return {"frames": int(mask.sum()),
            "balanced_accuracy": round(collision_metrics(out["prediction"][-1], labels)["balanced_accuracy"], 4),
            "roc_auc": round(roc_auc(out["collision_prob"][-1], labels), 4)}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, default=Path("data"), help="dataset folder from spinn gen-data")
    ap.add_argument("--families", default="poles,overhang,slabs")
    ap.add_argument("--limit", type=int, default=12000, help="training frames per run")
    ap.add_argument("--epochs1", type=int, default=2)
    ap.add_argument("--epochs2", type=int, default=1)
    ap.add_argument("--out", type=Path, default=Path("runs/lofo"))
    opts = ap.parse_args(argv)
    import torch

    from spinn_ros.training.common import load_split

    torch.set_num_threads(1)
    test = load_split(opts.data, "test")
    families = opts.families.split(",")
    unknown = set(families) - set(test.manifest["family_names"])
    if unknown:
        ap.error(f"--families: unknown {sorted(unknown)}")
    reference = train(opts.data, opts.out / "all", opts, None)
    rows = []
    for family in families:
        left_out = train(opts.data, opts.out / f"without-{family}", opts, family)
        seen, unseen = score(reference, test, family), score(left_out, test, family)
        rows.append({"family": family, "frames": seen["frames"],
                     "balacc_trained_on_it": seen["balanced_accuracy"], "balacc_left_out": unseen["balanced_accuracy"],
                     "auc_trained_on_it": seen["roc_auc"], "auc_left_out": unseen["roc_auc"],
                     "balacc_gap": round(seen["balanced_accuracy"] - unseen["balanced_accuracy"], 4)})
        print(rows[-1], flush=True)
    print_table(rows, title=f"leave-one-family-out ({opts.limit} frames, {opts.epochs1}+{opts.epochs2} epochs per run)")
    write_json("lofo", {"budget": {"limit": opts.limit, "epochs": [opts.epochs1, opts.epochs2]}, "rows": rows,
                        "mean_gap": float(np.mean([r["balacc_gap"] for r in rows]))})
    return 0


if __name__ == "__main__":
    sys.exit(main())
