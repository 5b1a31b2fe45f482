"""Calibrate a checkpoint's exits on the held-out calibration split (``spinn calibrate``).

First each exit's collision confidence is temperature-scaled (one temperature per exit,
fitted by NLL on the calib split and stored in the checkpoint, which is rewritten: its
model id changes), so an exit's confidence means the accuracy the scheduler assumes.
Then ``<checkpoint stem>.calib.json`` is written beside the checkpoint with the
calibrated outputs (see :mod:`spinn_ros.core.calibration` for the schema and the exit
policy); it carries the temperatures and each exit's expected calibration error.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

from ..core.calibration import expected_calibration_error, fit_temperature, save_calibration
from ..core.checkpoint import CheckpointError, calibration_path, load_checkpoint, save_checkpoint
from .common import add_checkpoint_data_args, calibration_from_outputs, check_frames, dataset_summary, exit_outputs, load_split


def calibrate_checkpoint(checkpoint: Path, data: Path, out: Path | None = None, split: str = "calib",
                         progress: bool = True) -> dict:
    """Calibrate ``checkpoint`` on ``data``'s ``split``; writes and returns the calibration dict."""
    model, meta = load_checkpoint(checkpoint)
    dataset = load_split(data, split)
    check_frames(model, dataset.images, f"{split} split")
    outputs = exit_outputs(model, dataset.images, progress=progress)
    before = exit_eces(outputs, dataset.collision)
    temperatures = fit_exit_temperatures(model, outputs, dataset.collision)
    extra_meta = {k: v for k, v in meta.items() if k not in ("model_id", "spec", "path")}
    model_id = save_checkpoint(checkpoint, model, extra_meta | {"exit_temperatures": temperatures})
    outputs = exit_outputs(model, dataset.images, progress=progress)
    calib = calibration_from_outputs(model, model_id, outputs, dataset, extra={
        "calibration_data": dataset_summary(dataset),
        "temperature_scaling": {"temperatures": temperatures, "ece_before": before,
                                "ece_after": exit_eces(outputs, dataset.collision)},
    })
    out = Path(out) if out is not None else calibration_path(checkpoint)
    save_calibration(out, calib)
    final = calib["exits"][-1]
    print(f"exit temperatures {[round(t, 3) for t in temperatures]}; ECE per exit "
          f"{[round(e, 4) for e in before]} -> {[round(e['ece'], 4) for e in calib['exits']]}; "
          f"rewrote {checkpoint} (model id {model_id})")
    print(f"wrote {out}: {calib['num_frames']} {split} frames, final-exit accuracy {final['standalone_accuracy']:.4f}")
    return calib


def exit_eces(outputs: dict, labels) -> list[float]:
    correct = outputs["prediction"] == labels[None]
    return [expected_calibration_error(c, ok) for c, ok in zip(outputs["confidence"], correct)]


def fit_exit_temperatures(model, outputs: dict, labels) -> list[float]:
    """Fit and set every exit's temperature (on top of any it already has); returns them."""
    temperatures = []
    for head, prob in zip(model.exits, outputs["collision_prob"]):
        head.temperature.mul_(fit_temperature(prob, labels))
        temperatures.append(round(float(head.temperature), 6))
    return temperatures


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(
        prog="spinn calibrate",
        description="Measure, for every exit and a grid of confidence thresholds, how many frames leave there and how "
                    "accurate they are; write the versioned calibration file the scheduler reads.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    add_checkpoint_data_args(ap, "calib", "split to calibrate on (never the test split)")
    ap.add_argument("--out", type=Path, default=None, help="output file (default: beside the checkpoint)")
    return ap


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    torch.set_num_threads(args.threads)
    try:
        calibrate_checkpoint(args.checkpoint, args.data, args.out, args.split, progress=not args.quiet)
    except (CheckpointError, FileNotFoundError, ValueError) as e:
        print(f"spinn calibrate: {e}", file=sys.stderr)
        return 2
    return 0
